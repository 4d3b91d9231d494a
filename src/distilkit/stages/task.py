"""Task stages, each reading and writing plain model folders: the student built from the teacher, the teacher
fine-tuned on the task, task distillation, the hard-label baseline; and `task_stages`, all of them into one folder.

A stage folder is a `save_pretrained` model + tokenizer (safetensors) and `distil.json` (what made it: inputs,
config, metrics, seconds, versions). Stages write to a temporary folder and rename it into place, so a folder
that exists is a finished stage. A training stage checkpoints into TMP/checkpoints; with `resume` an interrupted
one continues from its last complete checkpoint exactly as if never stopped (same seed: same data order, dropout,
perturbed copies and mined pairs), and its log of every logged step is kept as train_log.json.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import datasets
from rich.console import Console
from transformers import set_seed

from ..artifacts import fingerprint, read_record, write_json
from ..data.augment import augment, embedding_neighbours, mine_pairs, texts_of, words_of
from ..data.task import TaskData, load_task_data
from ..errors import ConfigError
from ..models.families import check_attention
from ..models.folders import ModelError, has_classifier_head, load_config, load_tokenizer, supported_config
from ..models.loading import count_parameters, load_any, load_classifier, save_model
from ..models.student import build_student, choose_layer_map
from ..tags import MULTI_LABEL
from ..models.narrow import Width, narrow_student
from ..models.vocab import VocabTrim
from ..train.common import TrainConfig, encode, on_main, pad_batch, stage_output
from ..train.task import DistillConfig, TrainRun, add_teacher_outputs, distill, finetune
from .evaluate import evaluate_model
from .reuse import reuse_or_run
from .vocab import dev_texts, save_vocab_file, student_dataset, task_texts, teacher_on_student_ids, trim_student

console = Console(stderr=True)


def training_data(teacher: str, task: str | None = None, data_dir: str | Path | None = None,
                  train_file: str | Path | None = None, dev_file: str | Path | None = None, text_column: str = "text",
                  text_pair_column: str | None = None, label_column: str = "label", train_limit: int | None = None,
                  dev_limit: int | None = None) -> TaskData:
    """The data to distil a fine-tuned teacher's task on: the files or GLUE task given, else the data its
    distil.json records (the user's own train and dev files with their columns, or its GLUE task), else SST-2."""
    recorded = read_record(teacher).get("data", {})
    if train_file is None and task is None and "train_file" in recorded and "text_column" in recorded:
        train_file, dev_file = recorded["train_file"], recorded["dev_file"]
        text_column, label_column = recorded["text_column"], recorded["label_column"]
        text_pair_column = recorded.get("text_pair_column")
        task = read_record(teacher).get("task")
        regression = bool(recorded.get("regression"))
        positive_label = recorded.get("positive_label")  # the teacher's label order
    else:
        task = task or (recorded.get("glue_task") if train_file is None else None) or "sst2"
        regression, positive_label = False, None
    return load_task_data(task=task, data_dir=data_dir, train_file=train_file, dev_file=dev_file,
                          text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                          regression=regression, train_limit=train_limit, dev_limit=dev_limit,
                          positive_label=positive_label)


def _label_maps(data: TaskData) -> dict | None:
    return None if data.regression else dict(enumerate(data.label_names))


def problem_type(data: TaskData) -> str:
    """The model config's `problem_type` for `data` (transformers picks the fine-tuning loss by it)."""
    return "regression" if data.regression else MULTI_LABEL if data.multi_label else "single_label_classification"


def _other_kind(path: str, data: TaskData) -> str | None:
    """Why the task model at `path` does not fit `data` (trained for tags on single-label data, or the other
    way round), or None when it fits or its config does not say."""
    recorded = load_config(path).problem_type
    if (recorded == MULTI_LABEL) == data.multi_label or recorded not in (MULTI_LABEL, "single_label_classification"):
        return None
    kind = "multi-label (tags)" if recorded == MULTI_LABEL else "single-label"
    hint = "drop --multi-label" if recorded == MULTI_LABEL else "fine-tune it with --multi-label"
    return f"{path} is a {kind} classifier, but {data.name} is {'multi' if data.multi_label else 'single'}-label: {hint}"


def _task_model(path: str, data: TaskData):
    """A classifier (or regressor) for `data`, with a new head when the folder has none that fits."""
    model = load_classifier(path, num_labels=data.num_labels, id2label=_label_maps(data))
    model.config.problem_type = problem_type(data)
    return model


def _trained(tmp: Path, run: TrainRun | None) -> dict:
    """After a stage's training and evaluation: its checkpoints removed, its log written to train_log.json;
    returns what distil.json records of the run."""
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    if run is None:  # nothing trained
        return {"train_seconds": 0.0}
    write_json(tmp / "train_log.json", {"steps": run.steps, "resumed_from": run.resumed_from,
                                        "log_history": run.log_history})
    return run.record()


def make_student(teacher: str, out: Path, layers: str | None = None, num_layers: int | None = None,
                 overwrite: bool = False, trim: VocabTrim | None = None, data: TaskData | None = None,
                 width: Width | None = None) -> dict:
    """`distil student`: copy chosen teacher layers into a smaller model; returns distil.json.
    With `trim`, the vocabulary of `data`'s training texts and trim.corpus only (models/vocab.py); with `width`
    (hidden size, intermediate size, heads), the teacher's most important dimensions only (models/narrow.py)."""
    config = supported_config(teacher)
    layer_map = choose_layer_map(config, layers, num_layers)
    with stage_output(out, overwrite) as tmp:
        return on_main(lambda: _make_student(teacher, config, layer_map, tmp, trim, data, width), share=True)


def _make_student(teacher: str, config, layer_map: list[int], tmp: Path, trim: VocabTrim | None, data: TaskData | None,
                  width: Width | None) -> dict:
    """`make_student`'s work, written into `tmp` (by the main process only under torchrun)."""
    teacher_model = load_any(teacher)
    student = build_student(teacher_model, layer_map)
    tokenizer, vocab, narrowed = load_tokenizer(teacher), None, None
    if width is not None:
        student, narrowed = narrow(student, width, data=data, tokenizer=tokenizer)
    if trim is not None:
        student, tokenizer, vocab = trim_student(student, tokenizer, trim, task_texts(data), dev_texts(data),
                                                 say=console.print)
    params = {"teacher": count_parameters(teacher_model), "student": count_parameters(student)}
    info = {
        "stage": "student",
        "teacher": str(teacher),
        "teacher_type": config.model_type,
        "student_type": student.config.model_type,
        "layer_map": layer_map,
        "parameters": params,
        **({"trim_vocab": trim.to_dict(), "vocab": vocab} if vocab else {}),
        **({"width": width.to_dict(), "narrow": narrowed} if narrowed else {}),
    }
    save_model(student, tokenizer, tmp, info)
    save_vocab_file(tmp, tokenizer, vocab)
    return info


def score_batches(data: TaskData, tokenizer, rows: int, max_length: int = 128, batch_size: int = 32) -> list[dict]:
    """A fixed random sample of `rows` training rows of `data`, tokenised and padded in batches (input_ids,
    attention_mask): what a narrow student's dims are scored on (models/narrow.py, activation_scores)."""
    train = data.train.shuffle(seed=0).select(range(min(rows, len(data.train))))
    ids = encode(train, tokenizer, max_length)["input_ids"]
    return [dict(zip(("input_ids", "attention_mask"), pad_batch(ids[i:i + batch_size], tokenizer.pad_token_id)))
            for i in range(0, len(ids), batch_size)]


def narrow(student, width: Width, copied: list[int] | None = None, data: TaskData | None = None, tokenizer=None,
           max_length: int = 128) -> tuple[object, dict]:
    """(`student` narrowed to `width`, distil.json's "narrow": the sizes, the score, and the teacher dimension each
    hidden dimension was copied from, through `copied` when the student was narrowed before). With
    width.score_rows and `data`, the dims are scored by their activations on that many training rows read through
    `tokenizer`, else by weight magnitude."""
    use_data = width.score_rows > 0 and data is not None
    batches = score_batches(data, tokenizer, width.score_rows, max_length) if use_data else None
    student, dims = narrow_student(student, width.hidden_size, width.intermediate_size, width.heads, batches)
    hidden = dims["hidden"] if copied is None else [copied[i] for i in dims["hidden"]]
    rows = sum(len(b["input_ids"]) for b in batches) if use_data else 0
    score = f"activations on {rows} training rows" if use_data else "weight magnitude"
    return student, {**width.to_dict(), "score": score, "hidden_dims": hidden}


def finetune_teacher(teacher: str, data: TaskData, cfg: TrainConfig, out: Path, overwrite: bool = False,
                     resume: bool = False, force: bool = False) -> dict:
    """`distil finetune`: train the teacher on the task (skipped when it already has a fitting head)."""
    supported_config(teacher)
    with stage_output(out, overwrite, resume) as tmp:
        skip = not force and has_classifier_head(teacher, data.num_labels) and _other_kind(teacher, data) is None
        tokenizer = load_tokenizer(teacher)
        set_seed(cfg.seed)  # a new head starts the same in every run of this configuration
        model = _task_model(teacher, data)
        train_ds = encode(data.train, tokenizer, cfg.max_length)
        if skip:
            console.print(f"{teacher} already has a {data.num_labels}-output head: fine-tuning skipped (--force to redo)")
            run = None
        else:
            console.print(f"fine-tuning the teacher on {data.name} ({len(train_ds)} examples)")
            run = finetune(model, tokenizer, train_ds, cfg, tmp / "checkpoints", resume)

        record = {"stage": "finetune", "teacher": str(teacher)}
        return on_main(lambda: _evaluate_and_save(model, tokenizer, data, cfg, train_ds, tmp, run, record,
                                                  {"skipped": skip}), share=True)


def teacher_outputs_cached(teacher_dir: str, teacher, tokenizer, texts: datasets.Dataset, train_ds, max_length: int,
                           with_cls: bool, cache_dir: Path) -> tuple[datasets.Dataset, float]:
    """`train_ds` (`texts` tokenised) plus the teacher's outputs, computed once and stored under `cache_dir` (Arrow).
    Under torchrun every process computes a share of the rows and the main process writes the cache.

    Returns the dataset and the seconds spent computing the outputs (0 when they were cached)."""
    key = fingerprint(list(texts["text"]), list(texts["text_pair"]) if "text_pair" in texts.column_names else None,
                      max_length, train_ds.column_names, with_cls,  # list(): a Column's repr shows only its first rows
                      files=sorted(Path(teacher_dir).glob("*.safetensors")))
    path = Path(cache_dir) / f"teacher-outputs-{key}"
    if on_main(path.exists, share=True):
        console.print(f"teacher outputs: reusing {path}")
        return datasets.load_from_disk(str(path)), 0.0
    start = time.perf_counter()
    with_outputs = add_teacher_outputs(teacher, tokenizer, train_ds, with_cls=with_cls)  # sharded under torchrun

    def save() -> None:  # the main process, which gathered every row
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        with_outputs.save_to_disk(str(tmp))
        tmp.rename(path)

    on_main(save)
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
                overwrite: bool = False, resume: bool = False, trim: VocabTrim | None = None,
                width: Width | None = None) -> dict:
    """`distil task`: train a student on the fine-tuned teacher's cached outputs plus the gold labels.

    With `width`, the student is first narrowed (models/narrow.py); a narrower student's hidden-state loss goes
    through learned projections (train/task.py).

    A student with a trimmed vocabulary (`trim`, or a --student made so) reads the texts through its own
    tokenizer; the teacher's outputs are still computed on the teacher's tokens."""
    configs = [supported_config(teacher)] + ([supported_config(student)] if student is not None else [])
    if dcfg.attention_weight > 0:  # refused by family before any work, not in the middle of training
        for config in configs:
            check_attention(config, "--attention-weight")
    if not has_classifier_head(teacher, data.num_labels):
        raise ModelError(f"{teacher} has no {data.num_labels}-output task head: fine-tune it first (distil finetune)")
    if (mismatch := _other_kind(teacher, data)) is not None:
        raise ModelError(mismatch)
    if dcfg.mined_pairs and not data.is_pair:
        raise ConfigError(f"--mined-pairs {dcfg.mined_pairs}: {data.name} has one text per row; mined pairs need a "
                          "pair task (columns text and text_pair)")
    with stage_output(out, overwrite, resume) as tmp:
        tokenizer = load_tokenizer(teacher)
        set_seed(cfg.seed)  # a new head starts the same in every run of this configuration
        teacher_model = _task_model(teacher, data).eval()
        if student is None:
            layer_map = choose_layer_map(teacher_model.config, layers, num_layers)
            student_model = build_student(teacher_model, layer_map)
            origin = {"built_from": str(teacher), "layer_map": layer_map}
        else:
            student_model = _task_model(student, data)
            origin = {"student_init": str(student)}
        student_tokenizer = tokenizer if student is None else load_tokenizer(student)
        vocab = None if student is None else read_record(student).get("vocab")
        copied_dims = None if student is None else (read_record(student).get("narrow") or {}).get("hidden_dims")
        narrowed = None
        if width is not None:
            student_model, narrowed = narrow(student_model, width, copied_dims, data, student_tokenizer, cfg.max_length)
            copied_dims = narrowed["hidden_dims"]
        if trim is not None:
            student_model, student_tokenizer, vocab = trim_student(student_model, student_tokenizer, trim,
                                                                   task_texts(data), dev_texts(data), say=console.print)
        student_model.config.problem_type = teacher_model.config.problem_type
        widths = student_model.config.hidden_size, teacher_model.config.hidden_size
        if dcfg.cls_weight > 0 and widths[0] != widths[1]:
            raise ConfigError(f"--cls-weight compares [CLS] states of one width: the student is {widths[0]} wide, "
                              f"the teacher {widths[1]}; use --hidden-weight (through a learned projection)")
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
        student_rows, pad_tokenizer = student_dataset(with_outputs, transfer, tokenizer, student_tokenizer,
                                                      cfg.max_length)
        online = (teacher_on_student_ids(teacher_model, tokenizer, student_tokenizer)  # intermediate-layer losses:
                  if dcfg.online_teacher else None)  # the teacher runs online, on the student's tokens
        del teacher_model
        run = distill(student_model, pad_tokenizer, student_rows, cfg, dcfg, data.regression, tmp / "checkpoints",
                      resume, teacher=online, multi_label=data.multi_label, projection_dims=copied_dims)

        def finish() -> dict:  # the main process: evaluate, write
            metrics = evaluate_model(student_model, student_tokenizer, data, cfg.max_length)
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
                **_trained(tmp, run),
                "teacher_outputs_seconds": teacher_seconds,
                "parameters": count_parameters(student_model),
                **({"vocab": vocab} if vocab else {}),
                **({"width": width.to_dict(), "narrow": narrowed} if narrowed else {}),
                "metrics": metrics,
            }
            save_model(student_model, student_tokenizer, tmp, info)
            save_vocab_file(tmp, student_tokenizer, vocab)
            return info

        return on_main(finish, share=True)


