"""A Hugging Face model card (README.md) for a distilled student folder, from its distil.json.

The YAML metadata (language, library, pipeline tag, datasets, base model, model-index) is built with
huggingface_hub's ModelCardData and EvalResult, so the Hub reads the dev-set results as they are in
distil.json; the markdown body says what the model is, how it was trained and what it is not good for.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..artifacts import read_json, read_record, write_text
from ..deploy.size import read_size
from ..errors import UserError

# our metric names → Hub metric types (https://hf.co/metrics)
HUB_METRICS = {"accuracy": "accuracy", "f1": "f1", "mcc": "matthews_correlation", "pearson": "pearsonr",
               "spearman": "spearmanr"}
REQUIRED = ("teacher", "task", "metrics")
TAGS = ["distilkit", "distillation", "knowledge-distillation"]


class CardError(UserError):
    """A student folder whose distil.json cannot make a model card."""


def card_record(student_dir: Path) -> dict:
    """The folder's distil.json, checked for the fields a card needs."""
    path = Path(student_dir) / "distil.json"
    info = read_record(student_dir)
    if not info:
        raise CardError(f"{path} not found: a model card is made from a distilled student folder (distil task)")
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise CardError(f"{path} has no {', '.join(repr(k) for k in missing)} field: cannot write a model card "
                        "(is it a finished task-distillation folder?)")
    return info


def is_hub_id(name: str) -> bool:
    """True for a Hub model id (`bert-base-uncased`, `org/model`), False for a local folder."""
    if Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def split_metric(name: str) -> tuple[str | None, str]:
    """`dev_matched_accuracy` → (`validation_matched`, `accuracy`); `accuracy` → (None, `accuracy`)."""
    for metric in HUB_METRICS:
        if name == metric:
            return None, metric
        if name.endswith("_" + metric):
            return name[: -len(metric) - 1].replace("dev", "validation", 1), metric
    return None, name


def eval_results(info: dict) -> list[EvalResult]:
    """One EvalResult per dev metric in distil.json (the mean `score` is ours, not a Hub metric)."""
    glue_task = info.get("data", {}).get("glue_task")
    out = []
    for name, value in info["metrics"].items():
        split, metric = split_metric(name)
        if metric not in HUB_METRICS:
            continue
        out.append(EvalResult(
            task_type="text-classification", task_name="Text Classification",
            dataset_type="nyu-mll/glue" if glue_task else info["task"],
            dataset_name=f"GLUE {glue_task.upper()}" if glue_task else info["task"],
            dataset_config=glue_task, dataset_split=split or "validation",
            metric_type=HUB_METRICS[metric], metric_name=name, metric_value=value))
    return out


def teacher_license(teacher: str) -> str | None:
    """The license in a local teacher folder's own model card, when it has one."""
    readme = Path(teacher) / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except (ValueError, OSError):
        return None


def card_data(info: dict, name: str) -> ModelCardData:
    teacher = str(info["teacher"])
    glue = "glue_task" in info.get("data", {})
    return ModelCardData(
        language="en", license=teacher_license(teacher), library_name="transformers",
        pipeline_tag="text-classification", tags=TAGS, datasets=["nyu-mll/glue"] if glue else None,
        base_model=teacher if is_hub_id(teacher) else None, model_name=name, eval_results=eval_results(info) or None)


def _depth(config: dict) -> int | None:
    return config.get("n_layers") or config.get("num_hidden_layers")


def _layer_map(info: dict) -> list[int] | None:
    if "layer_map" in info:
        return info["layer_map"]
    init = Path(str(info["student_init"])) / "distil.json" if "student_init" in info else None
    return read_json(init).get("layer_map") if init and init.is_file() else None


def teacher_parameters(teacher: str) -> int | None:
    """Total parameters of a local teacher: its distil.json, else its safetensors headers."""
    folder = Path(teacher)
    if (folder / "distil.json").is_file():
        params = read_json(folder / "distil.json").get("parameters")
        if isinstance(params, dict) and "total" in params:
            return params["total"]
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(str(path), "np") as fh:
            for key in fh.keys():
                n = 1
                for dim in fh.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n:,}"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


