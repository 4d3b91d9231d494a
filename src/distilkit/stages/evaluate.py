"""Scoring models: a task model on a task's dev split(s) (its metrics and GLUE per-task score), and sentence-embedding
models side by side on STS-B and retrieval sets, without fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import read_record
from ..data.errors import DataError
from ..data.glue import GLUE_TASKS, default_glue_dir
from ..data.retrieval import RetrievalSet, glue_retrieval, jsonl_retrieval, sts_pairs
from ..data.files import load_table
from ..data.task import TaskData, load_task_data, recorded_dev_data
from ..deploy.backends import load_backend, predict_all
from ..errors import UserError
from ..metrics import evaluate_task_predictions, predictions, retrieval_metrics, sts_spearman, task_score
from ..models.folders import ModelError, load_config, load_tokenizer, model_labels, supported_config
from ..models.loading import load_classifier
from ..tags import MULTI_LABEL
from ..train.common import encode, predict_logits


def dev_predictions(model, tokenizer, data: TaskData, max_length: int = 128, encoded_dev: dict | None = None) -> dict:
    """{split: (predictions, labels)} of `model` on every dev split of `data`."""
    encoded_dev = encoded_dev or {name: encode(ds, tokenizer, max_length) for name, ds in data.dev.items()}
    per_split = {}
    for name, ds in encoded_dev.items():
        logits = predict_logits(model, ds, tokenizer, description=f"evaluating on {data.name} {name}")
        per_split[name] = (predictions(logits, data.regression, data.multi_label), np.asarray(ds["label"]))
    return per_split


def evaluate_model(model, tokenizer, data: TaskData, max_length: int = 128, encoded_dev: dict | None = None) -> dict:
    """{metric: value, ..., "score": per-task mean} on every dev split of `data`."""
    metrics = evaluate_task_predictions(data, dev_predictions(model, tokenizer, data, max_length, encoded_dev))
    metrics["score"] = task_score(metrics)
    return metrics


def evaluate_embedding_model(encode, sts: tuple | None, retrieval: list[RetrievalSet]) -> dict:
    """`encode(texts) -> (n, dim)` scored on STS (Spearman of cosine) and each retrieval set.
    Returns {"stsb_spearman": ..., "<set>": {"recall@1", "recall@10", "mrr@10"}}."""
    out = {}
    if sts is not None:
        s1, s2, gold = sts
        out["stsb_spearman"] = sts_spearman(encode(s1), encode(s2), gold)
    for rs in retrieval:
        out[rs.name] = retrieval_metrics(encode(rs.queries), encode(rs.passages), rs.relevant)
    return out


def embedding_scores(metrics: dict) -> dict[str, float]:
    """Flat {name: value} of an embedding model's metrics ("stsb_spearman", "mrpc recall@10", ...)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key} {k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def compare_embedding_models(models: dict[str, str], sts: tuple | None, retrieval: list[RetrievalSet],
                             backend: str = "torch", reference: str | None = "teacher") -> dict:
    """Every model (name → folder) on the same sets, side by side; retention of each score versus
    `reference` (when it is among the models)."""
    results = {}
    for name, folder in models.items():
        model = load_backend(folder, backend)
        if not model.embedding:
            raise ModelError(f"{folder} is not an embedding model (no modules.json with a Pooling module): "
                             "`distil eval --embedding` scores sentence-embedding folders")
        results[name] = evaluate_embedding_model(lambda texts: predict_all(model, list(texts), None, 64),
                                                 sts, retrieval)
        results[name]["pooling"] = {"mode": model.pooling.mode, "normalize": model.pooling.normalize}
    out = {"models": results, "sets": {
        **({"stsb": {"pairs": len(sts[0])}} if sts else {}),
        **{rs.name: {"queries": len(rs.queries), "passages": len(rs.passages), "source": rs.source} for rs in retrieval}}}
    if reference in results:
        ref = embedding_scores({k: v for k, v in results[reference].items() if k != "pooling"})
        out["retention"] = {name: {k: (v / ref[k] if ref[k] else None) for k, v in
                                   embedding_scores({k: v for k, v in m.items() if k != "pooling"}).items()}
                            for name, m in results.items() if name != reference}
    return out


def evaluate_folder(model_dir: str, data: TaskData, max_length: int = 128) -> dict:
    """`distil eval`: metrics of a saved task model on the task's dev split(s)."""
    supported_config(model_dir)
    model = load_classifier(model_dir)
    if model.config.num_labels != data.num_labels:
        raise ModelError(f"{model_dir} has {model.config.num_labels} outputs; task {data.name} needs {data.num_labels}")
    if (model.config.problem_type == MULTI_LABEL) != data.multi_label:
        raise ModelError(f"{model_dir} is {'a multi-label' if not data.multi_label else 'not a multi-label'} model: "
                         f"{'give' if not data.multi_label else 'drop'} --multi-label")
    if data.multi_label:
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if names != data.label_names:
            raise ModelError(f"{model_dir} was trained on the tags {names}, the training file has {data.label_names}")
    return evaluate_model(model, load_tokenizer(model_dir), data, max_length)


