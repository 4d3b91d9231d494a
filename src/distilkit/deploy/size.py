"""Size figures of a model folder, as every report gives them (`distil run`'s metrics.json, `distil glue`'s
glue.json, the sweep, the model card): parameters (embedding, non-embedding), the fp32 and int8 ONNX file sizes,
and the peak resident memory (RSS) of a process that loads the int8 file with the deploy backend and serves one
request. The RSS is measured in a fresh Python process set up as a serving-only install (torch, datasets,
scikit-learn... cannot be imported, as in tests/test_serving_without_torch.py; transformers would import torch
otherwise), as its high-water mark (VmHWM: ru_maxrss would also count the parent a spawned child was forked from),
so nothing the caller loaded counts; `runtime_rss_mb` is the same process before it loads the model (interpreter,
onnxruntime, tokenizers), so the model's own share is the difference. Written to MODEL_DIR/size.json.
MB = 10^6 bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..artifacts import read_json, write_json
from ..models.loading import count_parameters, load_any
from .backends import ONNX_FP32, ONNX_INT8

SIZE_FILE = "size.json"
REQUEST = "a short request to serve"

BLOCKED = ("torch", "datasets", "sklearn", "scipy", "matplotlib", "accelerate")  # not in a serving-only install

# Runs in the child: import the serving stack, note the peak RSS (KiB), load the model, answer one request, again.
_CHILD = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None


def peak_kib():
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


import onnxruntime, transformers  # noqa: E401, F401 (the runtime, before the model)
from distilkit.deploy.backends import load_backend
from transformers import AutoTokenizer  # noqa: F401
before = peak_kib()
backend = load_backend(sys.argv[1], sys.argv[2])
backend([sys.argv[3]])
print(before, peak_kib())
"""


def serving_rss_mb(model_dir: str | Path, backend: str = "onnx-int8") -> dict[str, float]:
    """{"peak_rss_mb", "runtime_rss_mb"} of a fresh process serving one request with `backend` (see the module
    docstring; Linux: /proc/self/status)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(model_dir), backend, REQUEST], env=env,
                          capture_output=True, text=True, check=True)
    before, peak = (int(x) for x in done.stdout.split()[-2:])
    return {"peak_rss_mb": round(peak * 1024 / 1e6, 1), "runtime_rss_mb": round(before * 1024 / 1e6, 1)}


def model_size(model_dir: str | Path, export: bool = True, rss: bool = True, write: bool = True) -> dict:
    """MODEL_DIR's size figures, written to MODEL_DIR/size.json and returned: {"parameters": {total, embedding,
    non_embedding}, "fp32_mb", "int8_mb", "int8_peak_rss_mb", "runtime_rss_mb"}. With `export`, a folder without
    ONNX files is exported first (fp32 and int8, unchecked: `distil export --data` checks); file figures of a
    folder without them are None. `write` False: size.json is not written (a folder that is not the caller's)."""
    model_dir = Path(model_dir)
    if export and not (model_dir / ONNX_INT8).exists():
        from .export import export_onnx

        export_onnx(model_dir)
    files = {name: (model_dir / f).stat().st_size / 1e6 if (model_dir / f).exists() else None
             for name, f in (("fp32_mb", ONNX_FP32), ("int8_mb", ONNX_INT8))}
    memory = serving_rss_mb(model_dir) if rss and files["int8_mb"] is not None else {}
    size = {"parameters": count_parameters(load_any(str(model_dir))),
            **{k: round(v, 4) if v is not None else None for k, v in files.items()},
            "int8_peak_rss_mb": memory.get("peak_rss_mb"), "runtime_rss_mb": memory.get("runtime_rss_mb")}
    if write:
        write_json(model_dir / SIZE_FILE, size)
    return size


def read_size(model_dir: str | Path) -> dict | None:
    """MODEL_DIR/size.json's figures, or None when they were not measured."""
    path = Path(model_dir) / SIZE_FILE
    return read_json(path) if path.exists() else None
