"""`distil sweep`: students of several depths (and widths, and a trimmed vocabulary) on one task, in fp32 and
int8, against their cost.

    for each depth d:  OUT/depth-d  = distil_task(teacher, num_layers=d)   (reused when finished)
                       OUT/depth-d/model.int8.onnx = export_onnx(checked on dev)
    for each width w:  OUT/width-HxI[-hA] = distil_task(teacher, width=w), at the default depth (half the teacher)
    with a trim:       OUT/trim-vocab = distil_task(teacher, trim=...), at the default depth
                       (each exported and checked as the depths are)
    every student and the teacher: size.json (deploy/size.py: parameters, file sizes, int8 serving peak RSS)
    teacher:           OUT/teacher-onnx = the teacher's ONNX export (weights linked in)
    one interleaved bench over every (model, precision) → batch-1 latency at `seq`
    → OUT/sweep.json, OUT/sweep.md, OUT/pareto.png (score against latency and against size)

Scores are the dev scores the stages recorded (distil.json for fp32, export.json's check for int8);
the Pareto frontier keeps the points no other point beats on both score and cost.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from ..artifacts import read_record, save_figure, write_json, write_text
from ..data.task import TaskData
from ..deploy.backends import ONNX_INT8
from ..deploy.bench import run_bench
from ..deploy.export import ExportCheckError, export_onnx
from ..deploy.size import model_size
from ..errors import ConfigError
from ..models.families import depth
from ..models.folders import supported_config
from ..models.narrow import Width
from ..models.student import StudentError, choose_layer_map
from ..stages.evaluate import evaluate_folder
from ..stages.reuse import reuse_or_run
from ..stages.task import distil_task
from ..train.common import TrainConfig
from ..train.task import DistillConfig

console = Console(stderr=True)

BACKEND = {"fp32": "torch", "int8": "onnx-int8"}  # the backend each precision runs on


def pareto_front(points: list[dict], cost_key: str, score_key: str = "score") -> list[dict]:
    """The points no other point dominates (score at least as high and cost at most as low, one strictly),
    cheapest first. Of points equal in both cost and score, the first given is kept."""
    front = []
    for p in sorted(points, key=lambda p: (p[cost_key], -p[score_key])):  # stable: ties keep input order
        if not front or p[score_key] > front[-1][score_key]:
            front.append(p)
    return front


def student_expected(teacher_dir: Path, data: TaskData, cfg: TrainConfig, dcfg: DistillConfig, layer_map: list[int],
                     width: Width | None = None) -> dict:
    """What a student folder's distil.json must hold to be reused (the keys distil_task writes)."""
    return {"stage": "task-distillation", "teacher": str(teacher_dir), "built_from": str(teacher_dir),
            "layer_map": layer_map, "task": data.name, "data": data.source, "train_examples": len(data.train),
            "config": cfg.to_dict(), "distillation": dcfg.to_dict(), **({"width": width.to_dict()} if width else {})}


def width_name(width: Width) -> str:
    """A width student's folder and point name: width-256x1024, or width-256x1024-h8 with --heads."""
    return f"width-{width.hidden_size}x{width.intermediate_size}" + (f"-h{width.heads}" if width.heads else "")


def checked_export(model_dir: Path, data: TaskData, out: Path | None, tolerance: float) -> dict | None:
    """export.json of `model_dir`'s ONNX export checked on `data`, made unless a passing one (same model,
    same task, int8 file there) exists; None when int8 fails the check (drops more than `tolerance` points)."""
    folder = Path(out or model_dir)
    info = read_record(folder, "export.json")
    if info:
        same = info.get("model") == str(model_dir) and info.get("check", {}).get("task") == data.name
        if same and info.get("passed") and (folder / ONNX_INT8).exists():
            console.print(f"[green]reusing the checked export in {folder}")
            return info
    try:
        return export_onnx(model_dir, out, data=data, tolerance=tolerance)
    except ExportCheckError as err:
        console.print(f"[yellow]{err}")
        return None


def link_weights(teacher_dir: Path, onnx_dir: Path) -> None:
    """Link the teacher's safetensors into its ONNX folder, so one folder runs both torch and ONNX."""
    for src in [*teacher_dir.glob("*.safetensors"), *teacher_dir.glob("model.safetensors.index.json")]:
        dst = onnx_dir / src.name
        if not dst.exists():
            os.symlink(src.resolve(), dst)


def teacher_metrics(teacher_dir: Path, data: TaskData, export: dict | None, max_length: int) -> dict:
    """The teacher's dev metrics: from its distil.json (fine-tuned on this task), else its export check's
    torch reference, else evaluated now."""
    info = read_record(teacher_dir)
    if info.get("task") == data.name and "metrics" in info:
        return info["metrics"]
    if export is not None:
        return export["check"]["results"]["torch"]
    return evaluate_folder(str(teacher_dir), data, max_length)


def latency_ms(bench: dict, model: str, backend: str, seq: int) -> float:
    return next(r["median_ms"] for r in bench["results"]
                if r["model"] == model and r["backend"] == backend and r["kind"] == "latency" and r["seq"] == seq)


