"""Seeded model inputs: the same recipe always yields the same arrays.

Parity, reference and export all draw their inputs here, so PyTorch and every
candidate model see identical data at each shape point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from buildsys.core.errors import StepError

POINT_INDEX = {"min": 0, "opt": 1, "max": 2}


def concrete_shape(shape: list, dims: dict[str, dict[str, int]], point: str) -> tuple[int, ...]:
    return tuple(s if isinstance(s, int) else dims[s][point] for s in shape)


def generate(spec: dict[str, Any], shape: tuple[int, ...], rng: np.random.Generator,
             workspace: Path, sample: int = 0, field: str = "", files: list[str] | None = None) -> np.ndarray:
    """One input array drawn from its recipe `data:` spec.

    `files` are the workspace-relative files of real data to draw from (`npy`,
    `images`): the held-out share where calibration reads the same data. Without
    them an `npy` glob is expanded and an `images` folder listed whole.
    """
    dtype = np.dtype(spec["dtype"])
    data = spec["data"]
    kind = data["kind"]
    if kind == "uniform":
        arr: np.ndarray = rng.uniform(data["low"], data["high"], size=shape)
    elif kind == "normal":
        arr = rng.normal(data["mean"], data["std"], size=shape)
    elif kind == "randint":
        arr = rng.integers(int(data["low"]), int(data["high"]), size=shape)
    elif kind == "npy":
        arr = _from_files(spec, data["path"], shape, workspace, sample, field, files)
    elif kind == "images":
        arr = _from_images(spec, shape, rng, workspace, sample, field, files)
    else:
        raise StepError(f"data kind {kind!r} cannot feed parity inputs", field=f"{field}.data.kind",
                        hint="use uniform, normal, randint, npy or images for parity inputs")
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


def _from_files(spec: dict, pattern: str, shape: tuple[int, ...], workspace: Path, sample: int,
                field: str, drawn: list[str] | None = None) -> np.ndarray:
    from buildsys.core.datafiles import DataPathError, npy_files

    try:
        files = [str(workspace / f) for f in drawn] if drawn else npy_files(workspace, pattern)
    except DataPathError as exc:
        raise StepError(f"{pattern!r} {exc}", field=f"{field}.data.path",
                        hint="data files must be inside the project: copy them in") from None
    if not files:
        raise StepError(f"no file matches {pattern!r}", field=f"{field}.data.path",
                        hint="the glob is relative to the workspace root")
    path = files[sample % len(files)]
    try:
        loaded = np.load(path, allow_pickle=False)
        arr = loaded[spec["name"]] if hasattr(loaded, "files") else loaded  # an .npz reads on access
    except (OSError, ValueError) as exc:  # not a numpy file, an array of Python objects, a truncated file
        raise StepError(f"{path}: not a readable .npy/.npz file ({str(exc).splitlines()[0][:160]})",
                        field=f"{field}.data.path",
                        hint="save numeric arrays: np.save(path, array.astype('float32'))") from None
    except KeyError:
        raise StepError(f"{path}: no array named {spec['name']!r} (found {', '.join(loaded.files) or 'none'})",
                        field=f"{field}.data.path", hint="an .npz holds one array per input name") from None
    try:
        return fit_to_shape(arr, spec["shape"], shape)
    except ValueError as exc:
        raise StepError(f"{path}: array of shape {list(arr.shape)}, expected {list(shape)}: {exc}",
                        field=f"{field}.data.path", hint=FIT_RULE) from None


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Views of a photograph for parity: a crop whose shorter side is this share of the image's
# shorter side (with the input's aspect), mirrored or not, brightened or darkened by this factor.
VIEW_CROP = (0.6, 0.9)
VIEW_BRIGHTNESS = (0.7, 1.3)


def _from_images(spec: dict, shape: tuple[int, ...], rng: np.random.Generator, workspace: Path, sample: int,
                 field: str, files: list[str] | None) -> np.ndarray:
    """A batch of seeded views of the images (one file per row, in turn), as the preset normalises them."""
    data = spec["data"]
    if data.get("preset", "imagenet") != "imagenet":
        raise StepError(f"unknown image preset {data.get('preset')!r}", field=f"{field}.data.preset",
                        hint="use imagenet")
    if len(shape) != 4 or shape[1] != 3:
        raise StepError(f"the imagenet preset makes 3-channel NCHW images; input {spec['name']!r} has shape "
                        f"{list(shape)}", field=f"{field}.data.kind", hint="give the data as .npy files instead")
    if files is None:
        folder = workspace / data["path"]
        files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        files = [f"{data['path']}/{f}" for f in files]
    if not files:
        raise StepError(f"the folder {data['path']!r} holds no image", field=f"{field}.data.path")
    n, _, h, w = shape
    rows = [image_view(workspace / files[(sample * n + b) % len(files)], h, w, rng, field) for b in range(n)]
    return np.stack(rows)


def image_view(path: Path, h: int, w: int, rng: np.random.Generator, field: str = "") -> np.ndarray:
    """One seeded view of a photograph at (h, w): a crop of 60-90 % of its shorter side (the input's
    aspect), mirrored or not, brightness x0.7-1.3, then normalised like ImageNet evaluation; CHW float32."""
    from PIL import Image, ImageEnhance, ImageOps

    try:
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
    except OSError as exc:  # not an image, truncated
        raise StepError(f"cannot decode image {path.name}: {' '.join(str(exc).split())[:200]}",
                        field=f"{field}.data.path", hint="the folder must hold only images") from None
    iw, ih = img.size
    side = min(iw, ih) * rng.uniform(*VIEW_CROP)
    ch, cw = (side, side * w / h) if h >= w else (side * h / w, side)
    cw, ch = max(1, min(iw, round(cw))), max(1, min(ih, round(ch)))
    left, top = int(rng.integers(0, iw - cw + 1)), int(rng.integers(0, ih - ch + 1))
    img = img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(*VIEW_BRIGHTNESS)))
    arr: np.ndarray = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return arr.transpose(2, 0, 1)


FIT_RULE = ("npy data fits each shape point along the named (dynamic) dims: an array larger there is cut "
            "to its first entries, a smaller one is repeated until it fills the size; fixed dims must match")


def fit_to_shape(arr: np.ndarray, declared: list, shape: tuple[int, ...]) -> np.ndarray:
    """`arr` at a shape point by FIT_RULE: along each named dim, the first entries or repeats.

    Users bring data of one size and declare a range: a batch of 2 serves the min
    point (batch 1) with its first row and the max point (batch 8) repeated four
    times. Raises ValueError naming the dim that cannot fit (rank or a fixed size).
    """
    if arr.ndim != len(shape):
        raise ValueError(f"rank {arr.ndim}, the input has rank {len(shape)}")
    for axis, (have, want, name) in enumerate(zip(arr.shape, shape, declared)):
        if have == want:
            continue
        if isinstance(name, int):
            raise ValueError(f"dim {axis} is fixed at {want}, found {have}")
        if have == 0:
            raise ValueError(f"dim {axis} ({name}) is empty, nothing to repeat")
        if have > want:
            arr = np.take(arr, np.arange(want), axis=axis)
        else:
            arr = np.take(arr, np.arange(want) % have, axis=axis)
    return arr


def fitted(arr_shape: tuple[int, ...], declared: list, shape: tuple[int, ...]) -> str:
    """How FIT_RULE changed an array's shape, in words ("" when it did not)."""
    said = []
    for have, want, name in zip(arr_shape, shape, declared):
        if have > want:
            said.append(f"first {want} of {have} along {name}")
        elif have < want:
            said.append(f"{have} repeated to {want} along {name}")
    return ", ".join(said)


