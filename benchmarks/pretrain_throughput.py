"""General-distillation training throughput (tokens/s), fp32 against bf16 autocast, in one run.

One step is what `distil pretrain` does per batch: DistilBERT masking, the student's forward with hidden
states, the frozen teacher's forward under no_grad, the triple loss (5·L_ce + 2·L_mlm + 1·L_cos),
backward and an AdamW step. Teacher: the packaged all-MiniLM-L6-v2 with a masked-LM head (its head is
randomly initialised: only speed is measured); student: its layers 0,2,4. Inputs: random non-special
token ids, exactly `--seq` tokens, no padding. fp32 and bf16 steps alternate after warm-up, so machine
drift hits both alike; tokens/s = batch·seq / median step time.

bf16 autocast pays only where the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere torch
emulates it (about 1 GFLOP/s here, a step would take minutes), so bf16 is then not timed unless
`--force-bf16`, and the matmul peaks that show why are reported instead.

    .venv/bin/python benchmarks/pretrain_throughput.py --out runs/pretrain-throughput
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def make_step(student, teacher, optimizer, masker, loss_config, bf16: bool):
    from distilkit import losses

    def step(batch: dict, seed: int) -> float:
        inputs = masker(batch, torch.Generator().manual_seed(seed))
        labels = inputs.pop("labels")
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = student(**inputs, output_hidden_states=True)
            with torch.no_grad():
                t_out = teacher(**inputs, output_hidden_states=True)
            c = loss_config
            terms = losses.triple_loss_terms(out.logits, t_out.logits, labels, out.hidden_states[-1],
                                             t_out.hidden_states[-1], inputs["attention_mask"], c.temperature)
            loss = c.alpha_ce * terms["ce"] + c.alpha_mlm * terms["mlm"] + c.alpha_cos * terms["cos"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="timed steps per precision")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--force-bf16", action="store_true", help="time bf16 even without native bf16 (slow)")
    p.add_argument("--out", type=Path, default=Path("runs/pretrain-throughput"))
    args = p.parse_args()

    from transformers import AutoModelForMaskedLM

    from distilkit.artifacts import save_figure, write_json
    from distilkit.deploy.bench import matmul_peaks, synthetic_inputs
    from distilkit.hardware import hardware
    from distilkit.models.folders import load_tokenizer, resolve_model
    from distilkit.models.student import build_student
    from distilkit.hardware import bf16_supported
    from distilkit.train.general import Masker, TripleLossConfig

    torch.manual_seed(0)
    teacher_dir = resolve_model(None)
    tokenizer = load_tokenizer(teacher_dir)
    teacher = AutoModelForMaskedLM.from_pretrained(teacher_dir, use_safetensors=True).eval().requires_grad_(False)
    weights = torch.ones(len(tokenizer))  # uniform masking: speed does not depend on which tokens are masked
    masker = Masker(tokenizer, weights)
    ids = synthetic_inputs(tokenizer, teacher.config, args.batch, args.seq)
    batch = {"input_ids": torch.from_numpy(ids["input_ids"]), "attention_mask": torch.from_numpy(ids["attention_mask"])}

    native = bf16_supported()
    precisions = ["fp32"] + (["bf16"] if native or args.force_bf16 else [])
    steps = {}
    for precision in precisions:  # one student and optimizer each, same init
        student = build_student(teacher, [0, 2, 4]).train()
        optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4)
        steps[precision] = make_step(student, teacher, optimizer, masker, TripleLossConfig(), precision == "bf16")
    for i in range(args.warmup):
        for precision in precisions:
            steps[precision](batch, i)
    times = {precision: [] for precision in precisions}
    for i in range(args.steps):
        for precision in precisions[i % len(precisions):] + precisions[: i % len(precisions)]:
            times[precision].append(steps[precision](batch, 1000 + i))
            print(f"{precision} step {i + 1}/{args.steps}: {times[precision][-1]:.2f} s", flush=True)

    tokens = args.batch * args.seq
    results = {pr: {"median_step_s": float(np.median(t)), "tokens_per_s": tokens / float(np.median(t)),
                    "sequences_per_s": args.batch / float(np.median(t)), "step_seconds": t} for pr, t in times.items()}
    report = {"hardware": hardware(), "native_bf16": native, "batch": args.batch, "seq": args.seq,
              "timed": "one general-distillation step: masking excluded; student fwd, teacher fwd (no_grad), "
                       "triple loss, backward, AdamW step",
              "matmul_peak": matmul_peaks(1024, 3), "results": results}
    if "bf16" in results:
        report["bf16_over_fp32"] = results["bf16"]["tokens_per_s"] / results["fp32"]["tokens_per_s"]
    else:
        report["bf16_not_timed"] = ("no native bf16 on this CPU (no avx512_bf16 / amx_bf16): torch emulates bf16 "
                                    "matmuls; see matmul_peak (bf16_torch vs fp32_torch); --force-bf16 times it")
    write_json(args.out / "pretrain_throughput.json", report)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    names = list(results)
    ax.bar(names, [results[n]["tokens_per_s"] for n in names], color=["#555", "#2a7"][: len(names)])
    ax.set_ylabel("tokens / s")
    ax.set_title(f"distillation step, batch {args.batch} x seq {args.seq}\n{report['hardware']['cpu']}", fontsize=9)
    save_figure(fig, args.out / "pretrain_throughput.png")
    line = ", ".join(f"{n} {r['tokens_per_s']:.0f} tokens/s" for n, r in results.items())
    ratio = f"bf16/fp32 {report['bf16_over_fp32']:.2f}x" if "bf16_over_fp32" in report else report["bf16_not_timed"]
    print(f"{line}; {ratio} → {args.out}/pretrain_throughput.json")


if __name__ == "__main__":
    main()
