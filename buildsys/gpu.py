"""The NVIDIA GPU of this machine: whether there is one, and what identifies it in a key.

A TensorRT engine is tuned for one GPU model and runs only on the compute
capability it was built for, so device-bound GPU steps carry `gpu()` in their
key (as CPU-bound steps carry `toolchain.cpu()`). Nothing here imports a GPU
library: the answer comes from the device files and `nvidia-smi`, asked once
per process with a short timeout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

NVIDIACTL = Path("/dev/nvidiactl")
SMI_TIMEOUT = 10.0  # seconds; a wedged driver must not hang every build
_QUERY = "index,uuid,name,compute_cap,driver_version"


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
        return f"nvidia-smi lists no usable GPU ({_smi_failure() or 'no GPU in its answer'})"
    return None


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
    return select(parse_query(listing), os.environ.get("CUDA_VISIBLE_DEVICES"), _cuda_version())


def parse_query(text: str) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,compute_cap,driver_version` (csv, no header)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5 or not cells[0].isdigit():
            continue
        rows.append(dict(zip(("index", "uuid", "name", "compute_cap", "driver"), cells)))
    return rows


def select(rows: list[dict[str, str]], visible: str | None, cuda: str | None) -> dict[str, str]:
    """The identity of the GPU CUDA will use, from parsed rows; {} when none is visible."""
    chosen = rows
    if visible is not None:
        first = visible.split(",")[0].strip()
        if first == "" or first == "-1" or first.lower() == "none":
            return {}
        chosen = [r for r in rows if first == r["index"] or r["uuid"].startswith(first)]
    if not chosen:
        return {}
    pick = chosen[0]
    ident = {"name": pick["name"], "compute_cap": pick["compute_cap"], "driver": pick["driver"],
             "cuda": cuda or "unknown"}
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