def check_sweep(teacher_dir: str | Path, depths: list[int], precisions, prefix: str = "") -> dict[str, list[int]]:
    """Refuse bad depths or precisions before any training (options --depths and --precisions, with `prefix`
    --sweep-depths and --sweep-precisions); returns each depth's layer map, {"depth-d": [teacher layers]}."""
    unknown = [p for p in precisions if p not in BACKEND]
    if unknown or not precisions:
        raise ConfigError(f"--{prefix}precisions {','.join(precisions)!r}: expected {' and/or '.join(BACKEND)}")
    if not depths:
        raise ConfigError(f"--{prefix}depths: expected at least one student depth, like 1,2,3")
    config = supported_config(teacher_dir)
    maps = {}
    for d in depths:
        try:
            maps[f"depth-{d}"] = choose_layer_map(config, None, d)
        except StudentError as err:
            raise ConfigError(f"--{prefix}depths {d}: {err}") from None
    return maps


def run_sweep(teacher_dir: str | Path, data: TaskData, depths: list[int], out: Path, cfg: TrainConfig,
              dcfg: DistillConfig, cache_dir: Path, precisions=("fp32", "int8"), seq: int = 128,
              repeats: int = 10, tolerance: float = 1.0, peak_size: int = 1024, widths: list[Width] = (),
              trim=None) -> dict:
    """Distil (or reuse) a student per depth, per width and with `trim` (a VocabTrim), export int8, time
    everything at once; returns sweep.json."""
    teacher_dir, out = Path(teacher_dir), Path(out)
    config = supported_config(teacher_dir)
    layer_maps = {"teacher": list(range(depth(config))), **check_sweep(teacher_dir, depths, precisions)}
    default_map = choose_layer_map(config)
    students = {f"depth-{d}": {"num_layers": d} for d in depths}  # name: distil_task's keywords
    students.update({width_name(w): {"width": w} for w in widths})
    if trim is not None:
        students["trim-vocab"] = {"trim": trim}
    records, exports = {}, {}
    for name, kwargs in students.items():
        folder = out / name
        layer_maps.setdefault(name, default_map)
        console.print(f"[bold]{name}[/]: teacher layers {layer_maps[name]} → {folder}")
        records[name] = reuse_or_run(folder, student_expected(teacher_dir, data, cfg, dcfg, layer_maps[name],
                                                              kwargs.get("width")),
                                     lambda f=folder, k=kwargs: distil_task(str(teacher_dir), data, cfg, dcfg, f,
                                                                            cache_dir, **k))
        console.print(f"{name}: dev score {records[name]['metrics']['score']:.4f}")
        if "int8" in precisions:
            exports[name] = checked_export(folder, data, None, tolerance)
    folders = {"teacher": teacher_dir, **{name: out / name for name in students}}
    if "int8" in precisions:
        console.print(f"[bold]teacher[/]: ONNX export → {out / 'teacher-onnx'}")
        exports["teacher"] = checked_export(teacher_dir, data, out / "teacher-onnx", tolerance)
        if exports["teacher"] is not None:
            link_weights(teacher_dir, out / "teacher-onnx")
            folders["teacher"] = out / "teacher-onnx"

    console.print(f"timing {len(folders)} models x {len(precisions)} precisions at sequence length {seq}")
    bench = run_bench({m: str(f) for m, f in folders.items()}, seqs=[seq], batch=32, repeats=repeats,
                      backends=[BACKEND[p] for p in precisions], peak_size=peak_size)
    write_json(out / "bench.json", bench)
    sizes = {model: model_size(folder, export=False, write=folder != teacher_dir) for model, folder in folders.items()}

    points = []
    for model in folders:
        facts, size = bench["models"][model], sizes[model]
        record = records.get(model, {})
        for precision in precisions:
            if precision == "fp32":
                metrics = records[model]["metrics"] if model in records else teacher_metrics(
                    teacher_dir, data, exports.get("teacher"), cfg.max_length)
                path = sorted((teacher_dir if model == "teacher" else folders[model]).glob("*.safetensors"))
                extra = {}
            else:
                if exports.get(model) is None:
                    continue
                result = exports[model]["check"]["results"]["onnx-int8"]
                metrics = {k: v for k, v in result.items()
                           if k not in ("score_drop_points", "label_agreement", "max_abs_logit_diff")}
                path = [folders[model] / ONNX_INT8]
                extra = {"score_drop_points": result["score_drop_points"], "label_agreement": result["label_agreement"],
                         "int8_peak_rss_mb": size["int8_peak_rss_mb"]}
            points.append({
                "model": model, "depth": len(layer_maps[model]), "layers": layer_maps[model],
                "width": facts["width"],
                "vocab": (record.get("vocab") or {}).get("kept"), "precision": precision,
                "backend": BACKEND[precision], "score": metrics["score"], "metrics": metrics,
                "latency_ms": latency_ms(bench, model, BACKEND[precision], seq),
                "size_mb": sum(p.stat().st_size for p in path) / 1e6, "files": [str(p) for p in path],
                "parameters": facts["parameters"], **extra})
    sweep = {
        "task": data.name, "teacher": str(teacher_dir), "points": points,
        "frontier": {cost: [_label(p) for p in pareto_front(points, key)]
                     for cost, key in (("latency", "latency_ms"), ("size", "size_mb"))},
        "hardware": bench["hardware"],
        "timed": f"batch-1 latency at {seq} tokens, median of {bench['method']['rounds']} blocks of {repeats} calls, "
                 "each model and precision alone in its blocks (see bench.json)",
        "config": {"depths": list(depths), "widths": [w.to_dict() for w in widths],
                   "trim_vocab": trim.to_dict() if trim is not None else None,
                   "precisions": list(precisions), "seq": seq, "repeats": repeats,
                   "tolerance_points": tolerance, "data": data.source, "train": cfg.to_dict(),
                   "distillation": dcfg.to_dict()},
    }
    write_json(out / "sweep.json", sweep)
    write_text(out / "sweep.md", markdown(sweep))
    plot(sweep, out / "pareto.png")
    console.print(f"[bold]sweep done[/]: {out}/sweep.json, {out}/sweep.md, {out}/pareto.png")
    return sweep


