"""Does `distil bench` time each backend as if it ran alone? One bench of every backend together, then one bench
per backend in its own process, and each figure of the joint run against the same figure timed alone.

    .venv/bin/python benchmarks/bench_alone.py --teacher runs/sst2/teacher --student runs/sst2/student \
        --out runs/bench-alone [--backends torch,onnx,onnx-int8] [--repeats 10 --rounds 3]

Writes OUT/joint/ and OUT/alone-<backend>/ (each a `distil bench` folder) and OUT/alone.json, OUT/alone.md: per
scenario, model and backend the joint and the alone median, and joint / alone. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DISTIL = [sys.executable, "-m", "distilkit.cli"]


def bench(out: Path, models: list[str], backends: str, extra: list[str]) -> dict:
    subprocess.run([*DISTIL, "bench", *models, "--backends", backends, "--out", str(out), *extra], check=True)
    return json.loads((out / "bench.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher")
    parser.add_argument("--student")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--seq", default="32,128")
    parser.add_argument("--repeats", default="10")
    parser.add_argument("--rounds", default="5")
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out} already exists: choose another --out")
    models = [*(["--teacher", args.teacher] if args.teacher else []), *(["--student", args.student] if args.student else [])]
    extra = ["--seq", args.seq, "--repeats", args.repeats, "--rounds", args.rounds]
    joint = bench(args.out / "joint", models, args.backends, extra)
    rows = []
    for backend in args.backends.split(","):
        alone = bench(args.out / f"alone-{backend}", models, backend, extra)
        by_key = {(r["name"], r["model"]): r for r in alone["results"]}
        for r in joint["results"]:
            if r["backend"] == backend:
                a = by_key[(r["name"], r["model"])]
                rows.append({"scenario": r["name"], "model": r["model"], "backend": backend,
                             "joint_ms": r["median_ms"], "alone_ms": a["median_ms"],
                             "joint_spread_pct": r["spread_pct"], "alone_spread_pct": a["spread_pct"],
                             "joint_over_alone": r["median_ms"] / a["median_ms"]})
    result = {"hardware": joint["hardware"], "method": joint["method"], "rows": rows,
              "largest_deviation_pct": max(abs(r["joint_over_alone"] - 1) * 100 for r in rows)}
    (args.out / "alone.json").write_text(json.dumps(result, indent=2) + "\n")
    hw = joint["hardware"]
    lines = [f"# distil bench: each backend together vs alone ({hw['cpu']}, {hw['cores']} cores, "
             f"{', '.join(hw['isa'])})", "",
             "| scenario | model | backend | joint ms | alone ms | joint / alone | spread joint / alone |",
             "|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['scenario']} | {r['model']} | {r['backend']} | {r['joint_ms']:.2f} | {r['alone_ms']:.2f} | "
              f"{r['joint_over_alone']:.2f} | {r['joint_spread_pct']:.0f}% / {r['alone_spread_pct']:.0f}% |"
              for r in rows]
    lines += ["", f"Largest deviation: {result['largest_deviation_pct']:.1f}%.", ""]
    (args.out / "alone.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
