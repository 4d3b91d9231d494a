"""How closely does a distilled student follow its teacher on inputs it trained on, and on unseen ones?

Predicts a sample of the task's training rows and every dev row with the teacher and the student, and
prints, per split: each model against the gold labels, and the student against the teacher (Pearson of the
two predictions for a regression task, label agreement for a classification task). A student that follows
its teacher much better on training inputs than on dev inputs is short of transfer data, not of capacity.

    .venv/bin/python benchmarks/teacher_fit.py --teacher runs/glue/stsb/seed-42/teacher \\
        --student runs/glue/stsb/seed-42/student --task stsb --data ../shared/data/glue
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import pearsonr

from distilkit.data.task import load_task_data
from distilkit.metrics import predictions
from distilkit.models.folders import load_tokenizer
from distilkit.models.loading import load_classifier
from distilkit.train.common import encode, predict_logits


def follow(teacher_out: np.ndarray, student_out: np.ndarray, gold: np.ndarray, regression: bool) -> dict:
    """Teacher and student against gold, and student against teacher, on one split's predictions."""
    if regression:
        return {"teacher_vs_gold_pearson": float(pearsonr(teacher_out, gold)[0]),
                "student_vs_gold_pearson": float(pearsonr(student_out, gold)[0]),
                "student_vs_teacher_pearson": float(pearsonr(student_out, teacher_out)[0])}
    return {"teacher_accuracy": float((teacher_out == gold).mean()),
            "student_accuracy": float((student_out == gold).mean()),
            "student_teacher_agreement": float((student_out == teacher_out).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the fine-tuned teacher folder")
    p.add_argument("--student", required=True, help="the distilled student folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data", default=None, help="glue_data folder (default ../shared/data/glue, else the hub)")
    p.add_argument("--train-rows", type=int, default=1500, help="training rows sampled (seed 0)")
    a = p.parse_args()

    data = load_task_data(a.task, a.data)
    tokenizer = load_tokenizer(a.teacher)
    teacher, student = load_classifier(a.teacher), load_classifier(a.student)
    train = data.train.shuffle(seed=0).select(range(min(a.train_rows, len(data.train))))
    for name, ds in [("train sample", train), *data.dev.items()]:
        encoded = encode(ds, tokenizer)
        outs = [predictions(predict_logits(m, encoded, tokenizer), data.regression) for m in (teacher, student)]
        row = follow(*outs, np.asarray(ds["label"], dtype=float if data.regression else int), data.regression)
        print(f"{name} ({len(ds)} rows): " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
