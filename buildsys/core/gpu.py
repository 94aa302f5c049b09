"""The NVIDIA GPU of this machine: whether there is one, and what identifies it in a key.

A TensorRT engine is tuned for one GPU model and runs only on the compute
capability it was built for, so device-bound GPU steps carry `gpu()` in their
key (as CPU-bound steps carry `toolchain.cpu()`). Nothing here imports a GPU
library: the answer comes from the device files and `nvidia-smi`, asked once
per process with a short timeout.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from buildsys.core import toolchain
from buildsys.core.errors import StepError

NVIDIACTL = Path(toolchain.NVIDIACTL)
SMI_TIMEOUT = 10.0  # seconds; a wedged driver must not hang every build
_QUERY = "index,uuid,name,compute_cap,driver_version"
# Written into the virtual environment by `make` when the GPU packages could not be installed;
# it holds the one line make printed, the command that would add them included.
PACKAGES_NOTE = ".gpu-packages-missing"
# The oldest Linux driver of each CUDA major (any minor of it runs there, by minor-version compatibility).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def absent_reason() -> str | None:
    """Why no NVIDIA GPU can be used here, or None when one can.

    The device file is checked first, so a machine without a driver pays a
    stat; `nvidia-smi` runs only where the device files exist.
    """
    if not NVIDIACTL.exists():
        return f"no NVIDIA GPU on this machine (no {NVIDIACTL})"
    if shutil.which("nvidia-smi") is None:
        return f"{NVIDIACTL} exists but nvidia-smi is not on PATH: the GPU cannot be identified for the cache key"
    if not gpu():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        failure = _smi_failure()
        if failure is None and visible is not None:
            return (f"CUDA_VISIBLE_DEVICES={visible} names no GPU that nvidia-smi lists "
                    "(an index, a GPU-… or MIG-… UUID or a unique prefix of one)")
        return f"nvidia-smi lists no usable GPU ({failure or 'no GPU in its answer'})"
    return None


# Steps that need no GPU never see one: the build's worker processes start with the GPU hidden,
# and what the build's own environment said is kept beside, so that the child of a GPU step can
# give it back before anything in it touches CUDA. CUDA_VISIBLE_DEVICES empty hides the devices;
# PYTORCH_NVML_BASED_CUDA_CHECK=1 makes torch.cuda.is_available() ask NVML rather than initialise
# the CUDA driver (cudaGetDeviceCount), which a child forked afterwards could not use.
HIDDEN = {"CUDA_VISIBLE_DEVICES": "", "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
SAVED = "BUILDSYS_SAVED_"  # + the variable's name: its value in the build's environment
_UNSET = "-"  # what a SAVED variable holds when the build's environment did not set it


def hidden(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that hide the GPU from a worker started from `environ`, and what they were."""
    env = dict(HIDDEN)
    env.update({SAVED + name: environ.get(name, _UNSET) for name in HIDDEN})
    return env


def reveal(gpu_step: bool) -> None:
    """In a step's own process, before the step runs: give a GPU step the GPU the build sees.

    CUDA reads CUDA_VISIBLE_DEVICES when it initialises, so this works only in a
    process that has not touched CUDA yet (no template ever does). Other steps
    keep the GPU hidden and lose the remembered values, which are not theirs to read.
    """
    for name in HIDDEN:
        saved = os.environ.pop(SAVED + name, None)
        if saved is None or not gpu_step:
            continue
        if saved == _UNSET:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
    gpu.cache_clear()


# ONNX Runtime's CUDA provider, told how to be fast: what its GPU steps and bench give it.
def cuda_options(tf32: bool = False, device_id: int = 0) -> dict[str, str]:
    """ONNX Runtime's CUDA provider options, the ones that make it fast where parity allows it.

    - prefer_nhwc: convolutions in NHWC, the layout tensor cores read; the
      provider converts the weights once instead of transposing every activation.
    - cudnn_conv_algo_search EXHAUSTIVE: cuDNN times every algorithm once per
      shape and keeps the fastest (the default heuristic often is not).
    - cudnn_conv_use_max_workspace: the fastest algorithms need more workspace.
    - use_tf32: TF32 tensor cores for fp32 convolutions and matmuls, a recipe
      choice (target `tf32`) off by default: its 10-bit mantissa gives errors
      near 1e-3 relative, beyond fp32's default tolerance.
    CUDA graphs (enable_cuda_graph) need fixed input addresses, so only bench's
    IOBinding run at one shape uses them (cuda_graph_options).
    """
    return {"device_id": str(device_id), "prefer_nhwc": "1", "cudnn_conv_algo_search": "EXHAUSTIVE",
            "cudnn_conv_use_max_workspace": "1", "use_tf32": "1" if tf32 else "0"}


