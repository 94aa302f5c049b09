"""calibrate: activation ranges of the fp32 model on the recipe's calibration data.

The expensive half of post-training quantization, run once per model and data:
ONNX Runtime's calibrator (`create_calibrator`, then `collect_data` one batch at a
time and `compute_data`) runs the model on the calibration batches and yields one
range per activation tensor. The ranges go to `calib.json`, with what they were
computed from; every `quantize[flavour]` step derives its Q/DQ model from that
file without running the model again.

Calibration data comes from the recipe's `calibration.data`:

- `uniform` / `normal` / `randint`: seeded random batches at the opt shape (the
  same every build). Such ranges are only a guess at real inputs' ranges, so the
  result says so (`"random_data": true`, and the summary).
- `npy`: one sample per file matched by the glob: a `.npy` array for a model with
  one input, or a `.npz` with an array per input name; dtype must match the
  input's and every dimension must fit the recipe's dims (a named dim anywhere in
  [min, max], a fixed dim exactly).
- `images`: every file of a folder, preprocessed by a named preset (`imagenet`)
  into the model's NCHW float input, consecutive images filling the opt batch;
  then, up to `samples` batches, seeded views of the same files (crops, mirrors,
  brightness: `inputs.image_view`) at the image sizes of the opt, min and max points
  in turn (`view_sizes`). A few photographs give few batches, and ranges
  taken on their centre crops alone clip what other framings of a scene produce
  (EfficientNet-Lite0 on held-out photographs: top-1 agreement where fp32 is
  decided 80 % with 3 batches of centre crops, 91 % with 32 batches of views).

Where parity judges on the same files (an input's `images` or `npy` data), the
share `parity.holdout` of them is held out: the resolver leaves those files out
of this step's files (and so out of its key and its reach), and says which.

A model that already carries QuantizeLinear/DequantizeLinear nodes (quantization-
aware training) is not calibrated: its scales are part of the model, and the
recipe needs no `calibration:` block. Without one, a model without Q/DQ fails here.
"""
from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.core.errors import StepError
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import CalibrateParams

FORMAT = 1
RANDOM_KINDS = ("uniform", "normal", "randint")
_RANDOM_FIELDS = {"uniform": ("low", "high"), "normal": ("mean", "std"), "randint": ("low", "high")}
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # -> CalibrationMethod
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
RANDOM_WARNING = "calibrated on random data: ranges may not match real inputs"
# Seeds of calibration batches live apart from parity's ([seed, point, sample, input]):
# the model is never calibrated on the very inputs its int8 parity is judged on.
_STREAM = 0xCA1B
_DATA_FIELD = "calibration.data.path"
_FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")


@dataclass
class _Source:
    """Calibration batches, made one at a time when called, and what they were made from."""

    batches: list[Callable[[], dict[str, Any]]]
    manifest: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what the batches are made of, for the summary: "uniform data", "3 images"


class CalibrateRanges(Step[CalibrateParams]):
    KIND = "calibrate"
    PARAMS = CalibrateParams
    VERSION = 3  # 2: images fill `samples` batches with seeded views; 3: views at the min, opt and max sizes
    TOOLS = ("onnx", "onnxruntime", "numpy", "pillow")
    RESIDENT = True

    def run(self) -> StepResult:
        cal = self.params.calibration
        model = self.ctx.inputs["model"]
        out = self.ctx.output("ranges")
        qdq = count_qdq_nodes(model)
        if qdq:
            doc: dict[str, Any] = {"format": FORMAT, "qat": True, "qdq_nodes": qdq, "method": None, "random_data": False,
                   "tensors": {}}
            out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            summary = (f"quantization-aware trained (Q/DQ from the model): its {qdq} QuantizeLinear/DequantizeLinear "
                       "nodes keep their trained scales; calibration skipped")
            print(summary)
            return StepResult(summary=summary, note=summary)
        if cal is None:
            raise StepError("the model carries no QuantizeLinear/DequantizeLinear nodes (it is not quantization-aware "
                            "trained), so its int8 targets need calibration data", field="calibration",
                            hint="add calibration: {data: {kind: uniform, low: 0, high: 1}, samples: 64}, or real "
                                 "data ({kind: npy, path: ...} or {kind: images, ...})")

        source = calibration_source(self.slice, self.ctx.workspace, self.ctx.files)
        with tempfile.TemporaryDirectory(dir=self.ctx.scratch) as tmp:
            staged = stage_model(model, Path(tmp))
            ranges = collect_ranges(staged, cal.method, source.batches, self.ctx.threads, Path(tmp))
        random = cal.data.kind in RANDOM_KINDS
        doc = {"format": FORMAT, "qat": False, "method": cal.method, "random_data": random,
               "samples": len(source.batches), "data": source.manifest, "held_out": list(self.params.held_out),
               "tensors": {name: {"min": lo, "max": hi} for name, (lo, hi) in sorted(ranges.items())}}
        out.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")
        summary = (f"{cal.method} ranges of {len(ranges)} tensors from {len(source.batches)} "
                   f"{_plural(len(source.batches), 'batch', 'batches')} of {source.label}")
        if self.params.held_out:
            n = len(self.params.held_out)
            summary += f"; {n} {_plural(n, 'file', 'files')} held out for parity"
        if random:
            summary += f"; {RANDOM_WARNING}"
            print(f"warning: {RANDOM_WARNING}")
        return StepResult(summary=summary)