def train_baseline(student: str, data: TaskData, cfg: TrainConfig, out: Path, overwrite: bool = False,
                   resume: bool = False) -> dict:
    """The hard-label-only control: the same student init and steps, gold labels only."""
    supported_config(student)
    with stage_output(out, overwrite, resume) as tmp:
        tokenizer = load_tokenizer(student)
        set_seed(cfg.seed)  # a new head starts the same in every run of this configuration
        model = _task_model(student, data)
        train_ds = encode(data.train, tokenizer, cfg.max_length)
        run = finetune(model, tokenizer, train_ds, cfg, tmp / "checkpoints", resume)

        record = {"stage": "baseline", "student_init": str(student)}
        return on_main(lambda: _evaluate_and_save(model, tokenizer, data, cfg, train_ds, tmp, run, record), share=True)


def _evaluate_and_save(model, tokenizer, data: TaskData, cfg: TrainConfig, train_ds, tmp: Path, run, record: dict,
                       extra: dict | None = None) -> dict:
    """A fine-tuned model's dev metrics and distil.json (`record`'s fields first, `extra` after the config), saved
    into `tmp` with the model (the main process's part of `finetune_teacher` and `train_baseline`)."""
    info = {**record, "task": data.name, "data": data.source, "train_examples": len(train_ds),
            "config": cfg.to_dict(), **(extra or {}), **_trained(tmp, run), "parameters": count_parameters(model),
            "metrics": evaluate_model(model, tokenizer, data, cfg.max_length)}
    save_model(model, tokenizer, tmp, info)
    return info