def metrics_table(student: dict, teacher: dict | None) -> list[str]:
    names = list(student)
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
             "| student | " + " | ".join(_pct(student[n]) for n in names) + " |"]
    if teacher:
        lines.append("| teacher | " + " | ".join(_pct(teacher[n]) if n in teacher else "" for n in names) + " |")
        lines.append("| retention | " + " | ".join(
            f"{student[n] / teacher[n] * 100:.1f}%" if teacher.get(n) else "" for n in names) + " |")
    return lines


def _data_source(data: dict) -> str:
    if "glue_task" in data:
        where = data.get("data_dir", "")
        origin = "the Hub" if where.startswith("hub:") else f"local glue_data files ({where})"
        return f"GLUE {data['glue_task'].upper()} ([nyu-mll/glue](https://huggingface.co/datasets/nyu-mll/glue)), from {origin}"
    return ", ".join(f"{k}: `{v}`" for k, v in data.items()) or "not recorded"


def _loss(info: dict, regression: bool) -> str:
    d = info.get("distillation") or {}
    if regression:
        loss = f"L = {d.get('alpha')}·MSE(student, teacher) + (1 − {d.get('alpha')})·MSE(student, gold)"
    elif (info.get("data") or {}).get("multi_label"):
        loss = (f"multi-label (one sigmoid per tag): L = α·T²·BCE(student at temperature T, sigmoid(teacher logits / T)) "
                f"+ (1 − α)·BCE(student, gold tags) with α = {d.get('alpha')}, T = {d.get('temperature')}")
    else:
        loss = (f"L = α·T²·KL(teacher ‖ student at temperature T) + (1 − α)·CE(student, gold) with "
                f"α = {d.get('alpha')}, T = {d.get('temperature')}")
    if d.get("cls_weight"):
        loss += f", plus {d['cls_weight']}·(1 − cos) between the student's and the teacher's final [CLS] states"
    if d.get("hidden_weight"):
        loss += (f", plus {d['hidden_weight']}·MSE between the student's hidden states and the teacher's at the matching "
                 "depth, every layer and token (TinyBERT's intermediate-layer loss)")
    if d.get("attention_weight"):
        loss += (f", plus {d['attention_weight']}·KL between the teacher's and the student's attention distributions, "
                 "each student layer against the teacher layer at the matching depth (TinyBERT's attention loss)")
    if d.get("augment"):
        replacements = (f"replacements by one of the word's {d['augment_neighbours']} nearest neighbours in the "
                        "teacher's input embeddings" if d.get("augment_neighbours") else "replacements")
        loss += (f"; the training set was extended with {d['augment']} perturbed copies of each row (word deletions, "
                 f"swaps, repeats, {replacements}; {info.get('transfer_examples', '?')} rows in all), which carry the "
                 "teacher's targets only")
    if d.get("mined_pairs"):
        loss += (f"; {d['mined_pairs']} new pairs per training row were added, each a training text with one of its 10 "
                 "most similar training sentences by TF-IDF cosine (Augmented SBERT's sampling), scored by the teacher "
                 "only")
    return loss


def _size_lines(student_dir: Path) -> list[str]:
    """The card's size section, from STUDENT_DIR/size.json (deploy/size.py) when it was measured."""
    size = read_size(student_dir)
    if not size:
        return []
    p = size["parameters"]
    lines = ["## Size", "", f"- parameters: {_count(p['total'])} ({_count(p['embedding'])} in the embeddings, "
             f"{_count(p['non_embedding'])} outside)"]
    if size.get("fp32_mb") is not None:
        lines.append(f"- ONNX files: fp32 {size['fp32_mb']:.1f} MB, int8 {size['int8_mb']:.1f} MB")
    if size.get("int8_peak_rss_mb") is not None:
        lines.append(f"- serving one request with the int8 file: peak RSS {size['int8_peak_rss_mb']:.0f} MB "
                     f"({size['runtime_rss_mb']:.0f} MB of it the interpreter and runtime)")
    return [*lines, ""]