def stage_model(model_path: Path, folder: Path) -> Path:
    """Link the model (and copy its external data) into `folder`, and return the link.

    ONNX Runtime's quantization tools write `<model>-inferred.onnx` beside the model
    they are given: beside a link in the step's scratch, not in out/, where steps
    running side by side would share (and race on) that file.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    names = {model_path.name}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in t.external_data if e.key == "location")
    import shutil

    (folder / model_path.name).symlink_to(model_path.resolve())
    for name in sorted(names - {model_path.name}):
        # Copied: onnx refuses external data reached through a symbolic link or a file with
        # several hard links (and out/ files are hard links into the store).
        shutil.copyfile((model_path.parent / name).resolve(), folder / name)
    return folder / model_path.name


def has_external_data(model_path: Path) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in onnx.load(str(model_path), load_external_data=False).graph.initializer)


def count_qdq_nodes(model_path: Path) -> int:
    """QuantizeLinear/DequantizeLinear nodes in the model (any domain, subgraphs included)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)

    def count(graph) -> int:
        n = 0
        for node in graph.node:
            n += node.op_type in QDQ_OPS
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    n += count(attr.g)
                n += sum(count(g) for g in attr.graphs)
        return n

    return count(model.graph)


# -- running the calibrator -----------------------------------------------------------


