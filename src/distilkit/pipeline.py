"""The pipeline's stages, each reading and writing plain model folders.

A stage folder is a `save_pretrained` model + tokenizer (safetensors) and `distil.json`
(what made it: inputs, config, metrics, seconds, versions). Stages write to a temporary
folder and rename it into place, so a folder that exists is a finished stage.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import datasets
import torch
import transformers
from rich.console import Console
from transformers import AutoModel, AutoModelForMaskedLM

from . import __version__
from .artifacts import atomic_output_dir, read_json, write_json
from .data.augment import augment, embedding_neighbours, mine_pairs, texts_of, words_of
from .data.task import TaskData
from .evaluate import evaluate_model
from .models import ModelError, count_parameters, has_classifier_head, load_classifier, load_config, load_tokenizer
from .student import build_student, choose_layers, teacher_depth
from .train.common import TrainConfig, encode, model_inputs
from .train.task import DistillConfig, add_teacher_outputs, distill, finetune

console = Console(stderr=True)


def versions() -> dict:
    return {
        "distilkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "python": platform.python_version(),
    }


def save_model(model, tokenizer, folder: Path, info: dict) -> None:
    """save_pretrained (safetensors) + tokenizer (only the inputs the model takes) + distil.json."""
    names = [n for n in tokenizer.model_input_names if n in model_inputs(model)]
    tokenizer.model_input_names = names
    tokenizer.init_kwargs["model_input_names"] = names  # so it is saved in tokenizer_config.json
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_json(folder / "distil.json", {**info, "versions": versions()})


def load_any(path: str):
    """A model with the head its folder was saved with (classifier, masked LM, or bare encoder)."""
    archs = load_config(path).architectures or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return load_classifier(path)
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs):
        return AutoModelForMaskedLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    return AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)


def _label_maps(data: TaskData) -> dict | None:
    return None if data.regression else dict(enumerate(data.label_names))


def _task_model(path: str, data: TaskData):
    """A classifier (or regressor) for `data`, with a new head when the folder has none that fits."""
    model = load_classifier(path, num_labels=data.num_labels, id2label=_label_maps(data))
    model.config.problem_type = "regression" if data.regression else "single_label_classification"
    return model


def make_student(teacher: str, out: Path, layers: str | None = None, num_layers: int | None = None,
                 overwrite: bool = False) -> dict:
    """`distil student`: copy chosen teacher layers into a smaller model; returns distil.json."""
    config = load_config(teacher)
    layer_map = choose_layers(teacher_depth(config), layers, num_layers)
    with atomic_output_dir(out, overwrite) as tmp:
        teacher_model = load_any(teacher)
        student = build_student(teacher_model, layer_map)
        params = {"teacher": count_parameters(teacher_model), "student": count_parameters(student)}
        info = {
            "stage": "student",
            "teacher": str(teacher),
            "teacher_type": config.model_type,
            "student_type": student.config.model_type,
            "layer_map": layer_map,
            "parameters": params,
        }
        save_model(student, load_tokenizer(teacher), tmp, info)
    return info


def finetune_teacher(teacher: str, data: TaskData, cfg: TrainConfig, out: Path, overwrite: bool = False,
                     resume: bool = False, force: bool = False) -> dict:
    """`distil finetune`: train the teacher on the task (skipped when it already has a fitting head)."""
    with atomic_output_dir(out, overwrite, resume) as tmp:
        skip = not force and has_classifier_head(teacher, data.num_labels)
        tokenizer = load_tokenizer(teacher)
        model = _task_model(teacher, data)
        train_ds = encode(data.train, tokenizer, cfg.max_length)
        if skip:
            console.print(f"{teacher} already has a {data.num_labels}-output head: fine-tuning skipped (--force to redo)")
            seconds = 0.0
        else:
            console.print(f"fine-tuning the teacher on {data.name} ({len(train_ds)} examples)")
            seconds = finetune(model, tokenizer, train_ds, cfg, tmp / "checkpoints", resume)
        metrics = evaluate_model(model, tokenizer, data, cfg.max_length)
        info = {
            "stage": "finetune",
            "teacher": str(teacher),
            "task": data.name,
            "data": data.source,
            "train_examples": len(train_ds),
            "config": cfg.to_dict(),
            "skipped": skip,
            "train_seconds": seconds,
            "parameters": count_parameters(model),
            "metrics": metrics,
        }
        save_model(model, tokenizer, tmp, info)
    return info


def _fingerprint(*parts) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def teacher_outputs_cached(teacher_dir: str, teacher, tokenizer, texts: datasets.Dataset, train_ds, max_length: int,
                           with_cls: bool, cache_dir: Path) -> tuple[datasets.Dataset, float]:
    """`train_ds` (`texts` tokenised) plus the teacher's outputs, computed once and stored under `cache_dir` (Arrow).

    Returns the dataset and the seconds spent computing the outputs (0 when they were cached)."""
    weights = sorted(Path(teacher_dir).glob("*.safetensors"))
    key = _fingerprint(
        [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in weights],
        list(texts["text"]), list(texts["text_pair"]) if "text_pair" in texts.column_names else None, max_length,
        train_ds.column_names, with_cls,
    )  # list(): a datasets Column's repr shows only its first rows
    path = Path(cache_dir) / f"teacher-outputs-{key}"
    if path.exists():
        console.print(f"teacher outputs: reusing {path}")
        return datasets.load_from_disk(str(path)), 0.0
    start = time.perf_counter()
    with_outputs = add_teacher_outputs(teacher, tokenizer, train_ds, with_cls=with_cls)
    tmp = path.with_name(path.name + ".partial")
    with_outputs.save_to_disk(str(tmp))
    tmp.rename(path)
    seconds = time.perf_counter() - start
    console.print(f"teacher outputs for {len(train_ds)} examples in {seconds:.0f}s → {path}")
    return datasets.load_from_disk(str(path)), seconds


def _neighbour_table(train: datasets.Dataset, tokenizer, teacher, dcfg) -> dict[str, list[str]] | None:
    """Replacement candidates for --augment-neighbours: each training word's nearest teacher-embedding tokens."""
    if not (dcfg.augment and dcfg.augment_neighbours):
        return None
    return embedding_neighbours(words_of(texts_of(train)), tokenizer.get_vocab(), teacher.get_input_embeddings().weight,
                                dcfg.augment_neighbours)


