"""What a step's result depends on besides its inputs: tool versions and the device.

Versions are read from the names of installed `*.dist-info` folders, which is
what importlib.metadata does too, without importing the tools themselves (torch
alone takes seconds to import) and without importlib.metadata's own import cost.
"""
from __future__ import annotations

import os
import re
import sys
from functools import lru_cache

_DIST = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+?)\.dist-info$")
# The NVIDIA driver's files: gpu.py asks nvidia-smi what they stand for, gpu_fingerprint() only reads them.
NVIDIACTL = "/dev/nvidiactl"
PROC_NVIDIA = "/proc/driver/nvidia"  # version: the driver; gpus/*/information: each GPU's model


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def installed() -> dict[str, str]:
    """Every distribution on sys.path, normalised name -> version (first wins)."""
    found: dict[str, str] = {}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for n in names:
            m = _DIST.match(n)
            if m:
                found.setdefault(normalize(m["name"]), m["version"])
    return found


# Distributions that ship the same module under another name: onnxruntime-gpu installs
# `onnxruntime` in place of the CPU wheel, and a step that lists the tool must not read
# "absent" there. The name joins the version, so CPU and GPU builds never share a key.
_SAME_MODULE = {"onnxruntime": ("onnxruntime-gpu",)}


def versions(names: tuple[str, ...]) -> dict[str, str]:
    """Versions of the named tools; a tool that is not installed is "absent"."""
    have = installed()
    found = {}
    for n in names:
        version = have.get(normalize(n))
        for other in () if version else _SAME_MODULE.get(normalize(n), ()):
            if other in have:
                version = f"{have[other]} ({other})"
                break
        found[n] = version or "absent"
    return found


def python_version() -> str:
    return "{}.{}".format(*sys.version_info[:2])


@lru_cache(maxsize=1)
def cpu() -> dict[str, str]:
    """The CPU an artifact was optimised for: model name and instruction-set flags."""
    arch = os.uname().machine  # platform.machine(), without importing platform on the no-op path
    model, flags = arch, ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == arch:
                    model = value.strip()
                elif key == "flags":
                    wanted = ("avx", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "f16c", "amx_tile", "amx_int8")
                    flags = " ".join(f for f in value.split() if f in wanted)
                    break
    except OSError:
        pass
    return {"arch": arch, "model": model, "isa": flags}


def gpu_fingerprint() -> list:
    """What identifies the GPU that `gpu.gpu()` names in a key, read from the driver's files; nothing is run.

    It moves whenever gpu.gpu()'s answer can: the device file, the driver's version,
    each GPU's model, CUDA_VISIBLE_DEVICES and the nvidia-smi found on PATH. The
    no-op answer is stamped by it: gpu.gpu() runs nvidia-smi, which takes longer
    than a whole no-op build may (and importing gpu.py costs a few milliseconds).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not os.path.exists(NVIDIACTL):
        return [False, visible]
    try:
        buses = sorted(os.listdir(os.path.join(PROC_NVIDIA, "gpus")))
    except OSError:
        buses = []
    smi = (os.path.join(d, "nvidia-smi") for d in os.environ.get("PATH", "").split(os.pathsep) if d)
    return [True, visible, _text(os.path.join(PROC_NVIDIA, "version")),
            [_text(os.path.join(PROC_NVIDIA, "gpus", bus, "information")) for bus in buses],
            next((p for p in smi if os.access(p, os.X_OK)), None)]


def _text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode(errors="replace")
    except OSError:
        return None


# The /proc/cpuinfo flags that make a CPU `vnni` for ONNX Runtime's int8 flavour.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_class(isa: str | None = None) -> str:
    """`vnni` where the CPU (its /proc/cpuinfo flags, or `isa`) has VNNI or AMX, else `avx2`."""
    if isa is None:
        isa = cpu()["isa"]
    return "vnni" if set(isa.split()) & set(VNNI_FLAGS) else "avx2"