def collect_ranges(model_path: Path, method: str, batches: list[Callable[[], dict]], threads: int,
                   tmp: Path) -> dict[str, tuple[float, float]]:
    """(min, max) of every activation that ONNX Runtime's quantizer may quantize."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from buildsys.steps.sessions import session_options

    # The op types quantize_static calibrates by default: the tensors it will ask ranges for.
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    external = has_external_data(model_path)
    # Percentile keeps both tails apart (ORT's default folds them into |x|): the ranges
    # stay asymmetric, and a flavour that wants symmetric ones makes them so itself.
    options = {"symmetric": False}
    try:
        calibrator = create_calibrator(model_path, op_types, augmented_model_path=str(tmp / "augmented.onnx"),
                                       calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                                       use_external_data_format=external, extra_options=options)
        # The calibrator's own session takes every core and spins; run it like every other step.
        so = session_options(threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, so,
                                                        providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise StepError(f"ONNX Runtime cannot prepare the model for calibration: {_oneline(exc)}") from None
    for i, make in enumerate(batches):
        feeds = make()
        try:
            # One batch per call: the histogram calibrators keep every activation of a call
            # in memory, so feeding them all batches at once would hold the whole data set.
            calibrator.collect_data(_OneBatch(feeds))
        except Exception as exc:
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise StepError(f"the model failed on calibration batch {i} {shapes}: {_oneline(exc)}",
                            field="calibration.data") from None
    data = calibrator.compute_data()
    ranges, bad = {}, []
    for name, td in data.items():
        lo, hi = (float(np.asarray(v, dtype=np.float32).reshape(-1)[0]) for v in td.range_value)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad.append(f"{name} [{lo}, {hi}]")
        ranges[name] = (lo, hi)
    if bad:
        raise StepError(f"calibration found non-finite values in {len(bad)} tensors: {', '.join(sorted(bad)[:5])}",
                        field="calibration.data",
                        hint="the model produces inf/NaN on this data; check the data's range and scale")
    return ranges


class _OneBatch:
    """A CalibrationDataReader that hands out one batch of feeds, then ends."""

    def __init__(self, feeds: dict):
        self._feeds = [feeds]

    def get_next(self) -> dict | None:
        return self._feeds.pop() if self._feeds else None


# -- calibration data ---------------------------------------------------------------------


def view_sizes(shape: list, dims: dict[str, dict[str, int]]) -> list[tuple[int, int]]:
    """(height, width) of the image input at the opt, min and max points, each size once, opt first.

    A network's activations at one image size do not bound them at another: on
    EfficientNet-Lite0, ranges from 224x224 views alone turned every decided held-out
    view at the min point (160x160) to another class (top-1 agreement where fp32 is
    decided 92 %); views at 160, 224 and 256 in turn gave 100 %.
    """
    from buildsys.steps.inputs import concrete_shape

    sizes: list[tuple[int, int]] = []
    for point in ("opt", "min", "max"):
        h, w = concrete_shape(shape, dims, point)[2:4]  # an image input is [batch, channels, height, width]
        hw = (h, w)
        if hw not in sizes:
            sizes.append(hw)
    return sizes


def calibration_source(params: dict[str, Any], workspace: Path, files: dict[str, Path]) -> _Source:
    """The batches that feed the calibrator, at most `samples` of them."""
    data = params["calibration"]["data"]
    kind = data["kind"]
    if kind in RANDOM_KINDS:
        return _random_source(params)
    paths = [files[k] for k in sorted(files) if k.startswith("data.")]
    if not paths:
        raise StepError(f"calibration data of kind {kind} names no file", field=_DATA_FIELD)
    if kind == "npy":
        return _npy_source(params, paths, workspace)
    if kind == "images":
        return _image_source(params, paths, workspace)
    raise StepError(f"calibration data kind {kind!r} is not supported", field="calibration.data.kind",
                    hint="use uniform, normal, randint, npy or images")


def _fed_by_calibration(kind: str, dtype: str) -> bool:
    """Whether a random calibration kind describes an input of this dtype."""
    return (dtype in _FLOAT_DTYPES) == (kind in ("uniform", "normal"))


def _random_source(params: dict[str, Any]) -> _Source:
    from buildsys.steps.inputs import concrete_shape

    cal, dims = params["calibration"], params["dims"]
    kind = cal["data"]["kind"]
    inputs = {}
    for i, spec in enumerate(params["inputs"]):
        mine = _fed_by_calibration(kind, spec["dtype"])
        inputs[spec["name"]] = {"shape": list(concrete_shape(spec["shape"], dims, "opt")), "dtype": spec["dtype"],
                                "from": "calibration.data" if mine else f"inputs.{i}.data"}

    def make(sample: int) -> Callable[[], dict]:
        return lambda: _random_feeds(params, sample, dims_at=_opt(dims), skip=())

    manifest = {"kind": kind, **{k: cal["data"][k] for k in _RANDOM_FIELDS[kind]}, "inputs": inputs}
    return _Source([make(s) for s in range(cal["samples"])], manifest, f"{kind} data")


def _opt(dims: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {n: {"opt": d["opt"]} for n, d in dims.items()}


def _random_feeds(params: dict[str, Any], sample: int, dims_at: dict, skip: tuple[str, ...]) -> dict:
    """Seeded random values for every input but `skip`, at the shapes `dims_at` gives ("opt")."""
    import numpy as np

    from buildsys.steps.inputs import concrete_shape, generate

    kind = params["calibration"]["data"]["kind"]
    feeds = {}
    for i, spec in enumerate(params["inputs"]):
        if spec["name"] in skip:
            continue
        if kind in RANDOM_KINDS and _fed_by_calibration(kind, spec["dtype"]):
            spec, where = {**spec, "data": params["calibration"]["data"]}, "calibration.data"
        else:
            where = f"inputs.{i}.data"
        if spec["data"]["kind"] not in RANDOM_KINDS:
            raise StepError(f"input {spec['name']!r} ({spec['dtype']}) takes its calibration values from {where}, "
                            f"which is of kind {spec['data']['kind']}", field="calibration.data",
                            hint="give calibration data for every input as .npz files (one array per input name)")
        rng = np.random.default_rng([_STREAM, sample, i])
        shape = concrete_shape(spec["shape"], dims_at, "opt")
        feeds[spec["name"]] = generate(spec, shape, rng, Path("."), sample, where)
    return feeds


# -- .npy / .npz files --------------------------------------------------------------------


def _npy_source(params: dict[str, Any], paths: list[Path], workspace: Path) -> _Source:
    import numpy as np

    specs = params["inputs"]
    used = paths[: params["calibration"]["samples"]]
    problems, entries = [], []
    for path in used:
        name = _rel(path, workspace)
        try:
            arrays = _load_sample(path, specs, header_only=True)
        except StepError as exc:
            problems.append(f"{name}: {exc.message}")
            continue
        except (OSError, ValueError) as exc:  # not a numpy file, a pickled object array, a truncated file
            problems.append(f"{name}: not a readable .npy/.npz file ({_oneline(exc)[:120]})")
            continue
        found = _shape_problems(arrays, specs, params["dims"])
        problems.extend(f"{name}: {p}" for p in found)
        entries.append({"name": name, "shapes": {k: list(v.shape) for k, v in sorted(arrays.items())}})
    if problems:
        more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
        raise StepError(f"calibration data that does not fit the model's inputs: {'; '.join(problems[:6])}{more}",
                        field=_DATA_FIELD,
                        hint="each file is one sample at a shape within the recipe's dims, in the input's dtype "
                             "(np.save(path, array.astype('float32')); several inputs: np.savez(path, name=array, ...))")

    def make(path: Path) -> Callable[[], dict]:
        return lambda: {k: np.ascontiguousarray(v) for k, v in _load_sample(path, specs).items()}

    manifest = {"kind": "npy", "path_matches": len(paths), "files": entries}
    return _Source([make(p) for p in used], manifest, f"{len(used)} {_plural(len(used), 'file', 'files')}")


def _load_sample(path: Path, specs: list[dict], header_only: bool = False) -> dict:
    """The arrays of one sample file by input name; `header_only` maps a .npy instead of reading it."""
    import numpy as np

    loaded = np.load(path, allow_pickle=False, mmap_mode="r" if header_only else None)
    if not hasattr(loaded, "files"):  # a .npy: one array
        if len(specs) != 1:
            names = ", ".join(s["name"] for s in specs)
            raise StepError(f"a .npy file holds one array, the model has {len(specs)} inputs ({names}): "
                            "use .npz files with one array per input name")
        return {specs[0]["name"]: loaded}
    with loaded:
        missing = [s["name"] for s in specs if s["name"] not in loaded.files]
        if missing:
            raise StepError(f"no array named {', '.join(map(repr, missing))} (found {', '.join(loaded.files) or 'none'})")
        return {s["name"]: loaded[s["name"]] for s in specs}


def _shape_problems(arrays: dict, specs: list[dict], dims: dict[str, dict[str, int]]) -> list[str]:
    """What does not fit: dtype, rank, a fixed size, a dim outside [min, max] or sized two ways."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for spec in specs:
        arr = arrays[spec["name"]]
        expected = "[" + ", ".join(str(s) if isinstance(s, int) else f"{s} {dims[s]['min']}..{dims[s]['max']}"
                                   for s in spec["shape"]) + "]"
        fits = str(arr.dtype) == spec["dtype"] and arr.ndim == len(spec["shape"])
        for size, want in zip(arr.shape, spec["shape"]) if fits else ():
            if isinstance(want, int):
                fits &= size == want
            else:
                fits &= dims[want]["min"] <= size <= dims[want]["max"] and seen.setdefault(want, size) == size
        if not fits:
            out.append(f"input {spec['name']!r}: expected {spec['dtype']} {expected}, "
                       f"found {arr.dtype} {list(arr.shape)}")
    return out


