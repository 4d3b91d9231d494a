"""Peak memory and throughput of preparing a large text corpus (`distil corpus` / `distil pretrain`'s first step).

For each size, a text file of that many MB is made from the shared WikiText (every non-blank line of
../shared/data/text, repeated, each repetition in a new shuffled order) in a temporary folder under /tmp, then
prepared by `prepare_corpus` (the packaged teacher's tokenizer, max_len 128) in a child process, which reports
its own peak RSS (`ru_maxrss`; also before preparing, i.e. libraries and tokenizer) and, sampled every 0.2 s, the
peaks of its anonymous memory and of its file-backed pages (the memory-mapped Arrow, reclaimable page cache). The temporary folder is deleted after each size. Reported: peak RSS, seconds,
MB/s of text, tokens/s, sequences, and the CPU (model, cores, instruction sets) and load average.

    .venv/bin/python benchmarks/prepare_corpus.py --sizes-mb 64,256,1024,2048 --out runs/prepare-corpus
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"

CHILD = """
import json, resource, sys, threading, time
from distilkit.data.corpus import prepare_corpus
from distilkit.models.folders import load_tokenizer, resolve_model

peak = {"RssAnon": 0, "RssFile": 0}

def sample():  # anonymous memory (the process's own) and file-backed pages (memory-mapped Arrow), every 0.2 s
    while True:
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in peak:
                peak[key] = max(peak[key], int(value.split()[0]))
        time.sleep(0.2)

threading.Thread(target=sample, daemon=True).start()
teacher = resolve_model(None)
tokenizer = load_tokenizer(teacher)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
info = prepare_corpus(sys.argv[1], tokenizer, sys.argv[2], 128, tokenizer_name=teacher)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": before, "peak_anon_mb": peak["RssAnon"] / 1024, "peak_file_mb": peak["RssFile"] / 1024,
                  "sequences": info["sequences"], "tokens": info["tokens"], "token_dtype": info["token_dtype"]}))
"""


def make_corpus(path: Path, size_mb: int, source: Path, seed: int = 0) -> int:
    """Write ~`size_mb` MB of WikiText lines (shuffled anew each repetition) to `path`; returns its bytes."""
    lines = [line for f in sorted(source.rglob("*")) if f.is_file()
             for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng, target, written = random.Random(seed), size_mb * 2**20, 0
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            rng.shuffle(lines)
            chunk = "\n".join(lines) + "\n"
            fh.write(chunk)
            written += len(chunk.encode("utf-8"))
    return path.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-mb", default="64,256,1024,2048")
    p.add_argument("--text", type=Path, default=SHARED_TEXT, help="folder of text files to repeat")
    p.add_argument("--out", type=Path, default=Path("runs/prepare-corpus"))
    args = p.parse_args()

    from distilkit.hardware import hardware

    results = []
    for size in (int(s) for s in args.sizes_mb.split(",")):
        work = Path(tempfile.mkdtemp(prefix="distil-corpus-", dir="/tmp"))
        try:
            nbytes = make_corpus(work / "corpus.txt", size, args.text)
            load = os.getloadavg()[0]
            run = subprocess.run([sys.executable, "-c", CHILD, str(work / "corpus.txt"), str(work / "prepared")],
                                 capture_output=True, text=True, env={**os.environ, "DISTILKIT_QUIET": "1"})
            if run.returncode != 0:
                raise SystemExit(run.stderr[-3000:])
            got = json.loads(run.stdout.strip().splitlines()[-1])
            row = {"size_mb": round(nbytes / 2**20, 1), **got, "mb_per_s": nbytes / 2**20 / got["seconds"],
                   "tokens_per_s": got["tokens"] / got["seconds"], "load_before": load,
                   "load_after": os.getloadavg()[0],
                   "prepared_mb": sum(f.stat().st_size for f in (work / "prepared").rglob("*")) / 2**20}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(row)
        print(f"{row['size_mb']:8.1f} MB: peak RSS {row['peak_rss_mb']:7.0f} MB (before {row['rss_before_mb']:.0f}, "
              f"anon {row['peak_anon_mb']:.0f}, file {row['peak_file_mb']:.0f}), {row['seconds']:7.1f} s, "
              f"{row['mb_per_s']:5.2f} MB/s, {row['tokens_per_s']:9.0f} tokens/s, {row['sequences']:,} sequences "
              f"({row['token_dtype']}), load {row['load_before']:.1f}→{row['load_after']:.1f}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / ".prepare_corpus.json.tmp"
        tmp.write_text(json.dumps({"hardware": hardware(), "results": results}, indent=2))
        tmp.replace(args.out / "prepare_corpus.json")
    print(json.dumps(hardware()))


if __name__ == "__main__":
    main()