def card_body(student_dir: Path, info: dict, teacher_metrics: dict | None) -> str:
    student_dir = Path(student_dir)
    config = read_json(student_dir / "config.json") if (student_dir / "config.json").exists() else {}
    tok = student_dir / "tokenizer_config.json"
    uncased = read_json(tok).get("do_lower_case", False) if tok.exists() else False
    teacher, task = str(info["teacher"]), info["task"]
    depth, layer_map = _depth(config), _layer_map(info)
    params = info.get("parameters", {})
    t_params = teacher_parameters(teacher)
    regression = config.get("problem_type") == "regression" or config.get("num_labels") == 1
    id2label = config.get("id2label") or {}
    labels = [] if regression else [str(id2label[k]) for k in sorted(id2label, key=int)]
    cfg = info.get("config", {})
    max_length = cfg.get("max_length", config.get("max_position_embeddings"))

    origin = f"from teacher layers {layer_map}" if layer_map else f"initialised from `{info.get('student_init')}`"
    size = ""
    if "total" in params:
        size = f"It has {_count(params['total'])} parameters ({_count(params.get('non_embedding', 0))} outside the embeddings)"
        size += f", against the teacher's {_count(t_params)} ({params['total'] / t_params:.0%})." if t_params else "."
    lines = [
        f"# {student_dir.resolve().name}", "",
        f"A {depth}-layer {config.get('model_type', '')} student of `{teacher}`, distilled on {task} with "
        f"distilkit (task distillation, DistilBERT-style): its layers were copied "
        f"{origin}, then trained on the teacher's soft targets and the gold labels. {size}", "",
        "## Results (dev set)", "",
        *metrics_table(info["metrics"], teacher_metrics), "",
        "Values in %; `score` is the mean of the task's metrics (the GLUE per-task score)"
        + ("; retention is student / teacher." if teacher_metrics else "."), "",
        *_size_lines(student_dir),
        "## Training data", "",
        f"- task: {task}",
        f"- data: {_data_source(info.get('data', {}))}",
        f"- training examples: {info.get('train_examples', 'not recorded')}",
        *([f"- labels (output ids in order): {', '.join(labels)}"] if labels else []),
        *([f"- unlabelled inputs, labelled by the teacher only: {info['unlabeled_examples']} (from "
           f"{info['data'].get('unlabeled')})"] if info.get("unlabeled_examples") else []), "",
        "## Recipe", "",
        f"- loss: {_loss(info, regression)}",
        *[f"- {k}: {v}" for k, v in cfg.items()],
        *[f"- distillation {k}: {v}" for k, v in (info.get("distillation") or {}).items()],
        *([f"- training seconds: {info['train_seconds']:.0f}"] if "train_seconds" in info else []), "",
        "## How to use", "",
        "```python",
        "from transformers import pipeline",
        "",
        f"classify = pipeline(\"text-classification\", model=\"{student_dir}\")",
        "print(classify(\"a gripping, well acted film\"))",
        "```", "",
        "## Limitations", "",
        "- The numbers above are on the task's dev set, which also served to compare runs; there is no held-out test score.",
        f"- English only{', uncased (the tokenizer lower-cases its input)' if uncased else ''}; texts are cut at "
        f"{max_length} tokens.",
        f"- The student can only be as good as its teacher (`{teacher}`), which may itself be small.",
        "- On small tasks (a few thousand training examples) scores move by a point or more from seed to seed.", "",
        "## Versions", "",
        *[f"- {k}: {v}" for k, v in (info.get("versions") or {}).items()], "",
    ]
    return "\n".join(lines)


def model_card(student_dir: str | Path, teacher_metrics: dict | None = None) -> ModelCard:
    """The model card of a distilled student folder, from its distil.json (and config, tokenizer)."""
    student_dir = Path(student_dir)
    info = card_record(student_dir)
    data = card_data(info, student_dir.resolve().name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(student_dir, info, teacher_metrics)}")


def write_model_card(student_dir: str | Path, teacher_metrics: dict | None = None) -> Path:
    """Write STUDENT_DIR/README.md (atomically); returns its path."""
    card = model_card(student_dir, teacher_metrics)
    return write_text(Path(student_dir) / "README.md", str(card))

