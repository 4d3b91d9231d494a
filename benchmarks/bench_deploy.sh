#!/usr/bin/env bash
# The deploy acceptance figures for a `distil run` folder: export teacher and student (ONNX fp32 + int8,
# each checked on the task's dev set), then `distil bench` them side by side in one run.
#   bash benchmarks/bench_deploy.sh [RUN_DIR] [extra `distil bench` options, e.g. --repeats 30]
# Run it on an idle machine: other processes on the cores make the timings meaningless (bench.md warns).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/sst2}
shift || true
DISTIL=${DISTIL:-$( [ -x .venv/bin/distil ] && echo .venv/bin/distil || command -v distil )}
for model in teacher student; do
  "$DISTIL" export "$RUN/$model"            # task from distil.json; fails if a file drops > 1 point
done
"$DISTIL" bench --teacher "$RUN/teacher" --student "$RUN/student" --seq 32,128 --batch 32 --out "$RUN/bench" "$@"
echo "→ $RUN/bench/bench.md, bench.json, bench.png; $RUN/{teacher,student}/export.json"