# -- image folders ------------------------------------------------------------------------


def _image_source(params: dict[str, Any], paths: list[Path], workspace: Path) -> _Source:
    from buildsys.steps.inputs import concrete_shape

    data, dims = params["calibration"]["data"], params["dims"]
    preset = data.get("preset") or "imagenet"
    if preset != "imagenet":
        raise StepError(f"unknown image preset {preset!r}", field="calibration.data.preset", hint="use imagenet")
    target = _image_input(params["inputs"])
    shape = target["shape"]
    n, c, h, w = concrete_shape(shape, dims, "opt")
    if c != 3:
        raise StepError(f"the imagenet preset makes 3-channel NCHW images; input {target['name']!r} has "
                        f"{c} channels at the opt point", field="calibration.data.preset")
    sizes = _image_sizes(paths, workspace)
    batch_dim = shape[0] if isinstance(shape[0], str) else None
    smallest = dims[batch_dim]["min"] if batch_dim else n
    groups = [paths[i:i + n] for i in range(0, len(paths), n)]
    if groups and len(groups[-1]) < smallest:
        groups.pop()  # a trailing partial batch is kept only where the batch dim allows its size
    if not groups:
        raise StepError(f"the folder holds {len(paths)} images, fewer than one batch of {smallest}",
                        field=_DATA_FIELD, hint="add images, or lower the batch dim's min")
    samples = params["calibration"]["samples"]
    groups = groups[:samples]
    used = [p for g in groups for p in g]
    # The remaining batches: seeded views of the same files, each file in turn, at the image
    # sizes of the opt, min and max points in turn (`view_sizes`).
    views = [[used[(k * n + b) % len(used)] for b in range(n)] for k in range(samples - len(groups))]
    sizes_at = view_sizes(shape, dims)

    def make(sample: int, group: list[Path], view: bool, size: tuple[int, int] = (h, w)) -> Callable[[], dict]:
        def feeds() -> dict:
            import numpy as np

            from buildsys.steps.inputs import image_view

            rng = np.random.default_rng([_STREAM, sample])
            rows = [image_view(p, *size, rng, "calibration") if view else imagenet_image(p, h, w, workspace)
                    for p in group]
            images = np.stack(rows).astype(target["dtype"])
            at = {**_opt(dims), **({batch_dim: {"opt": len(group)}} if batch_dim else {})}
            return {target["name"]: images, **_random_feeds(params, sample, at, skip=(target["name"],))}
        return feeds

    manifest = {"kind": "images", "preset": preset, "input": target["name"], "shape": [n, c, h, w],
                "files_in_folder": len(paths), "view_batches": len(views),
                "view_sizes": [list(hw) for hw in sizes_at],
                "files": [{"name": _rel(p, workspace), "size": sizes[p]} for p in used]}
    label = f"{len(used)} {_plural(len(used), 'image', 'images')} ({preset} preset)"
    if views:
        label += f", then {len(views)} of seeded views of them"
    batches = [make(i, g, False) for i, g in enumerate(groups)]
    batches += [make(len(groups) + k, g, True, sizes_at[k % len(sizes_at)]) for k, g in enumerate(views)]
    return _Source(batches, manifest, label)


