"""`distil glue`: the core pipeline over several GLUE tasks and seeds, scored like the DistilBERT paper.

OUT/<task>/seed-<s>/ holds one folder per stage (teacher, student_init, student, baseline,
compare-<name>); each is written atomically and reused when its distil.json matches the asked
configuration, so an interrupted suite resumes where it stopped. OUT/glue.json has, per model and
task, the metric values (mean over seeds, and each seed's), the task score and its spread; per model
the macro score; and `macro_retention` = student macro / teacher macro.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rich.console import Console

from ..artifacts import read_record, write_json
from ..data.glue import get_task
from ..data.task import TaskData, load_task_data
from ..deploy.size import model_size
from ..errors import ConfigError
from ..hardware import hardware, versions
from ..metrics import glue_score
from ..stages.task import task_stages
from ..train.common import TrainConfig, on_main
from ..train.task import DistillConfig
from .card import write_model_card
from .report import write_glue_report
from .sweep import check_sweep, run_sweep

console = Console(stderr=True)



@dataclass(kw_only=True)  # configs are built by keyword
class TaskRecipe:
    """How one task is trained: teacher fine-tuning, student distillation (and the baseline), data size."""

    teacher: TrainConfig
    student: TrainConfig
    distillation: DistillConfig = field(default_factory=DistillConfig)
    train_limit: int | None = None  # None: every training row
    unlabeled: str | None = None  # extra inputs for the student only the teacher labels: "test" or a file

    def to_dict(self) -> dict:
        return {"teacher": self.teacher.to_dict(), "student": self.student.to_dict(),
                "distillation": self.distillation.to_dict(), "train_limit": self.train_limit,
                **({"unlabeled": self.unlabeled} if self.unlabeled else {})}


def parse_per_task(spec: str | None, tasks: list[str], cast=float, option: str = "option") -> dict:
    """'3' → every task 3; '3,sst2=1' → sst2 1, others 3; 'cola=5' → cola 5, others unset (absent)."""
    out: dict = {}
    if spec is None or spec == "":
        return out
    default = None
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        name, sep, value = part.partition("=")
        task = get_task(name.strip()).name if sep else None
        if task is not None and task not in tasks:
            raise ConfigError(f"{option}: task {task!r} is not among --tasks ({', '.join(tasks)})")
        try:
            number = cast(value if sep else part)
        except ValueError:
            raise ConfigError(f"{option}: cannot read {part!r} (expected VALUE or TASK=VALUE, comma-separated)") from None
        if task is None:
            default = number
        else:
            out[task] = number
    if default is not None:
        for task in tasks:
            out.setdefault(task, default)
    return out


def _seed_dir(out: Path, task: str, seed: int) -> Path:
    return Path(out) / task / f"seed-{seed}"


def run_task_seed(teacher: str, data: TaskData, recipe: TaskRecipe, folder: Path, cache_dir: Path,
                  layers: str | None, num_layers: int | None, baseline: bool, compare: dict[str, str],
                  trim=None, width=None) -> dict:
    """Every stage of one (task, seed) into `folder`, and the student's model card; returns {model: distil.json}."""
    infos = task_stages(teacher, data, recipe.teacher, recipe.student, recipe.distillation, folder, cache_dir,
                        layers, num_layers, baseline, compare, trim=trim, width=width)
    on_main(lambda: write_model_card(folder / "student", infos["teacher"]["metrics"]))
    return infos


def summarize(runs: dict[str, dict[int, dict[str, dict]]], tasks: list[str]) -> dict:
    """glue.json's "models" and retention from {task: {seed: {model: distil.json}}}.

    Per model and task: metric means over seeds, the score (mean of the metrics) with its spread
    (sample std over seeds, 0 for one seed) and each seed's values; per model the macro score
    (mean of task scores) and the spread of the per-seed macro."""
    names = list(next(iter(next(iter(runs.values())).values())))
    models = {}
    for name in names:
        per_task, params = {}, None
        for task in tasks:
            seeds = runs[task]
            seed_metrics = {s: seeds[s][name]["metrics"] for s in seeds}
            keys = [k for k in next(iter(seed_metrics.values())) if k != "score"]
            scores = [m["score"] for m in seed_metrics.values()]
            per_task[task] = {
                **{k: float(np.mean([m[k] for m in seed_metrics.values()])) for k in keys},
                "score": float(np.mean(scores)),
                "score_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                "seeds": {str(s): m for s, m in seed_metrics.items()},
            }
            params = params or next(iter(seeds.values()))[name]["parameters"]
        seed_list = list(next(iter(runs.values())))
        macros = [glue_score({t: runs[t][s][name]["metrics"]["score"] for t in tasks}) for s in seed_list]
        models[name] = {"tasks": per_task, "macro": glue_score({t: per_task[t]["score"] for t in tasks}),
                        "macro_std": float(np.std(macros, ddof=1)) if len(macros) > 1 else 0.0,
                        "parameters": params}
    teacher = models["teacher"]
    retention = {name: {**{t: m["tasks"][t]["score"] / teacher["tasks"][t]["score"] for t in tasks},
                        "macro": m["macro"] / teacher["macro"]}
                 for name, m in models.items() if name != "teacher"}
    return {"models": models, "retention": retention}


