"""Seeded model inputs: the same recipe always yields the same arrays.

Parity, reference and export all draw their inputs here, so PyTorch and every
candidate model see identical data at each shape point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from buildsys.errors import StepError

POINT_INDEX = {"min": 0, "opt": 1, "max": 2}


def concrete_shape(shape: list, dims: dict[str, dict[str, int]], point: str) -> tuple[int, ...]:
    return tuple(s if isinstance(s, int) else dims[s][point] for s in shape)


def generate(spec: dict[str, Any], shape: tuple[int, ...], rng: np.random.Generator,
             workspace: Path, sample: int = 0, field: str = "") -> np.ndarray:
    """One input array drawn from its recipe `data:` spec."""
    dtype = np.dtype(spec["dtype"])
    data = spec["data"]
    kind = data["kind"]
    if kind == "uniform":
        arr = rng.uniform(data["low"], data["high"], size=shape)
    elif kind == "normal":
        arr = rng.normal(data["mean"], data["std"], size=shape)
    elif kind == "randint":
        arr = rng.integers(int(data["low"]), int(data["high"]), size=shape)
    elif kind == "npy":
        arr = _from_files(spec, data["path"], shape, workspace, sample, field)
    else:
        raise StepError(f"data kind {kind!r} cannot feed parity inputs", field=f"{field}.data.kind",
                        hint="use uniform, normal, randint or npy for parity inputs")
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


def _from_files(spec: dict, pattern: str, shape: tuple[int, ...], workspace: Path, sample: int,
                field: str) -> np.ndarray:
    from buildsys.resolve import npy_files

    files = npy_files(workspace, pattern)
    if not files:
        raise StepError(f"no file matches {pattern!r}", field=f"{field}.data.path",
                        hint="the glob is relative to the workspace root")
    path = files[sample % len(files)]
    loaded = np.load(path, allow_pickle=False)
    arr = loaded[spec["name"]] if hasattr(loaded, "files") else loaded
    if tuple(arr.shape) != tuple(shape):
        raise StepError(f"{path}: array of shape {list(arr.shape)}, expected {list(shape)}",
                        field=f"{field}.data.path")
    return arr


def parity_inputs(params: dict[str, Any], workspace: Path, point: str, sample: int) -> dict[str, np.ndarray]:
    """The inputs of one parity sample at one shape point (min, opt, max, or a seeded "randomN")."""
    seed = params["parity"]["seed"]
    shapes = params["parity"].get("shapes", {})
    if point in shapes:
        index = len(POINT_INDEX) + list(shapes).index(point)
        dims = {n: {point: size} for n, size in shapes[point].items()}
    else:
        index, dims = POINT_INDEX[point], params["dims"]
    out = {}
    for i, spec in enumerate(params["inputs"]):
        rng = np.random.default_rng([seed, index, sample, i])
        shape = concrete_shape(spec["shape"], dims, point)
        out[spec["name"]] = generate(spec, shape, rng, workspace, sample, f"inputs.{i}")
    return out