def distil_task(teacher: str, data: TaskData, cfg: TrainConfig, dcfg: DistillConfig, out: Path, cache_dir: Path,
                student: str | None = None, layers: str | None = None, num_layers: int | None = None,
                overwrite: bool = False, resume: bool = False) -> dict:
    """`distil task`: train a student on the fine-tuned teacher's cached outputs plus the gold labels."""
    if not has_classifier_head(teacher, data.num_labels):
        raise ModelError(f"{teacher} has no {data.num_labels}-output task head: fine-tune it first (distil finetune)")
    with atomic_output_dir(out, overwrite, resume) as tmp:
        tokenizer = load_tokenizer(teacher)
        teacher_model = _task_model(teacher, data).eval()
        if student is None:
            layer_map = choose_layers(teacher_depth(teacher_model.config), layers, num_layers)
            student_model = build_student(teacher_model, layer_map)
            origin = {"built_from": str(teacher), "layer_map": layer_map}
        else:
            student_model = _task_model(student, data)
            origin = {"student_init": str(student)}
        student_model.config.problem_type = teacher_model.config.problem_type
        inputs = data.train if data.unlabeled is None else datasets.concatenate_datasets([data.train, data.unlabeled])
        transfer = augment(inputs, dcfg.augment, cfg.seed,
                           neighbours=_neighbour_table(inputs, tokenizer, teacher_model, dcfg))
        perturbed = len(transfer) - len(inputs)
        if dcfg.mined_pairs:
            transfer = datasets.concatenate_datasets([transfer, mine_pairs(inputs, dcfg.mined_pairs, cfg.seed)])
        if dcfg.augment or dcfg.mined_pairs or data.unlabeled is not None:
            console.print(f"transfer set: {len(data.train)} labelled rows + {len(inputs) - len(data.train)} unlabelled + "
                          f"{perturbed} perturbed copies + {len(transfer) - len(inputs) - perturbed} mined pairs "
                          "(all but the first with teacher targets only)")
        train_ds = encode(transfer, tokenizer, cfg.max_length)
        with_outputs, teacher_seconds = teacher_outputs_cached(teacher, teacher_model, tokenizer, transfer, train_ds,
                                                               cfg.max_length, dcfg.cls_weight > 0, cache_dir)
        online = teacher_model if dcfg.online_teacher else None  # intermediate-layer losses: teacher runs online
        del teacher_model
        seconds = distill(student_model, tokenizer, with_outputs, cfg, dcfg, data.regression, tmp / "checkpoints", resume,
                          teacher=online)
        metrics = evaluate_model(student_model, tokenizer, data, cfg.max_length)
        info = {
            "stage": "task-distillation",
            "teacher": str(teacher),
            **origin,
            "task": data.name,
            "data": data.distillation_source,
            "train_examples": len(data.train),
            **({"unlabeled_examples": len(data.unlabeled)} if data.unlabeled is not None else {}),
            "transfer_examples": len(train_ds),
            "config": cfg.to_dict(),
            "distillation": dcfg.to_dict(),
            "train_seconds": seconds,
            "teacher_outputs_seconds": teacher_seconds,
            "parameters": count_parameters(student_model),
            "metrics": metrics,
        }
        save_model(student_model, tokenizer, tmp, info)
    return info