def run_glue(teacher: str, tasks: list[str], out: Path, recipes: dict[str, TaskRecipe], data_dir: str | Path | None = None,
             seeds: list[int] = (42,), layers: str | None = None, num_layers: int | None = None, baseline: bool = True,
             compare: dict[str, str] | None = None, dev_limit: int | None = None, sweep_depths: list[int] | None = None,
             sweep_task: str = "sst2", sweep_precisions: list[str] = ("fp32", "int8"),
             sweep_options: dict | None = None, overwrite: bool = False, trim=None, width=None,
             size: bool = False) -> dict:
    """Run (or resume) the suite into OUT and write OUT/glue.json, glue.md, report.md and plots.

    With `sweep_depths`, also run `sweep.run_sweep` (keyword `sweep_options`: seq, repeats, tolerance...)
    from the `sweep_task` teacher of the first seed into OUT/sweep, and put its frontier in the report.
    Options are checked before any work; then `overwrite` deletes OUT (else the suite resumes in it). With `size`,
    the teacher and student of the first task and seed are exported and sized (deploy/size.py) into glue.json's
    "size" (the other tasks' models differ from them in the classifier head only)."""
    start = time.perf_counter()
    out = Path(out)
    tasks = [get_task(t).name for t in tasks]
    compare = dict(compare or {})
    clash = {"teacher", "student", "baseline", "student_init"} & set(compare)
    if clash:
        raise ConfigError(f"--compare name {sorted(clash)[0]!r} is taken by a suite model: choose another NAME=PATH")
    if sweep_depths and get_task(sweep_task).name not in tasks:
        raise ConfigError(f"--sweep-task {sweep_task} is not among --tasks ({', '.join(tasks)})")
    if sweep_depths:  # the fine-tuned teachers the sweep starts from have the depth of `teacher`
        check_sweep(teacher, list(sweep_depths), list(sweep_precisions), prefix="sweep-")

    def start_out() -> None:  # the main process only, under torchrun
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)

    on_main(start_out)
    runs: dict[str, dict[int, dict]] = {}
    data_info, loaded = {}, {}
    for t_index, task in enumerate(tasks, 1):
        recipe = recipes[task]
        data = loaded[task] = load_task_data(task, data_dir, train_limit=recipe.train_limit, dev_limit=dev_limit,
                                             unlabeled=recipe.unlabeled)
        data_info[task] = {"source": data.distillation_source, "train_examples": len(data.train),
                           "dev_examples": {k: len(v) for k, v in data.dev.items()}}
        runs[task] = {}
        for seed in seeds:
            console.rule(f"[bold]{task}[/] ({t_index}/{len(tasks)}), seed {seed}")
            seeded = replace(recipe, teacher=replace(recipe.teacher, seed=seed),
                             student=replace(recipe.student, seed=seed))
            runs[task][seed] = run_task_seed(teacher, data, seeded, _seed_dir(out, task, seed), out / "cache",
                                             layers, num_layers, baseline, compare, trim, width)
    summary = summarize(runs, tasks)
    sweep = None
    if sweep_depths:
        task = get_task(sweep_task).name
        console.rule(f"[bold]sweep[/]: {task}, depths {sweep_depths}, {', '.join(sweep_precisions)}")
        recipe = recipes[task]
        sweep = run_sweep(str(_seed_dir(out, task, seeds[0]) / "teacher"), loaded[task], list(sweep_depths), out / "sweep",
                          replace(recipe.student, seed=seeds[0]), recipe.distillation, out / "cache",
                          precisions=tuple(sweep_precisions), **(sweep_options or {}))
    sizes = None
    if size:
        first = _seed_dir(out, tasks[0], seeds[0])
        sizes = {"measured_on": f"{tasks[0]}/seed-{seeds[0]}",
                 **{name: model_size(first / name) for name in ("teacher", "student")}}
        write_model_card(first / "student", runs[tasks[0]][seeds[0]]["teacher"]["metrics"])  # now with its size
    glue = {
        "teacher": teacher,
        "tasks": tasks,
        "seeds": list(seeds),
        "layer_map": read_record(_seed_dir(out, tasks[0], seeds[0]) / "student_init")["layer_map"],
        "data": data_info,
        **summary,
        "macro_retention": summary["retention"]["student"]["macro"],
        "recipes": {t: recipes[t].to_dict() for t in tasks},
        "compare": compare,
        **({"size": sizes} if sizes else {}),
        "sweep": None if sweep is None else {"task": get_task(sweep_task).name, "file": str(out / "sweep" / "sweep.json"),
                                             "frontier": sweep.get("frontier")},
        "train_seconds": {t: {str(s): {m: info.get("train_seconds", 0.0) for m, info in runs[t][s].items()}
                              for s in seeds} for t in tasks},
        "wall_seconds_this_call": time.perf_counter() - start,
        "hardware": hardware(),
        "versions": versions(),
    }
    on_main(lambda: (write_json(out / "glue.json", glue), write_glue_report(glue, out)))
    console.print(f"[bold]macro retention {glue['macro_retention'] * 100:.1f}%[/]: {out}/glue.json, {out}/report.md")
    return glue