def embedding_evaluation(model_dir: str, teacher: str | None = None, compare: list[str] = (), retrieval: str = "mrpc",
                         sts: bool = True, glue_dir: str | Path | None = None, backend: str = "torch") -> dict:
    """`distil eval --embedding`: the model (and the teacher, and each NAME=DIR of `compare`) on STS-B dev and
    the retrieval sets named in `retrieval` (mrpc, stsb or JSONL files, comma-separated; none: skip)."""
    glue_dir = glue_dir or default_glue_dir()
    models = {**({"teacher": teacher} if teacher else {}), Path(model_dir).name or "model": model_dir}
    for item in compare:
        name, sep, folder = item.partition("=")
        if not sep:
            raise UserError(f"--compare {item!r}: expected NAME=DIR")
        models[name] = folder
    for folder in models.values():  # unsupported families are refused by name before any data is read
        supported_config(folder)
    sets = [jsonl_retrieval(r) if r.endswith((".jsonl", ".json")) else glue_retrieval(r, glue_dir)
            for r in (x.strip() for x in retrieval.split(",")) if r and r != "none"]
    result = compare_embedding_models(models, sts_pairs(glue_dir) if sts else None, sets, backend)
    return {"models_dirs": models, "data": str(glue_dir or "hub"), **result}


def checking_data(model_dir: str | Path, task: str | None = None, data_dir: str | Path | None = None,
                  dev_file: str | Path | None = None, text_column: str = "text", text_pair_column: str | None = None,
                  label_column: str = "label", dev_limit: int | None = None, label_separator: str = "|",
                  train_limit: int = 1) -> TaskData:
    """The dev data a trained model is checked on: `dev_file` (read with the given columns) when given; else
    `task`, a GLUE task; else what its distil.json records: the user's own dev file it was trained with, or its
    GLUE task; else SST-2. A file's labels are read with the model's own label names, so ids match its outputs.
    `train_limit`: how many training rows come along (the OpenVINO int8 export calibrates on them): of the GLUE
    task, or of the training file distil.json records (none when there is no such file)."""
    record, labels = read_record(model_dir), model_labels(model_dir)
    recorded = record.get("data", {})
    if dev_file is not None:
        tags = load_config(str(model_dir)).problem_type == MULTI_LABEL  # the model says: one label, or tags
        source = {"dev_file": str(dev_file), "text_column": text_column,
                  **({"text_pair_column": text_pair_column} if text_pair_column else {}),
                  "label_column": label_column, **({"regression": True} if labels is None else {}),
                  **({"multi_label": True, "label_separator": label_separator} if tags else {})}
        data = recorded_dev_data(record.get("task") or Path(dev_file).stem, source, labels, dev_limit)
        return with_recorded_train(data, recorded, labels, train_limit)
    if task is None and "dev_file" in recorded:
        data = recorded_dev_data(record["task"], recorded, labels, dev_limit)
        return with_recorded_train(data, recorded, labels, train_limit)
    task = task or record.get("task") or "sst2"
    if task not in GLUE_TASKS and "train_file" in recorded:
        raise DataError(f"{model_dir} was trained on your own files ({recorded['train_file']}), and its distil.json "
                        "does not record the columns of its dev file: give --dev FILE with --text-column and "
                        "--label-column, or --task (a GLUE task)")
    return load_task_data(task=task, data_dir=data_dir, train_limit=train_limit, dev_limit=dev_limit)


def with_recorded_train(data: TaskData, recorded: dict, labels: list[str] | None, train_limit: int) -> TaskData:
    """`data` with the first `train_limit` rows of the training file distil.json records, when there is one, it
    still exists, reads with its recorded columns and has the dev data's columns; else `data` as it is."""
    path = recorded.get("train_file")
    if train_limit <= 1 or not path or not Path(path).exists() or "text_column" not in recorded:
        return data
    try:
        train, _ = load_table(path, recorded["text_column"], recorded.get("label_column", "label"),
                              recorded.get("text_pair_column"), labels is None, labels, train_limit,
                              multi_label=bool(recorded.get("multi_label")),
                              label_separator=recorded.get("label_separator", "|"))
    except (DataError, ValueError, KeyError):
        return data
    if set(train.column_names) != set(data.train.column_names):
        return data
    data.train = train.cast(data.train.features)
    data.source = {**data.source, "train_file": str(path)}
    return data