def train_baseline(student: str, data: TaskData, cfg: TrainConfig, out: Path, overwrite: bool = False,
                   resume: bool = False) -> dict:
    """The hard-label-only control: the same student init and steps, gold labels only."""
    with atomic_output_dir(out, overwrite, resume) as tmp:
        tokenizer = load_tokenizer(student)
        model = _task_model(student, data)
        train_ds = encode(data.train, tokenizer, cfg.max_length)
        seconds = finetune(model, tokenizer, train_ds, cfg, tmp / "checkpoints", resume)
        metrics = evaluate_model(model, tokenizer, data, cfg.max_length)
        info = {
            "stage": "baseline",
            "student_init": str(student),
            "task": data.name,
            "data": data.source,
            "train_examples": len(train_ds),
            "config": cfg.to_dict(),
            "train_seconds": seconds,
            "parameters": count_parameters(model),
            "metrics": metrics,
        }
        save_model(model, tokenizer, tmp, info)
    return info


def evaluate_folder(model_dir: str, data: TaskData, max_length: int = 128) -> dict:
    """`distil eval`: metrics of a saved task model on the task's dev split(s)."""
    model = load_classifier(model_dir)
    if model.config.num_labels != data.num_labels:
        raise ModelError(f"{model_dir} has {model.config.num_labels} outputs; task {data.name} needs {data.num_labels}")
    return evaluate_model(model, load_tokenizer(model_dir), data, max_length)


def stage_info(folder: Path) -> dict:
    return read_json(folder / "distil.json")


class StageConfigError(ValueError):
    """A finished stage folder was made with another configuration than the one asked for now."""


def _resolved_paths(value):
    """`value` with every string that names an existing file or folder made absolute (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: _resolved_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved_paths(v) for v in value]
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def reuse_or_run(folder: Path, expected: dict, build) -> dict:
    """Reuse the finished stage in `folder` when its distil.json holds `expected` (same teacher, data,
    config...), else run `build()` (which writes `folder` atomically and returns its distil.json).

    A folder made with other values is refused, naming the field that differs, so an interrupted
    suite resumes without redoing finished stages but never mixes two configurations."""
    record = Path(folder) / "distil.json"
    if not record.exists():
        return build()
    info = read_json(record)
    wanted = json.loads(json.dumps(expected, default=str))
    for key, value in wanted.items():
        found = info.get(key)
        if key == "data":  # ../shared/data/glue and /work/shared/data/glue are the same data
            found, value = _resolved_paths(found), _resolved_paths(value)
        if found != value:
            raise StageConfigError(
                f"{folder} holds a finished stage made with {key}={info.get(key)!r}, not {value!r}: "
                "remove that folder (or pass --overwrite) to redo it")
    console.print(f"[green]reusing finished stage {folder}")
    return info