def task_stages(teacher: str, data: TaskData, teacher_cfg: TrainConfig, student_cfg: TrainConfig, dcfg: DistillConfig,
                folder: Path, cache_dir: Path, layers: str | None = None, num_layers: int | None = None,
                baseline: bool = True, compare: dict[str, str] | None = None, resume: bool = True,
                trim: VocabTrim | None = None, width: Width | None = None) -> dict[str, dict]:
    """Every stage of one task into `folder`: teacher/ (fine-tuned), student_init/ (built from it), student/
    (distilled), baseline/ (gold labels only) and compare-NAME/ (another model fine-tuned like the teacher).

    Each finished stage is reused when its distil.json was made with the same configuration (and refused,
    naming the field, when not), so an interrupted run resumes without mixing two configurations.
    Returns {model name: distil.json} for teacher, student, baseline and the compared models."""
    supported_config(teacher)  # an unsupported family is refused by name before any stage runs
    folder = Path(folder)
    common = {"task": data.name, "data": data.source, "train_examples": len(data.train)}
    teacher_dir, init_dir, student_dir = folder / "teacher", folder / "student_init", folder / "student"
    infos = {"teacher": reuse_or_run(
        teacher_dir, {"stage": "finetune", "teacher": teacher, **common, "config": teacher_cfg.to_dict()},
        lambda: finetune_teacher(teacher, data, teacher_cfg, teacher_dir, resume=resume))}
    layer_map = choose_layer_map(supported_config(teacher_dir), layers, num_layers)
    trimmed = trim.to_dict() if trim else None  # absent (None) in an untrimmed init's record
    narrowed = width.to_dict() if width else None  # absent in a full-width init's record
    reuse_or_run(init_dir, {"stage": "student", "teacher": str(teacher_dir), "layer_map": layer_map,
                            "trim_vocab": trimmed, "width": narrowed},
                 lambda: make_student(str(teacher_dir), init_dir, layers, num_layers, trim=trim, data=data,
                                      width=width))
    infos["student"] = reuse_or_run(
        student_dir,
        {"stage": "task-distillation", "teacher": str(teacher_dir), "student_init": str(init_dir), **common,
         "data": data.distillation_source, "config": student_cfg.to_dict(), "distillation": dcfg.to_dict()},
        lambda: distil_task(str(teacher_dir), data, student_cfg, dcfg, student_dir, cache_dir,
                            student=str(init_dir), resume=resume))
    if baseline:
        baseline_dir = folder / "baseline"
        infos["baseline"] = reuse_or_run(
            baseline_dir, {"stage": "baseline", "student_init": str(init_dir), **common,
                           "config": student_cfg.to_dict()},
            lambda: train_baseline(str(init_dir), data, student_cfg, baseline_dir, resume=resume))
    for name, path in (compare or {}).items():
        other_dir = folder / f"compare-{name}"
        infos[name] = reuse_or_run(
            other_dir, {"stage": "finetune", "teacher": path, **common, "config": teacher_cfg.to_dict()},
            lambda path=path, other_dir=other_dir: finetune_teacher(path, data, teacher_cfg, other_dir,
                                                                    resume=resume))
    return infos