def _label(p: dict) -> dict:
    return {k: p[k] for k in ("model", "precision", "score", "latency_ms", "size_mb")}


def markdown(sweep: dict) -> str:
    hw, cfg = sweep["hardware"], sweep["config"]
    lines = [
        f"# distil sweep: {sweep['task']}", "",
        f"Teacher `{sweep['teacher']}`; students of depth {', '.join(map(str, cfg['depths']))}"
        + "".join(f", {width_name(Width(**w))}" for w in cfg.get("widths", []))
        + (", with a trimmed vocabulary" if cfg.get("trim_vocab") else "")
        + f" in {' and '.join(cfg['precisions'])}. Score: dev score (fp32: distil.json; int8: the export check). "
        f"Latency: {sweep['timed']}, on {hw['cpu']} ({hw['cores']} cores). Size: the file the precision runs; "
        "int8 RSS: peak memory of a serving-only process answering one request with the int8 file.", "",
        "| model | layers | width | vocab | precision | score | latency ms | size MB | parameters (embedding) "
        "| int8 RSS MB |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in sweep["points"]:
        params, rss = p["parameters"], p.get("int8_peak_rss_mb")
        lines.append(f"| {p['model']} | {p['layers']} | {p.get('width', '')} | {p.get('vocab') or 'all'} | "
                     f"{p['precision']} | {p['score'] * 100:.2f} | {p['latency_ms']:.2f} | {p['size_mb']:.3g} | "
                     f"{params['total'] / 1e6:.3g}M ({params['embedding'] / 1e6:.3g}M) | "
                     f"{'' if rss is None else f'{rss:.0f}'} |")
    for cost, unit in (("latency", "latency"), ("size", "size")):
        lines += ["", f"Pareto frontier (score against {unit}), cheapest first:", ""]
        lines += [f"- {p['model']} {p['precision']}: score {p['score'] * 100:.2f}, {p['latency_ms']:.2f} ms, "
                  f"{p['size_mb']:.3g} MB" for p in sweep["frontier"][cost]]
    lines += ["", "![score against latency and size](pareto.png)", ""]
    return "\n".join(lines)


def _short(point: dict) -> str:
    """A point's label on the plot: T (teacher), its depth, w256 (a width student), v (trimmed vocabulary)."""
    model = point["model"]
    if model == "teacher":
        return "T"
    if model.startswith("width-"):
        return f"w{point['width']}"
    return "v" if model == "trim-vocab" else str(point["depth"])


def plot(sweep: dict, path: Path) -> Path:
    """Two panels, score against latency and against size (log scale); the frontier as a step line; marker
    area grows with the parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    markers, colors = {"fp32": "o", "int8": "^"}, {"fp32": "#2a7", "int8": "#47a"}
    for ax, (cost, key, label) in zip(axes, (("latency", "latency_ms", "batch-1 latency (ms)"),
                                             ("size", "size_mb", "file size (MB)"))):
        for p in sweep["points"]:
            teacher = p["model"] == "teacher"
            area = 20 + 6 * p["parameters"]["total"] / 1e6
            ax.scatter(p[key], p["score"] * 100, marker="*" if teacher else markers[p["precision"]],
                       s=area * (3 if teacher else 1), color=colors[p["precision"]], alpha=0.8,
                       edgecolors="black" if teacher else "none", zorder=3,
                       label=f"{'teacher' if teacher else 'students'} {p['precision']}")
            ax.annotate(_short(p), (p[key], p["score"] * 100), textcoords="offset points", xytext=(5, 4), fontsize=8)
        front = sweep["frontier"][cost]
        ax.step([p[key] for p in front], [p["score"] * 100 for p in front], where="post", color="#c44", lw=1.2,
                zorder=2, label="Pareto frontier")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{sweep['task']} dev score (%)")
        ax.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
    fig.suptitle(f"distil sweep: {sweep['task']}, students by depth (numbers), width (w), trimmed vocabulary (v), "
                 "teacher (T); marker area: parameters", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