# Defaults per task. SST-2, MRPC, STS-B and CoLA get the recipe measured in the README ("GLUE suite"),
# chosen on their dev sets on 2 CPU cores: stronger teachers (lr 1e-4, 4-5 epochs on the small tasks),
# students trained longer at lr 1e-4 on a transfer set with perturbed copies (`augment`) and, on STS-B
# and CoLA, the intermediate-layer loss; STS-B's replaced words are teacher-embedding neighbours, and
# MRPC and STS-B get 2 mined pairs per row (new pairs of their own sentences, scored by the teacher).
# SST-2 is cut to 20k rows so the suite fits the 2-core budget.
# Other tasks get the generic recipe ("_"). Each value can be overridden on the command line.
DEFAULTS = {
    "teacher_epochs": {"sst2": 1.0, "mrpc": 4.0, "stsb": 4.0, "cola": 5.0, "_": 3.0},
    "teacher_lr": {"mrpc": 1e-4, "stsb": 1e-4, "cola": 1e-4, "_": 5e-5},
    "epochs": {"sst2": 3.0, "stsb": 2.0, "_": 3.0},
    "lr": {"sst2": 1e-4, "mrpc": 1e-4, "stsb": 1e-4, "cola": 1e-4, "_": 5e-5},
    "alpha": {"_": 0.5},
    "temperature": {"_": 2.0},
    "cls_weight": {"_": 0.0},
    "augment": {"mrpc": 2, "stsb": 4, "cola": 4, "_": 0},
    "hidden_weight": {"stsb": 1.0, "cola": 1.0, "_": 0.0},
    "augment_neighbours": {"stsb": 8, "_": 0},
    "attention_weight": {"_": 0.0},
    "train_limit": {"sst2": 20000, "_": 0},
    "unlabeled": {"_": ""},
    "mined_pairs": {"mrpc": 2, "stsb": 2, "_": 0},
}


DISTILLATION_KEYS = ("alpha", "temperature", "cls_weight", "augment", "hidden_weight", "augment_neighbours",
                     "attention_weight", "mined_pairs")  # DEFAULTS' keys that are DistillConfig fields


def build_recipes(tasks: list[str], overrides: dict[str, str | None], batch_size: int = 32, max_length: int = 128,
                  bf16: bool | None = None) -> dict[str, TaskRecipe]:
    """One TaskRecipe per task from DEFAULTS and per-task override strings ('3,sst2=1')."""
    values = {}
    for key, defaults in DEFAULTS.items():
        integer = key in ("train_limit", "augment", "augment_neighbours", "mined_pairs")
        cast = int if integer else str if key == "unlabeled" else float
        given = parse_per_task(overrides.get(key), tasks, cast, "--" + key.replace("_", "-"))
        values[key] = {t: given.get(t, defaults.get(t, defaults["_"])) for t in tasks}
    single = [t for t in tasks if values["mined_pairs"][t] and get_task(t).text_pair_column is None]
    if single:
        raise ConfigError(f"--mined-pairs: {', '.join(single)} has one text per row; mined pairs need a pair task")
    recipes = {}
    for t in tasks:
        def cfg(epochs, lr):
            return TrainConfig(epochs=epochs, learning_rate=lr, batch_size=batch_size, max_length=max_length, bf16=bf16)
        recipes[t] = TaskRecipe(
            teacher=cfg(values["teacher_epochs"][t], values["teacher_lr"][t]),
            student=cfg(values["epochs"][t], values["lr"][t]),
            distillation=DistillConfig(**{k: values[k][t] for k in DISTILLATION_KEYS}),
            train_limit=values["train_limit"][t] or None,
            unlabeled=values["unlabeled"][t] or None,
        )
    return recipes
