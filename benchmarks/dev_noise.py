"""How much of a GLUE dev-set difference is sampling noise? A paired bootstrap over the dev rows.

Takes a finished `distil glue` suite, predicts every dev row once with each model (teacher, student,
baseline) of one seed, checks that the scores equal the suite's `glue.json`, then resamples each task's dev
rows with replacement (the same rows for every model) and recomputes the task scores, the macro scores and
the macro retention. This measures how much the reported figures would move on another dev sample of the
same size; it says nothing about training-seed noise (that is `distil glue --seeds`).

    .venv/bin/python benchmarks/dev_noise.py --suite runs/glue --out runs/glue-dev-noise

Writes OUT/dev_noise.json and OUT/dev_noise.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from distilkit.artifacts import check_output, read_json, write_json, write_text
from distilkit.data.task import load_task_data
from distilkit.stages.evaluate import dev_predictions
from distilkit.metrics import evaluate_task_predictions, glue_score, task_score
from distilkit.models.folders import load_tokenizer
from distilkit.models.loading import load_classifier


def resample(split_predictions: dict, rows: dict) -> dict:
    """The same {split: (predictions, labels)} restricted to the resampled row indices of each split."""
    return {split: (preds[rows[split]], labels[rows[split]]) for split, (preds, labels) in split_predictions.items()}


def interval(values: np.ndarray) -> dict:
    """Sample sd and the 2.5th-97.5th percentile range of bootstrap values."""
    return {"sd": float(np.std(values, ddof=1)), "low_2.5": float(np.percentile(values, 2.5)),
            "high_97.5": float(np.percentile(values, 97.5))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, help="a finished `distil glue` output folder")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=None, help="which training seed's models (default: the suite's first)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()

    suite = Path(args.suite)
    out = check_output(args.out, args.overwrite)
    glue = read_json(suite / "glue.json")
    seed = args.seed if args.seed is not None else glue["seeds"][0]
    models = [m for m in ("teacher", "student", "baseline") if m in glue["models"]]
    rng = np.random.default_rng(0)

    scores = {m: {} for m in models}  # model -> task -> (point score, resampled scores)
    for task in glue["tasks"]:
        data = load_task_data(task, glue["data"][task]["source"].get("data_dir"))
        preds = {}
        for m in models:
            model_dir = str(suite / task / f"seed-{seed}" / m)
            preds[m] = dev_predictions(load_classifier(model_dir), load_tokenizer(model_dir), data)
        rows = [{split: rng.integers(0, len(labels), len(labels)) for split, (_, labels) in preds[models[0]].items()}
                for _ in range(args.resamples)]
        for m in models:
            point = task_score(evaluate_task_predictions(data, preds[m]))
            reported = glue["models"][m]["tasks"][task]["seeds"][str(seed)]["score"]
            if abs(point - reported) > 1e-6:
                raise SystemExit(f"{task} {m}: recomputed score {point:.6f} differs from glue.json's {reported:.6f}")
            boot = np.array([task_score(evaluate_task_predictions(data, resample(preds[m], r))) for r in rows])
            scores[m][task] = (point, boot)
        print(task, {m: round(scores[m][task][0], 4) for m in models}, flush=True)

    macro = {m: glue_score({t: s[0] for t, s in scores[m].items()}) for m in models}
    macro_boot = {m: np.mean([s[1] for s in scores[m].values()], axis=0) for m in models}
    result = {"suite": str(suite), "seed": seed, "resamples": args.resamples, "tasks": {}, "macro": {},
              "macro_retention": {}}
    for task in glue["tasks"]:
        teacher_point, teacher_boot = scores["teacher"][task]
        result["tasks"][task] = {
            m: {"score": scores[m][task][0], **interval(scores[m][task][1]),
                "gap_to_teacher": {"value": teacher_point - scores[m][task][0],
                                   **interval(teacher_boot - scores[m][task][1])}}
            for m in models
        }
    for m in models:
        result["macro"][m] = {"score": macro[m], **interval(macro_boot[m])}
        if m != "teacher":
            result["macro_retention"][m] = {"value": macro[m] / macro["teacher"],
                                            **interval(macro_boot[m] / macro_boot["teacher"])}
    write_json(out / "dev_noise.json", result)

    lines = [f"# Dev-set sampling noise of `{suite}` (seed {seed}; {args.resamples} paired bootstrap resamples)", "",
             "| task | model | score | bootstrap sd | gap to teacher | gap sd |", "|---|---|---:|---:|---:|---:|"]
    for task, per_model in result["tasks"].items():
        for m, r in per_model.items():
            gap = r["gap_to_teacher"]
            lines.append(f"| {task} | {m} | {100 * r['score']:.2f} | {100 * r['sd']:.2f} | "
                         f"{100 * gap['value']:.2f} | {100 * gap['sd']:.2f} |")
    lines += ["", "| model | macro retention | bootstrap sd | 95% interval |", "|---|---:|---:|---|"]
    for m, r in result["macro_retention"].items():
        lines.append(f"| {m} | {100 * r['value']:.1f}% | {100 * r['sd']:.1f} | "
                     f"{100 * r['low_2.5']:.1f}% – {100 * r['high_97.5']:.1f}% |")
    write_text(out / "dev_noise.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