def packages_note() -> str | None:
    """Why the GPU packages are missing from this environment, as `make` recorded it, or None."""
    try:
        text = (Path(sys.prefix) / PACKAGES_NOTE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return " ".join(text.split()) or None


def driver_below(needed: int) -> bool:
    """Whether the driver's CUDA is older than CUDA `needed`.x (False where nvidia-smi did not tell)."""
    major = gpu().get("cuda", "unknown").split(".")[0]
    return major.isdigit() and int(major) < needed


def cuda_shortfall(needed: int, what: str) -> str | None:
    """Why the driver cannot run `what` (built for CUDA `needed`.x), or None when it can or cannot be told."""
    if not driver_below(needed):
        return None
    ident = gpu()
    have = ident.get("cuda", "unknown")
    floor = MIN_DRIVER.get(needed)
    return (f"the NVIDIA driver {ident.get('driver', '?')} supports CUDA {have}, and {what} needs CUDA {needed}"
            + (f" (driver {floor} or newer)" if floor else ""))


@lru_cache(maxsize=1)
def gpu() -> dict[str, str]:
    """The GPU that CUDA will use: name, compute capability, driver, driver CUDA version.

    {} where there is none. The GPU is the first that CUDA_VISIBLE_DEVICES names
    (by index or UUID), else the first listed; a machine with several GPU models
    and no CUDA_VISIBLE_DEVICES also lists the others, since which one CUDA calls
    device 0 is then not certain.
    """
    if not NVIDIACTL.exists() or shutil.which("nvidia-smi") is None:
        return {}
    listing = _smi("--query-gpu=" + _QUERY, "--format=csv,noheader")
    if listing is None:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    migs = parse_list(_smi("-L") or "") if visible and visible.strip().startswith("MIG-") else {}
    return select(parse_query(listing), visible, _cuda_version(), migs)


def parse_query(text: str) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,compute_cap,driver_version` (csv, no header)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5 or not cells[0].isdigit():
            continue
        rows.append(dict(zip(("index", "uuid", "name", "compute_cap", "driver"), cells)))
    return rows


_GPU_LINE = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[0-9A-Za-z-]+)\)")
_MIG_LINE = re.compile(r"^\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[0-9A-Za-z/-]+)\)")


def parse_list(text: str) -> dict[str, dict[str, str]]:
    """MIG devices of `nvidia-smi -L`: MIG UUID -> {"index": its GPU's index, "profile": "1g.10gb"}."""
    migs, index = {}, None
    for line in text.splitlines():
        if m := _GPU_LINE.match(line):
            index = m[1]
        elif (m := _MIG_LINE.match(line)) and index is not None:
            migs[m[2]] = {"index": index, "profile": m[1]}
    return migs


def select(rows: list[dict[str, str]], visible: str | None, cuda: str | None,
           migs: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The identity of the GPU CUDA will use, from parsed rows; {} when none is visible.

    CUDA_VISIBLE_DEVICES names a device by index, by UUID (`GPU-…`) or a unique
    prefix of one, or a MIG instance (`MIG-…`, or the older `MIG-GPU-<uuid>/<gi>/<ci>`).
    A MIG instance is the slice of its GPU, so its profile joins the identity.
    """
    chosen, mig = rows, None
    if visible is not None:
        first = visible.split(",")[0].strip()
        if first == "" or first == "-1" or first.lower() == "none":
            return {}
        if first.startswith("MIG-GPU-"):  # the R450 form: MIG-GPU-<gpu uuid>/<gi>/<ci>
            parent, _, slice_ = first[len("MIG-"):].partition("/")
            chosen, mig = [r for r in rows if r["uuid"] == parent], f"gi/ci {slice_}" if slice_ else "unknown"
        elif first.startswith("MIG-"):
            found = [v for k, v in (migs or {}).items() if k.startswith(first)]
            chosen = [r for r in rows if len(found) == 1 and r["index"] == found[0]["index"]]
            mig = found[0]["profile"] if len(found) == 1 else None
        else:
            chosen = [r for r in rows if first == r["index"] or r["uuid"].startswith(first)]
            if len(chosen) > 1:  # an ambiguous UUID prefix: CUDA refuses it too
                return {}
    if not chosen:
        return {}
    pick = chosen[0]
    ident = {"name": pick["name"], "compute_cap": pick["compute_cap"], "driver": pick["driver"],
             "cuda": cuda or "unknown"}
    if mig:
        ident["mig"] = mig
    if visible is None:
        label = "{name} ({compute_cap})".format
        others = sorted({label(**r) for r in rows} - {label(**pick)})
        if others:
            ident["others"] = ", ".join(others)
    return ident


def _cuda_version() -> str | None:
    """The CUDA version the driver supports, from nvidia-smi's banner ("CUDA Version: 12.4")."""
    banner = _smi()
    if banner is None:
        return None
    for line in banner.splitlines():
        _, found, rest = line.partition("CUDA Version:")
        if found:
            return rest.split()[0].strip("|") if rest.split() else None
    return None


def _smi(*args: str) -> str | None:
    try:
        proc = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=SMI_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _smi_failure() -> str | None:
    """What nvidia-smi said when it failed, for the unavailable reason."""
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=SMI_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"nvidia-smi did not answer within {SMI_TIMEOUT:g}s"
    except OSError as exc:
        return f"nvidia-smi could not start: {exc}"
    if proc.returncode != 0:
        text = " ".join((proc.stdout + proc.stderr).split())
        return f"nvidia-smi exited with {proc.returncode}: {text[:200]}"
    return None


# What CUDA says when it cannot run, as TensorRT, Polygraphy and ONNX Runtime word it.
_CUDA_CODE = re.compile(r"cuda(?: runtime)? (?:error|failure)[: ]*(\d+)", re.IGNORECASE)
_CAUSES = (  # (cause, CUDA error codes, phrases): the first that matches names the failure
    ("driver", {35, 803, 804}, ("driver version is insufficient", "insufficient driver",
                                "system has unsupported display driver", "forward compatibility was attempted")),
    ("device", {100, 101}, ("no cuda-capable device", "invalid device ordinal")),
    ("memory", {2}, ("out of memory", "outofmemory", "could not be allocated", "failed to allocate memory",
                     "cudaerrormemoryallocation")),
    ("busy", {46}, ("busy or unavailable",)),
)


def failure_cause(text: str) -> str | None:
    """`driver`, `device`, `memory`, `busy`, `start` (CUDA did not start, reason unknown) or None."""
    low = text.lower()
    codes = {int(c) for c in _CUDA_CODE.findall(text)}
    for cause, numbers, phrases in _CAUSES:
        if codes & numbers or any(p in low for p in phrases):
            return cause
    if "factory function returned nullptr" in low or "initialization error" in low or 3 in codes:
        return "start"
    return None


def failure(action: str, exc: BaseException, needed_cuda: int | None = None) -> StepError:
    """A step failure for an exception raised while `action` (\"TensorRT could not build the engine\") on the GPU.

    The cause is named when the message shows it (driver too old, no device
    visible, out of GPU memory); otherwise TensorRT's own words are kept.
    """
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
    cause = failure_cause(text)
    ident, visible = gpu(), os.environ.get("CUDA_VISIBLE_DEVICES")
    driver = f"driver {ident['driver']} (CUDA {ident.get('cuda', 'unknown')})" if ident else "the NVIDIA driver"
    if cause == "start" and needed_cuda and driver_below(needed_cuda):  # the builder or runtime could not be
        cause = "driver"  # created, and the driver shows why
    floor = MIN_DRIVER.get(needed_cuda or 0)
    messages = {
        "driver": (f"{action}: the NVIDIA driver is too old for this CUDA runtime ({driver})",
                   "update the NVIDIA driver" + (f" to {floor} or newer (CUDA {needed_cuda})" if floor else "")
                   + ", or install the TensorRT build for your driver's CUDA"),
        "device": (f"{action}: no CUDA device is visible to this process"
                   + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""),
                   "check that nvidia-smi lists the GPU and that CUDA_VISIBLE_DEVICES names it; in a container, "
                   "start it with the GPU passed in (docker run --gpus all)"),
        "memory": (f"{action}: out of GPU memory",
                   "free the GPU (nvidia-smi lists what holds it), lower the target's workspace or the dims' max, "
                   "or build on a GPU with more memory"),
        "busy": (f"{action}: the GPU is busy or unavailable (compute mode exclusive, or held by another process)",
                 "nvidia-smi -q -d COMPUTE shows the compute mode; wait for the other process or change the mode"),
        "start": (f"{action}: CUDA could not start on {ident.get('name', 'the GPU')}",
                  "run nvidia-smi to check the driver answers; a CUDA runtime on LD_LIBRARY_PATH newer than the "
                  "driver supports also stops it (unset LD_LIBRARY_PATH to test)"),
    }
    if cause in messages:
        message, hint = messages[cause]
        return StepError(f"{message}: {text}", hint=hint)
    return StepError(f"{action}: {text}", hint="TensorRT's own messages are in the step's log")
