"""Facts about this machine and this install: CPU model and instruction sets, cores, bf16 support,
library versions. No torch at import time (a serving-only install has none)."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import time

from . import __version__

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def num_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other work kept busy over the next `seconds` (from /proc/stat; None off Linux). Unlike
    the load average, which trails the last minutes, this is the machine right now."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all jiffies, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return None
    return round(num_cores() * (1 - (idle1 - idle0) / max(total1 - total0, 1)), 2)


def cpu() -> dict:
    """The CPU's model name and the instruction sets that decide bf16 and int8 speed."""
    model, flags = platform.processor() or "unknown", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), model)
        flags = next((line for line in lines if line.startswith("flags")), "")
    except OSError:
        pass
    present = set(flags.split(":", 1)[-1].split())
    return {"cpu": model, "cores": num_cores(), "isa": [f for f in ISA_FLAGS if f in present]}


def cpu_bf16() -> bool:
    """The CPU computes bf16 natively (AVX-512 BF16 or AMX): what bf16 inference in torch or OpenVINO needs to
    be worth running (read from /proc/cpuinfo, no torch)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu()["isa"]))


def bf16_supported() -> bool:
    """bf16 autocast is worth it on GPUs with bf16 and on CPUs with AVX-512 BF16 or AMX."""
    try:
        import torch
    except ImportError:
        return False
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_bf16()


def version_of(package: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Versions recorded in every distil.json (None for a library this install lacks)."""
    return {"distilkit": __version__, **{name: version_of(name) for name in ("torch", "transformers", "datasets")},
            "python": platform.python_version()}


MALLOC = {"mmap_threshold_bytes": 32 << 20, "trim_threshold_bytes": 512 << 20}  # glibc's largest mmap threshold


def keep_freed_memory() -> dict | None:
    """Ask glibc's malloc to keep freed memory for the next call instead of handing it back to the system (the
    settings of MALLOC; None where that is not glibc). By default, blocks of a few MB (a batch's activations) are
    mapped and unmapped on every forward, and their pages faulted in again: torch bf16 ran the teacher at b32 s128
    in 114-124 ms instead of 83-86 in a process where nothing had raised malloc's dynamic thresholds first."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, MALLOC["mmap_threshold_bytes"]) and libc.mallopt(-1, MALLOC["trim_threshold_bytes"])
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return None
    return dict(MALLOC) if ok else None  # -3: M_MMAP_THRESHOLD, -1: M_TRIM_THRESHOLD (malloc.h)


def hardware(threads: int | None = None) -> dict:
    """What a timing needs beside it: CPU, cores, instruction sets, runtime versions and thread counts
    (`threads`: what the runtimes were given, default one per core)."""
    facts = {**cpu(), "python": platform.python_version(), "onnxruntime": version_of("onnxruntime"),
             "openvino": version_of("openvino"), "torch": version_of("torch"), "ort_threads": threads or num_cores()}
    try:
        import torch

        facts["torch_threads"] = torch.get_num_threads()
    except ImportError:
        facts["torch_threads"] = None
    return facts
