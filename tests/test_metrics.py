"""Metrics against scikit-learn / scipy and hand-computed values; GLUE score aggregation."""
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from distilkit.data import get_task
from distilkit.metrics import compute_metrics, evaluate_task_predictions, glue_score, task_score

PREDS = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
REFS = [1, 0, 0, 1, 0, 1, 1, 0, 0, 1]


def test_hand_computed():
    assert compute_metrics(("accuracy",), [1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 0.5}
    assert compute_metrics(("mcc",), [0, 1, 1, 0], [0, 1, 1, 0]) == {"mcc": 1.0}
    assert compute_metrics(("mcc",), [1, 0, 0, 1], [0, 1, 1, 0]) == {"mcc": -1.0}
    # tp=1, fp=1, fn=1 -> precision 1/2, recall 1/2, f1 1/2
    assert compute_metrics(("f1",), [1, 1, 0, 0], [1, 0, 1, 0]) == {"f1": 0.5}
    assert compute_metrics(("pearson", "spearman"), [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(
        {"pearson": 1.0, "spearman": 1.0})


def test_against_sklearn_and_scipy():
    out = compute_metrics(("mcc", "accuracy", "f1"), PREDS, REFS)
    assert out == pytest.approx({"mcc": matthews_corrcoef(REFS, PREDS), "accuracy": accuracy_score(REFS, PREDS),
                                 "f1": f1_score(REFS, PREDS)})
    assert all(type(v) is float for v in out.values())
    rng = np.random.default_rng(0)
    refs = rng.uniform(0, 5, 50)
    preds = refs + rng.normal(0, 1, 50)
    out = compute_metrics(("pearson", "spearman"), preds, refs)
    assert out == pytest.approx({"pearson": pearsonr(preds, refs)[0], "spearman": spearmanr(preds, refs)[0]})
    assert all(type(v) is float for v in out.values())


def test_bad_input():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        compute_metrics(("bleu",), [1], [1])
    with pytest.raises(ValueError, match="equally long"):
        compute_metrics(("accuracy",), [1, 0], [1])


def test_task_and_glue_score():
    mrpc = compute_metrics(get_task("mrpc").metrics, PREDS, REFS)
    assert task_score(mrpc) == pytest.approx((mrpc["f1"] + mrpc["accuracy"]) / 2)
    assert glue_score({"cola": 0.5, "sst2": 0.9, "mrpc": 0.7}) == pytest.approx(0.7)


def test_evaluate_task_predictions():
    mnli = evaluate_task_predictions(get_task("mnli"), {"dev_matched": ([0, 1, 2, 2], [0, 1, 2, 0]),
                                                        "dev_mismatched": ([0, 0], [0, 1])})
    assert mnli == {"dev_matched_accuracy": 0.75, "dev_mismatched_accuracy": 0.5}
    assert task_score(mnli) == pytest.approx(0.625)
    assert evaluate_task_predictions(get_task("sst2"), {"dev": ([1, 0], [1, 1])}) == {"accuracy": 0.5}