def fit_notes(params: dict[str, Any], workspace: Path, point: str, sample: int) -> list[str]:
    """For each npy input that FIT_RULE reshaped at this point: which file, from what, how."""
    from buildsys.core.datafiles import npy_files

    notes = []
    drawn = params["parity"].get("files", {})
    for spec in params["inputs"]:
        data = spec["data"]
        if data["kind"] != "npy":
            continue
        held = drawn.get(spec["name"])
        files = [str(workspace / f) for f in held] if held else npy_files(workspace, data["path"])
        if not files:
            continue
        path = files[sample % len(files)]
        loaded = np.load(path, allow_pickle=False, mmap_mode="r")
        arr = loaded[spec["name"]] if hasattr(loaded, "files") else loaded
        shape = concrete_shape(spec["shape"], params["dims"], point)
        how = fitted(tuple(arr.shape), spec["shape"], shape)
        if how:
            rel = Path(path).resolve().relative_to(workspace.resolve()).as_posix()
            notes.append(f"{spec['name']} at {point}: {rel} {list(arr.shape)} -> {list(shape)} ({how})")
    return notes


def parity_inputs(params: dict[str, Any], workspace: Path, point: str, sample: int) -> dict[str, np.ndarray]:
    """The inputs of one parity sample at one shape point (min, opt, max, or a seeded "randomN")."""
    seed = params["parity"]["seed"]
    shapes = params["parity"].get("shapes", {})
    files = params["parity"].get("files", {})
    if point in shapes:
        index = len(POINT_INDEX) + list(shapes).index(point)
        dims = {n: {point: size} for n, size in shapes[point].items()}
    else:
        index, dims = POINT_INDEX[point], params["dims"]
    out = {}
    for i, spec in enumerate(params["inputs"]):
        rng = np.random.default_rng([seed, index, sample, i])
        shape = concrete_shape(spec["shape"], dims, point)
        out[spec["name"]] = generate(spec, shape, rng, workspace, sample, f"inputs.{i}", files.get(spec["name"]))
    return out