def _image_input(specs: list[dict]) -> dict:
    found = [s for s in specs if s["dtype"] in _FLOAT_DTYPES and len(s["shape"]) == 4]
    if len(found) != 1:
        have = ", ".join(f"{s['name']} {s['dtype']} rank {len(s['shape'])}" for s in specs)
        raise StepError(f"images feed exactly one 4-d float input (NCHW); the model has: {have}",
                        field="calibration.data.kind", hint="give calibration data as .npy/.npz files instead")
    return found[0]


def _image_sizes(paths: list[Path], workspace: Path) -> dict[Path, list[int]]:
    """Every file's [width, height]; all the files that are not images, named at once."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise StepError("calibration data of kind images needs Pillow, which is not installed",
                        field="calibration.data.kind", hint="pip install pillow") from None

    sizes, bad = {}, []
    for p in paths:
        try:
            with Image.open(p) as img:
                sizes[p] = list(img.size)
        except UnidentifiedImageError:
            bad.append(_rel(p, workspace))
        except OSError as exc:
            bad.append(f"{_rel(p, workspace)} ({_oneline(exc)[:80]})")
    if bad:
        raise StepError(f"not an image: {', '.join(bad)}", field=_DATA_FIELD,
                        hint="the folder must hold only images (JPEG, PNG, ...); move other files elsewhere")
    return sizes


def imagenet_image(path: Path, h: int, w: int, workspace: Path):
    """The torchvision ImageNet evaluation transform at (h, w): resize, center crop, normalise; CHW."""
    import numpy as np
    from PIL import Image, ImageOps

    from buildsys.steps.inputs import IMAGENET_MEAN, IMAGENET_STD

    try:
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
    except OSError as exc:  # truncated or corrupt after a valid header
        raise StepError(f"cannot decode image {_rel(path, workspace)}: {_oneline(exc)}", field=_DATA_FIELD) from None
    # Shorter side to 256/224 of the crop (256 for a 224 crop); the larger crop side decides,
    # so that a non-square crop always fits inside the resized image.
    short = round(256 * max(h, w) / 224)
    iw, ih = img.size
    scale = short / min(iw, ih)
    size = (max(w, round(iw * scale)), max(h, round(ih * scale)))
    img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - w) // 2, (size[1] - h) // 2
    img = img.crop((left, top, left + w, top + h))
    arr: np.ndarray = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return arr.transpose(2, 0, 1)


# -- small helpers ------------------------------------------------------------------------


def _rel(path: Path, workspace: Path) -> str:
    try:
        return path.resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:
        return path.name


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many
