"""Acceptance of embedding distillation: a 3-layer student of the packaged all-MiniLM-L6-v2, distilled on
unlabelled sentences of ../shared/data, against the teacher and the untrained truncated student.

    nice -n 19 .venv/bin/python benchmarks/embed_acceptance.py --out runs/embed-acceptance

1. corpus/sentences.txt: sentences only (never labels or scores) of SST-2, CoLA, MRPC and STS-B train and
   of WikiText (split into sentences), minus every sentence of STS-B dev and MRPC dev/test, de-duplicated;
2. `distil embed --epochs 0` (truncated/) and `distil embed` (student/), same layers;
3. `distil eval --embedding`: STS-B dev Spearman, MRPC retrieval (dev positive pairs: query = sentence 1,
   passage = sentence 2, pool = sentence 2 of every dev and test pair) for all three side by side;
4. `distil export student/`: the int8 ONNX file's mean cosine to fp32 on STS-B dev sentences;
5. results.json, results.md, results.png, and retention printed.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distilkit.artifacts import read_json, save_figure, write_json, write_text  # noqa: E402
from distilkit.data.glue import load_glue_split  # noqa: E402
from distilkit.data.sentences import clean_wikitext, split_sentences  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
WIKI_FILES = ("wikitext-2-raw/wiki.test.raw", "wikitext-2/wiki.valid.tokens")


def held_out(glue: Path) -> set[str]:
    """Every sentence of the evaluation splits: STS-B dev, MRPC dev and test."""
    out = set()
    for task, split in (("stsb", "dev"), ("mrpc", "dev"), ("mrpc", "test")):
        ds = load_glue_split(task, split, glue)
        out |= {t.strip() for t in ds["text"]} | {t.strip() for t in ds["text_pair"]}
    return out


def build_corpus(glue: Path, text: Path, out: Path, min_words: int, limit: int | None, seed: int) -> dict:
    """Write out/sentences.txt; returns counts per source."""
    exclude, seen, sentences, counts = held_out(glue), set(), [], {}

    def add(source: str, items):
        n = 0
        for s in items:
            s = " ".join(s.split())
            if len(s.split()) >= min_words and s not in exclude and s not in seen:
                seen.add(s)
                sentences.append(s)
                n += 1
        counts[source] = n

    for task in ("sst2", "cola", "mrpc", "stsb"):
        ds = load_glue_split(task, "train", glue)
        add(f"{task} train", list(ds["text"]) + (list(ds["text_pair"]) if "text_pair" in ds.column_names else []))
    for name in WIKI_FILES:
        path = text / name
        if path.exists():
            lines = [clean_wikitext(line) for line in path.read_text(encoding="utf-8").splitlines()]
            add(f"wikitext {name}", [s for line in lines if line for s in split_sentences(line) if "<unk>" not in s])
    if limit and len(sentences) > limit:
        sentences = random.Random(seed).sample(sentences, limit)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return {"sentences": len(sentences), "per_source_new": counts, "excluded_eval_sentences": len(exclude),
            "min_words": min_words, "limit": limit}


def distil(*args: str) -> float:
    """Run `distil ARGS` (this checkout's source), fail loudly; returns wall seconds."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "distilkit.cli", *args]
    print("$ distil " + " ".join(args), flush=True)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(cmd, check=True, env=env)
    return round(time.perf_counter() - start, 1)


def plot(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["stsb_spearman", "mrpc recall@1", "mrpc recall@10", "mrpc mrr@10"]
    models = list(metrics)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(models)
    colors = {"teacher": "#555", "truncated": "#c84", "student": "#2a7"}
    for i, m in enumerate(models):
        values = [metrics[m][n] for n in names]
        bars = ax.bar([j + i * width for j in range(len(names))], values, width, label=m, color=colors.get(m))
        for b, v in zip(bars, values):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v * 100:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1.05)
    ax.set_title("all-MiniLM-L6-v2 → 3-layer student: STS-B dev and MRPC retrieval (no fine-tuning)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="Output folder (outside the repository).")
    p.add_argument("--data", type=Path, default=SHARED, help="shared/data folder (glue/ and text/).")
    p.add_argument("--layers", default="0,2,4")
    p.add_argument("--epochs", default="3")
    p.add_argument("--lr", default="1e-4")
    p.add_argument("--batch-size", default="64")
    p.add_argument("--mse-weight", default="1.0")
    p.add_argument("--cos-weight", default="1.0")
    p.add_argument("--sim-weight", default="1.0")
    p.add_argument("--max-sentences", type=int, default=None, help="Sample this many corpus sentences (calibration).")
    p.add_argument("--min-words", type=int, default=3)
    p.add_argument("--no-export", action="store_true")
    args = p.parse_args()
    out, glue = args.out.resolve(), args.data / "glue"
    if not glue.is_dir():
        sys.exit(f"{glue} not found: the acceptance needs ../shared/data")
    start = time.perf_counter()
    corpus = build_corpus(glue, args.data / "text", out / "corpus", args.min_words, args.max_sentences, 42)
    print(f"corpus: {corpus['sentences']:,} sentences → {out / 'corpus' / 'sentences.txt'}", flush=True)
    common = ["--layers", args.layers, "--cache-dir", str(out / "cache"), "--overwrite"]
    seconds = {"truncated": distil("embed", "--corpus", str(out / "corpus" / "sentences.txt"), "--out", str(out / "truncated"),
                                   "--epochs", "0", *common)}
    seconds["student"] = distil("embed", "--corpus", str(out / "corpus" / "sentences.txt"), "--out", str(out / "student"),
                                "--epochs", args.epochs, "--lr", args.lr, "--batch-size", args.batch_size,
                                "--mse-weight", args.mse_weight, "--cos-weight", args.cos_weight,
                                "--sim-weight", args.sim_weight, *common)
    seconds["eval"] = distil("eval", str(out / "student"), "--embedding", "--teacher", "minilm", "--compare",
                             f"truncated={out / 'truncated'}", "--retrieval", "mrpc", "--data", str(glue),
                             "--out", str(out / "eval.json"))
    evaluation = read_json(out / "eval.json")
    export = None
    if not args.no_export:
        seconds["export"] = distil("export", str(out / "student"), "--data", str(glue))
        export = read_json(out / "student" / "export.json")["check"]
    info = read_json(out / "student" / "distil.json")
    from distilkit.stages.evaluate import embedding_scores

    flat = {m: embedding_scores({k: v for k, v in r.items() if k != "pooling"}) for m, r in evaluation["models"].items()}
    results = {
        "command": " ".join(sys.argv), "corpus": corpus, "layer_map": info["layer_map"], "config": info["config"],
        "train": {k: v for k, v in (info.get("train") or {}).items() if k != "history"},
        "teacher_embeddings": info.get("teacher_embeddings"), "metrics": flat,
        "retention": evaluation.get("retention"), "sets": evaluation["sets"],
        "int8": export and {k: export["results"]["onnx-int8"][k] for k in ("mean_cosine", "min_cosine", "p01_cosine")},
        "onnx_fp32_mean_cosine": export and export["results"]["onnx"]["mean_cosine"],
        "seconds": {**seconds, "wall": round(time.perf_counter() - start, 1)},
        "parameters": info["parameters"], "history": (info.get("train") or {}).get("history"),
    }
    write_json(out / "results.json", results)
    names = ["stsb_spearman", "mrpc recall@1", "mrpc recall@10", "mrpc mrr@10"]
    lines = ["# Embedding distillation acceptance", "",
             f"Teacher all-MiniLM-L6-v2 (6 layers) → student of teacher layers {info['layer_map']} (DistilBERT), "
             f"{corpus['sentences']:,} unlabelled sentences, {info['config']['epochs']} epochs, lr {info['config']['learning_rate']}, "
             f"loss {info['config']['mse_weight']}·MSE + {info['config']['cos_weight']}·(1−cos) + "
             f"{info['config']['sim_weight']}·MSE(similarity matrices).", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m, v in flat.items():
        lines.append(f"| {m} | " + " | ".join(f"{v[n] * 100:.2f}" for n in names) + " |")
    for m, r in (evaluation.get("retention") or {}).items():
        lines.append(f"| {m} retention | " + " | ".join(f"{r[n] * 100:.1f}%" for n in names) + " |")
    if export:
        lines += ["", f"int8 ONNX vs fp32 torch on {export['sentences']} STS-B dev sentences: mean cosine "
                      f"{results['int8']['mean_cosine']:.4f} (min {results['int8']['min_cosine']:.4f})."]
    lines += ["", f"Wall seconds: {json.dumps(results['seconds'])}", ""]
    write_text(out / "results.md", "\n".join(lines))
    plot(flat, out / "results.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
