"""General distillation on WikiText-2: the triple loss against the same student trained with L_mlm alone.

Teacher: the packaged all-MiniLM-L6-v2 with a masked-LM head fitted on the frozen encoder (`--fit-mlm-head`);
student: teacher layers 0,2,4 (3 layers) with the fitted head. Both runs start from the same student, see
the same sequences in the same order with the same masks (same seed) for the same number of steps; they
differ only in the loss. Masked-token top-1 accuracy is measured on held-out articles.

Text (from ../shared/data/text; written under OUT/data, never into the repository):
  train: wikitext-2/wiki.valid.tokens + the first articles of wikitext-2-raw/wiki.test.raw
  eval:  the last articles of wiki.test.raw (raw text, no article in both)
In the .tokens file the rare words are `<unk>`; they become the tokenizer's [UNK] (never masked).
(wiki.test.tokens holds the same articles as wiki.test.raw, so it is not used.)

    .venv/bin/python benchmarks/pretrain_wikitext.py --out runs/pretrain-wikitext --max-steps 600

Writes OUT/pretrain_wikitext.json (both accuracies, the ratio to the teacher, seconds) and
OUT/pretrain_wikitext.png (loss curves). Finished runs are reused when the command is run again.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HEADING = re.compile(r"^ = [^=].* = $")  # a top-level article title line of WikiText


def articles(lines: list[str]) -> list[list[str]]:
    """Split WikiText lines into articles at top-level headings."""
    out: list[list[str]] = []
    for line in lines:
        if HEADING.match(line) or not out:
            out.append([])
        out[-1].append(line)
    return out


def write_text_split(text_dir: Path, data_dir: Path, eval_fraction: float) -> dict:
    """Write data/train.txt and data/eval.txt; returns counts of articles and lines."""
    raw = (text_dir / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    valid = (text_dir / "wikitext-2" / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines()
    valid = [line.replace("<unk>", "[UNK]") for line in valid]
    raw_articles = articles(raw)
    n_eval = max(1, round(len(raw_articles) * eval_fraction))
    train_lines = valid + [line for a in raw_articles[:-n_eval] for line in a]
    eval_lines = [line for a in raw_articles[-n_eval:] for line in a]
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", train_lines), ("eval.txt", eval_lines)):
        tmp = data_dir / f".{name}.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, data_dir / name)
    return {"train_lines": len(train_lines), "eval_lines": len(eval_lines),
            "train_articles": len(articles(valid)) + len(raw_articles) - n_eval, "eval_articles": n_eval}


def pretrain(args, out: Path, teacher: str | None, extra: list[str]) -> dict:
    """Run `distil pretrain` into `out` (skipped when its pretrain.json exists); returns pretrain.json."""
    from distilkit.artifacts import read_json

    if not (out / "pretrain.json").exists():
        cmd = [sys.executable, "-m", "distilkit.cli", "pretrain", "--corpus", str(args.out / "data" / "train.txt"),
               "--eval-corpus", str(args.out / "data" / "eval.txt"), "--out", str(out), "--layers", args.layers,
               "--max-steps", str(args.max_steps), "--save-steps", str(args.save_steps), "--lr", str(args.lr),
               "--batch-size", str(args.batch_size), "--max-len", str(args.max_len), "--seed", str(args.seed),
               "--resume", *(["--teacher", teacher] if teacher else []), *extra]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return read_json(out / "pretrain.json")


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distilkit.artifacts import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, info in runs.items():
        history = info["loss_history"]
        steps = [h["step"] for h in history]
        axes[0].plot(steps, [h["loss_mlm"] for h in history], label=f"{name}: L_mlm")
        if name == "triple loss":
            for term in ("loss_ce", "loss_cos"):
                axes[1].plot(steps, [h[term] for h in history], label=f"{name}: {term[5:].upper()}")
    axes[0].set(xlabel="step", ylabel="masked-LM cross-entropy", title="L_mlm (both runs)")
    axes[1].set(xlabel="step", ylabel="loss", title="distillation terms of the triple loss")
    for ax in axes:
        ax.legend(fontsize=8)
    accs = ", ".join(f"{n} {r['student_mlm_accuracy'] * 100:.1f}%" for n, r in runs.items())
    teacher = next(iter(runs.values()))["teacher_mlm_accuracy"] * 100
    fig.suptitle(f"WikiText-2 held-out masked-token accuracy: teacher {teacher:.1f}%, {accs}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "text")
    p.add_argument("--out", type=Path, default=Path("runs/pretrain-wikitext"))
    p.add_argument("--teacher", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--layers", default="0,2,4")
    p.add_argument("--max-steps", type=int, default=600)
    p.add_argument("--head-steps", type=int, default=300)
    p.add_argument("--save-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval-fraction", type=float, default=0.25, help="share of wiki.test.raw articles held out")
    args = p.parse_args()
    if not (args.text / "wikitext-2-raw" / "wiki.test.raw").exists():
        raise SystemExit(f"{args.text}: WikiText-2 not found (expected ../shared/data/text beside the checkout)")

    from distilkit.artifacts import write_json

    start = time.perf_counter()
    split = write_text_split(args.text, args.out / "data", args.eval_fraction)
    triple = pretrain(args, args.out / "triple", args.teacher, ["--fit-mlm-head", "--head-steps", str(args.head_steps)])
    # the same teacher (with the head fitted above), so the same student init; L_mlm alone
    mlm = pretrain(args, args.out / "mlm_only", str(args.out / "triple" / "teacher_with_head"),
                   ["--alpha-ce", "0", "--alpha-cos", "0", "--alpha-mlm", "1"])
    teacher_acc = triple["teacher_mlm_accuracy"]
    report = {
        "teacher": triple["teacher"], "layers": args.layers, "data": split, "max_steps": args.max_steps,
        "batch_size": args.batch_size, "max_len": args.max_len, "lr": args.lr, "seed": args.seed,
        "head_steps": args.head_steps, "teacher_mlm_accuracy": teacher_acc,
        "triple_loss": {"student_mlm_accuracy": triple["student_mlm_accuracy"],
                        "ratio_to_teacher": triple["student_mlm_accuracy"] / teacher_acc,
                        "train_seconds": triple["train_seconds"], "wall_seconds": triple["wall_seconds"],
                        "loss": triple["loss"]},
        "mlm_only": {"student_mlm_accuracy": mlm["student_mlm_accuracy"],
                     "ratio_to_teacher": mlm["student_mlm_accuracy"] / teacher_acc,
                     "train_seconds": mlm["train_seconds"], "wall_seconds": mlm["wall_seconds"], "loss": mlm["loss"]},
        "held_out_sequences": triple["held_out_sequences"], "benchmark_wall_seconds": time.perf_counter() - start,
    }
    report["triple_beats_mlm_only"] = report["triple_loss"]["student_mlm_accuracy"] > mlm["student_mlm_accuracy"]
    write_json(args.out / "pretrain_wikitext.json", report)
    plot({"triple loss": triple, "L_mlm only": mlm}, args.out / "pretrain_wikitext.png")
    t, m = report["triple_loss"], report["mlm_only"]
    print(f"teacher {teacher_acc * 100:.1f}% | triple loss {t['student_mlm_accuracy'] * 100:.1f}% "
          f"({t['ratio_to_teacher'] * 100:.1f}% of the teacher, {t['train_seconds'] / 60:.1f} min) | L_mlm only "
          f"{m['student_mlm_accuracy'] * 100:.1f}% ({m['ratio_to_teacher'] * 100:.1f}%) → "
          f"{args.out}/pretrain_wikitext.json, .png")


if __name__ == "__main__":
    main()
