"""The resolver: recipes in, a graph of fully specified steps out.

Everything a step needs is decided here — its parameters (the slice of the
recipe it reads), where its inputs come from, where its outputs go — so the
executor never reads a recipe and a step never looks at the recipe file.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.core.datafiles import DataPathError, GlobTooWide, inside_workspace, npy_files
from buildsys.core.kinds import KINDS, step_class
from buildsys.core.reads import Reads
from buildsys.recipe.model import Recipe, TargetSpec


@dataclass(frozen=True)
class StepSpec:
    id: str  # "<recipe>:<name>", e.g. "resnet18:parity[fp32]"
    recipe: str
    name: str  # "export", "parity[fp32]", "engine[onnxruntime-fp32]"
    kind_path: str  # "module:Class" of the step implementation
    params: dict[str, Any]  # the recipe slice the step reads; part of its key
    inputs: dict[str, str] = field(default_factory=dict)  # name -> "<step id>#<output>"
    gates: tuple[str, ...] = ()  # steps that must have passed (their content is not read)
    outputs: dict[str, str] = field(default_factory=dict)  # name -> path under out/
    files: dict[str, str] = field(default_factory=dict)  # name -> workspace-relative path
    timeout: float = 3600.0
    # What the step's class says, read once when the graph is made (Graph fills them in):
    kind: str = ""  # its KIND, the key's "step"
    version: int = 0  # its VERSION
    tools: tuple[str, ...] = ()  # the distributions whose versions its key holds
    device: bool | str = False  # True: bound to this processor; "gpu": holds the GPU while it runs
    lane: str = ""  # the worker template it forks from (buildsys.runners.worker.LANES)
    resident: bool = False  # runs in a long-lived process of its worker
    unavailable: str | None = None  # why this machine cannot run the step (its class's `unavailable`), or None

    @property
    def data_upstream(self) -> set[str]:
        """The upstream steps whose artifacts this step reads (not those that only gate it)."""
        return {ref.partition("#")[0] for ref in self.inputs.values()}

    @property
    def upstream(self) -> set[str]:
        return self.data_upstream | set(self.gates)

    @property
    def log(self) -> str:
        return f"{self.recipe}/logs/{self.name.replace('[', '-').rstrip(']')}.log"

    @property
    def family(self) -> str:
        """The step's name without its bracket: what `--only` matches."""
        return self.name.partition("[")[0]


@dataclass(frozen=True)
class Graph:
    steps: dict[str, StepSpec]  # in a valid topological order
    recipes: dict[str, Recipe] = field(default_factory=dict)  # for locating fields in messages

    def __post_init__(self) -> None:
        """Each step's facts from its class, once: nothing after the graph looks a step class up to schedule."""
        for sid, step in self.steps.items():
            if not step.kind:
                self.steps[sid] = with_facts(step)

    def locate(self, recipe: str, field_path: str | None) -> str:
        """`recipes/r.yaml:12:5: export.opset: ` for a step failure about a recipe field."""
        r = self.recipes.get(recipe)
        if r is None:
            return ""
        if not field_path:
            return f"{r.file}: "
        return f"{r.where(field_path)}: {field_path}: "

    def dependents(self, step_id: str) -> list[str]:
        return [s.id for s in self.steps.values() if step_id in s.upstream]

    def closure(self, wanted: set[str]) -> set[str]:
        """`wanted` and everything it depends on."""
        todo, seen = list(wanted), set()
        while todo:
            sid = todo.pop()
            if sid not in seen:
                seen.add(sid)
                todo.extend(self.steps[sid].upstream)
        return seen


def with_facts(step: StepSpec) -> StepSpec:
    """`step` with what its class declares: kind, version, tools, device, lane, residency, and whether it can run here.

    `unavailable` asks the machine (a stat where there is no GPU, `nvidia-smi` once per process where there
    is) and imports no library a step runs with.
    """
    cls = step_class(step.kind_path)
    return dataclasses.replace(step, kind=cls.KIND, version=cls.VERSION, tools=tuple(cls.TOOLS), device=cls.DEVICE,
                               lane=cls.lane(step.params), resident=bool(cls.RESIDENT),
                               unavailable=cls.unavailable(step.params))


def _asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj


def model_params(r: Recipe) -> dict[str, Any]:
    """What export and reference both read: the model and its input/output signature."""
    # The kinds a recipe does not use are left out, so a PyTorch recipe's keys name only its factory.
    return {
        "model": {k: v for k, v in _asdict(r.model).items() if v is not None or k not in ("onnx", "tensorflow")},
        "inputs": [_asdict(i) for i in r.inputs],
        "outputs": [o.name for o in r.outputs],
        "dims": {d.name: _dim(d) for d in r.dims},
    }


def _dim(d) -> dict[str, int]:
    """A dim's sizes; `multiple_of` only where the recipe sets it, so that other recipes keep their keys."""
    return {"min": d.min, "opt": d.opt, "max": d.max, **({"multiple_of": d.multiple_of} if d.multiple_of > 1 else {})}


def resolve(recipes: list[Recipe], root: Path, reads: Reads | None = None) -> Graph:
    """Every recipe's steps; `root` is the workspace the recipes' paths are relative to.

    `reads` notes every folder a data glob can reach, for the no-op answer.
    """
    steps: dict[str, StepSpec] = {}
    for r in recipes:
        for s in resolve_recipe(r, root, reads):
            steps[s.id] = s
    return Graph(steps, {r.name: r for r in recipes})


def resolve_recipe(r: Recipe, root: Path, reads: Reads | None = None) -> list[StepSpec]:
    n = r.name
    files = {"checkpoint": r.model.checkpoint} if r.model.checkpoint else {}
    files.update(input_files(r, root, reads))
    base = model_params(r)
    shapes = random_shapes(r)
    drawn, held = parity_split(r, root)
    export = StepSpec(
        id=f"{n}:export", recipe=n, name="export", kind_path=KINDS["export"],
        params={**base, "export": _asdict(r.export)},
        outputs={"model": f"{n}/model.onnx"}, files=files,
    )
    reference = StepSpec(
        id=f"{n}:reference", recipe=n, name="reference", kind_path=KINDS["reference"],
        params={**base, "parity": {"samples": r.parity.samples, "seed": r.parity.seed,
                                   "points": list(r.parity.points) + list(shapes), "shapes": shapes,
                                   **({"files": drawn} if drawn else {})}},
        outputs={"reference": f"{n}/reference.npz"}, files=files,
    )
    if r.model.kind != "pytorch":  # an ONNX file is checked, a TensorFlow model converted: not exported
        export, reference = ingest_steps(r, root, base, reference.params["parity"], input_files(r, root))
    steps = [export, reference]
    candidate = f"{export.id}#model"
    if r.simplify.enabled:
        simplify = StepSpec(
            id=f"{n}:simplify", recipe=n, name="simplify", kind_path=KINDS["simplify"],
            params={"simplify": _asdict(r.simplify)},
            inputs={"model": candidate}, outputs={"model": f"{n}/model.sim.onnx"},
        )
        steps.append(simplify)
        candidate = f"{simplify.id}#model"

    parities = {"fp32": _parity(r, "fp32", candidate, reference)}
    steps.append(parities["fp32"])
    quantized: dict[str, str] = {}
    int8_targets = [t for t in r.targets if t.precision == "int8"]
    if int8_targets:
        calibrate = StepSpec(
            id=f"{n}:calibrate", recipe=n, name="calibrate", kind_path=KINDS["calibrate"],
            params={"calibration": _asdict(r.calibration), "inputs": base["inputs"], "dims": base["dims"],
                    **({"held_out": held} if held else {})},
            inputs={"model": candidate}, files=calibration_files(r, root, reads),
            outputs={"ranges": f"{n}/calib.json"},
        )
        steps.append(calibrate)
        # ONNX Runtime's flavour always exists: parity[int8] runs it on this machine.
        flavours = ["onnxruntime"] + (["tensorrt"] if any(_on_tensorrt(t) for t in int8_targets) else [])
        cpu = _int8_cpu(r)
        for flavour in flavours:
            q = StepSpec(
                id=f"{n}:quantize[{flavour}]", recipe=n, name=f"quantize[{flavour}]", kind_path=KINDS["quantize"],
                params={"flavour": flavour, "settings": flavour_settings(flavour, cpu),
                        "calibration": {"per_channel": r.calibration.per_channel if r.calibration else None},
                        "quantization": {"exclude": list(r.quantization.exclude),
                                         **({"cpu": cpu} if flavour == "onnxruntime" else {})}},
                inputs={"model": candidate, "ranges": f"{calibrate.id}#ranges"},
                outputs={"model": f"{n}/model.int8.onnx" if flavour == "onnxruntime"
                         else f"{n}/model.int8.{flavour}.onnx"},
            )
            steps.append(q)
            quantized[flavour] = f"{q.id}#model"
        if r.quantization.fallback == "auto":
            fallback = _fallback(r, cpu, candidate, calibrate, quantized["onnxruntime"], reference, base, root)
            steps.append(fallback)
            quantized["onnxruntime"] = f"{fallback.id}#model"
        parities["int8"] = _parity(r, "int8", quantized["onnxruntime"], reference)
        # int8 parity also times the int8 model against fp32 and names the CPU class it was made for
        parities["int8"] = dataclasses.replace(
            parities["int8"], inputs={**parities["int8"].inputs, "fp32": candidate},
            params={**parities["int8"].params,
                    "quantization": {"cpu": cpu, "exclude": list(r.quantization.exclude)},
                    "data": judged_data(r, drawn, held)})
        steps.append(parities["int8"])
    if any(_needs_fp16_onnx(t) for t in r.targets):
        # The fp16 ONNX (float32 inputs and outputs kept) that fp16 engines build from; its parity runs on the CPU.
        convert = StepSpec(
            id=f"{n}:convert[fp16]", recipe=n, name="convert[fp16]", kind_path=KINDS["convert-fp16"],
            params={}, inputs={"model": candidate}, outputs={"model": f"{n}/model.fp16.onnx"},
        )
        steps.append(convert)
        quantized["fp16"] = f"{convert.id}#model"
        parities["fp16"] = _parity(r, "fp16", quantized["fp16"], reference)
        steps.append(parities["fp16"])

    for t in r.targets:
        steps.append(_engine(r, t, candidate, quantized, parities, reference, base))
    return steps


def judged_data(r: Recipe, drawn: dict[str, list[str]], held: list[str]) -> dict[str, Any]:
    """What parity judges on, per input, for the reports: the kind, and the files of real data."""
    out = {}
    for inp in r.inputs:
        d = inp.data
        if d.kind in ("uniform", "normal", "randint"):
            fields = ("low", "high") if d.kind in ("uniform", "randint") else ("mean", "std")
            out[inp.name] = {"kind": d.kind, **{k: getattr(d, k) for k in fields}}
            continue
        files = drawn.get(inp.name)
        out[inp.name] = {"kind": d.kind, "path": d.path, **({"preset": d.preset} if d.kind == "images" else {}),
                         "files": files, "held_out_of_calibration": len([f for f in files or () if f in held])}
    return out


def random_shapes(r: Recipe) -> dict[str, dict[str, int]]:
    """Seeded shape points inside the declared ranges, besides min/opt/max: "random1" -> {dim: size}.

    A graph that holds only at the sizes it was traced at (a size frozen by the
    tracer, a range the exporter narrowed) fails parity at one of them. A dim with
    `multiple_of` draws only its multiples (with 1, the draws are as they always were).
    """
    import random

    if not any(d.min < d.max for d in r.dims) or any(i.data is not None and i.data.kind == "npy" for i in r.inputs):
        return {}  # nothing to draw, or the data files fix the shapes
    rng = random.Random(r.parity.seed)
    corners = {tuple(getattr(d, p) for d in r.dims) for p in ("min", "opt", "max")}
    out: dict[str, dict[str, int]] = {}
    for k in range(r.parity.random_shapes):
        for _ in range(8):  # prefer a shape that is not a corner
            sizes = tuple(_draw(rng, d.sizes()) for d in r.dims)
            if sizes not in corners:
                break
        corners.add(sizes)
        out[f"random{k + 1}"] = {d.name: s for d, s in zip(r.dims, sizes)}
    return out


def _draw(rng, sizes: range) -> int:
    return rng.randint(0, len(sizes) - 1) * sizes.step + sizes.start


def _data_problem(r: Recipe, field_path: str, exc: DataPathError):
    from buildsys.core.errors import Problem, RecipeError

    at = field_path
    while at and at not in r.positions:
        at = at.rpartition(".")[0]
    f, line, col = r.positions.get(at, (r.file, None, None))
    if isinstance(exc, GlobTooWide):
        hint = "name the folder the data is in (data/calib/*.npy rather than **/*.npy)"
    else:
        hint = "data files must be inside the project (not reached through '..' or a symbolic link out of it): copy them in"
    return RecipeError([Problem(f, line, col, field_path, str(exc), hint=hint)])


def input_files(r: Recipe, root: Path, reads: Reads | None = None) -> dict[str, str]:
    """The files behind `npy` and `images` inputs, by content in the key: new data re-runs the reference.

    An input whose files calibration also reads keeps only its held-out share (see `parity_split`).
    """
    files = {}
    drawn, _ = parity_split(r, root, reads)
    for n, inp in enumerate(r.inputs):
        data = inp.data
        if data is None or data.kind not in ("npy", "images") or not data.path:
            continue
        found = drawn.get(inp.name) or _data_files(r, root, data, f"inputs.{n}.data.path", reads)
        for i, p in enumerate(found):
            files[f"input.{inp.name}.{i:04d}"] = p
    return files


def parity_split(r: Recipe, root: Path, reads: Reads | None = None) -> tuple[dict[str, list[str]], list[str]]:
    """The files each real-data input's parity draws from, and the files held out of calibration.

    Where an input's files (an `images` folder, an `npy` glob) are also calibration's,
    `parity.holdout` of those shared files, chosen with the parity seed, are judged on
    and never calibrated on; the rest calibrate and are never judged on. An `images`
    input always lists its files here (they are what parity draws views of); an `npy`
    input only when split, so that an fp32 recipe's keys stay as they were.
    Paths are workspace-relative.
    """
    import random

    calib_data = r.calibration.data if r.calibration else None
    calibrated = set(_data_files(r, root, calib_data, "calibration.data.path", reads)) \
        if calib_data is not None and calib_data.kind in ("npy", "images") and calib_data.path else set()
    drawn: dict[str, list[str]] = {}
    held: set[str] = set()
    for n, inp in enumerate(r.inputs):
        data = inp.data
        if data is None or data.kind not in ("npy", "images") or not data.path:
            continue
        found = _data_files(r, root, data, f"inputs.{n}.data.path", reads)
        shared = [f for f in found if f in calibrated]
        if shared:
            k = max(1, round(r.parity.holdout * len(shared)))
            if len(calibrated - held) - k < 1:
                from buildsys.core.errors import Problem, RecipeError

                f, line, col = r.positions.get("parity.holdout", r.positions.get(f"inputs.{n}.data.path",
                                                                                (r.file, None, None)))
                raise RecipeError([Problem(f, line, col, "parity.holdout",
                                           f"holding {k} of the {len(shared)} files that inputs.{n}.data shares with "
                                           f"calibration out for parity leaves calibration none",
                                           hint="add files to the data folder, or judge on other data")])
            chosen = set(random.Random(f"holdout:{r.parity.seed}:{inp.name}").sample(shared, k))
            held |= chosen
            drawn[inp.name] = [f for f in found if f not in calibrated or f in chosen]
        elif data.kind == "images":
            drawn[inp.name] = found
    return drawn, sorted(held)


def _data_files(r: Recipe, root: Path, data, field_path: str, reads: Reads | None = None) -> list[str]:
    """The workspace-relative files an `npy` glob matches or an `images` folder holds (its own files, sorted)."""
    if reads is not None and data.kind == "npy":
        reads.glob(root, data.path)
    elif reads is not None:  # an images folder's own files, no sub-folders
        reads.file(root / data.path)
    try:
        if data.kind == "npy":
            found = npy_files(root, data.path)
        else:
            folder = root / data.path
            found = sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            inside_workspace(root, found)
    except DataPathError as exc:
        raise _data_problem(r, field_path, exc) from None
    return [Path(p).relative_to(root).as_posix() for p in found]


def calibration_files(r: Recipe, root: Path, reads: Reads | None = None) -> dict[str, str]:
    """The calibration data files, by content in the key: a changed image re-calibrates.

    The files held out for parity (`parity_split`) are not among them.
    """
    data = r.calibration.data if r.calibration else None
    if data is None or data.kind not in ("npy", "images") or not data.path:
        return {}
    found = _data_files(r, root, data, "calibration.data.path", reads)
    if not found:
        from buildsys.core.errors import Problem, RecipeError

        f, line, col = r.positions.get("calibration.data.path", (r.file, None, None))
        what = "glob" if data.kind == "npy" else "folder"
        raise RecipeError([Problem(f, line, col, "calibration.data.path",
                                   f"the {what} {data.path!r} matches no file",
                                   hint="paths are relative to the workspace root")])
    _, held = parity_split(r, root)
    return {f"data.{i:04d}": p for i, p in enumerate(p for p in found if p not in set(held))}


def flavour_settings(flavour: str, cpu: str) -> dict[str, Any]:
    """Every choice of an int8 flavour, in the keys of the steps that quantize with it."""
    from buildsys.core.flavours import flavour_for

    return dataclasses.asdict(flavour_for(flavour, cpu if flavour == "onnxruntime" else None))


def _int8_cpu(r: Recipe) -> str:
    """The CPU class of ONNX Runtime's int8 flavour: the recipe's, or this machine's for `auto`."""
    from buildsys.core.toolchain import cpu_class

    return cpu_class() if r.quantization.cpu == "auto" else r.quantization.cpu


def _fallback(r: Recipe, cpu: str, candidate: str, calibrate: StepSpec, quantized: str, reference: StepSpec,
              base: dict[str, Any], root: Path) -> StepSpec:
    n = r.name
    q = r.quantization
    return StepSpec(
        id=f"{n}:fallback[onnxruntime]", recipe=n, name="fallback[onnxruntime]", kind_path=KINDS["fallback"],
        params={"calibration": _asdict(r.calibration), "inputs": base["inputs"], "dims": base["dims"],
                "outputs": base["outputs"], "tolerances": {"int8": _asdict(r.tolerances["int8"])},
                "quantization": {"cpu": cpu, "exclude": list(q.exclude), "max_fp32_nodes": q.max_fp32_nodes},
                **_unordered(r), "settings": flavour_settings("onnxruntime", cpu)},
        inputs={"model": candidate, "ranges": f"{calibrate.id}#ranges", "quantized": quantized,
                "reference": f"{reference.id}#reference"},
        files=dict(calibrate.files),
        outputs={"model": f"{n}/model.int8.fallback.onnx", "report": f"{n}/fallback.json"},
    )


def _parity(r: Recipe, precision: str, candidate: str, reference: StepSpec) -> StepSpec:
    n = r.name
    return StepSpec(
        id=f"{n}:parity[{precision}]", recipe=n, name=f"parity[{precision}]", kind_path=KINDS["parity"],
        params={
            "precision": precision,
            "tolerances": {precision: _asdict(r.tolerances[precision])},
            "outputs": [o.name for o in r.outputs],
            **_unordered(r),
        },
        inputs={"model": candidate, "reference": f"{reference.id}#reference"},
        outputs={"result": f"{n}/parity/{precision}.json"},
    )


def _unordered(r: Recipe) -> dict[str, Any]:
    """`parity.unordered` for the steps that compare outputs; absent where unset, so other recipes keep their keys."""
    return {"parity": {"unordered": list(r.parity.unordered)}} if r.parity.unordered else {}


def _on_tensorrt(t: TargetSpec) -> bool:
    """TensorRT runs the target: the tensorrt backend, or ONNX Runtime's TensorRT provider."""
    return t.backend == "tensorrt" or (t.backend == "onnxruntime" and t.provider == "tensorrt")


def _needs_fp16_onnx(t: TargetSpec) -> bool:
    """fp16 targets that build from the fp16 ONNX: TensorRT (strongly typed) and ONNX Runtime on CUDA."""
    return t.precision == "fp16" and (t.backend == "tensorrt" or (t.backend == "onnxruntime" and t.provider == "cuda"))


# Fields left out of a target's slice while they hold their default: targets that do not use them keep their keys.
_UNSET_TARGET = {"provider": None, "tf32": False, "cpu_nodes": ()}


def _target(t: TargetSpec) -> dict[str, Any]:
    """The target's fields, but those that hold their default and only GPU targets set (see _UNSET_TARGET)."""
    return {k: v for k, v in _asdict(t).items() if not (k in _UNSET_TARGET and v == _UNSET_TARGET[k])}


def _engine(r: Recipe, t: TargetSpec, candidate: str, quantized: dict[str, str], parities: dict[str, StepSpec],
            reference: StepSpec, base: dict[str, Any]) -> StepSpec:
    n = r.name
    common: dict[str, Any] = dict(id=f"{n}:engine[{t.id}]", recipe=n, name=f"engine[{t.id}]")
    gate = parities["int8" if t.precision == "int8" else "fp16" if _needs_fp16_onnx(t) else "fp32"].id
    profiles = [{k: {"name": d.name, **_dim(d)} for k, d in r.profile_dims(i).items()}
                for i in range(1 + len(r.profiles))]
    if t.backend == "onnxruntime" and t.provider in ("cuda", "tensorrt"):
        # On the GPU: the parity of the model as the provider runs it; the TensorRT provider's engines are cached.
        model = (quantized[t.provider] if t.precision == "int8" else quantized["fp16"] if _needs_fp16_onnx(t)
                 else candidate)
        from buildsys.core.gpu import cuda_options

        return StepSpec(**common, kind_path=KINDS[f"engine-onnxruntime-{t.provider}"],
                        params={"target": _target(t), "inputs": base["inputs"], "outputs": base["outputs"],
                                "profiles": profiles[:1],
                                "tolerances": {t.precision: _asdict(r.tolerances[t.precision])}, **_unordered(r),
                                # what the provider is told, in the key and in the step's report
                                "provider_options": cuda_options(tf32=t.tf32)},
                        inputs={"model": model, "reference": f"{reference.id}#reference"}, gates=(gate,),
                        outputs={"result": f"{n}/parity/{t.id}.json"})
    if t.backend == "onnxruntime":
        model = quantized["onnxruntime"] if t.precision == "int8" else candidate
        return StepSpec(**common, kind_path=KINDS["engine-onnxruntime"], params={"target": _target(t), **_unordered(r)},
                        inputs={"model": model, "reference": f"{reference.id}#reference"}, gates=(gate,),
                        outputs={"engine": f"{n}/engines/{t.id}.ort"})
    if t.backend == "tensorrt":
        model = quantized["tensorrt"] if t.precision == "int8" else quantized["fp16"] if _needs_fp16_onnx(t) \
            else candidate
        precision = "fp16" if t.precision == "best" else t.precision
        return StepSpec(**common, kind_path=KINDS["engine-tensorrt"],
                        params={"target": _target(t), "inputs": base["inputs"], "outputs": base["outputs"],
                                "profiles": profiles,
                                "tolerances": {precision: _asdict(r.tolerances[precision])}, **_unordered(r)},
                        inputs={"model": model, "reference": f"{reference.id}#reference"}, gates=(gate,),
                        outputs={"engine": f"{n}/engines/{t.id}.plan", "result": f"{n}/parity/{t.id}.json"})
    # torchscript: compiled from the PyTorch model itself and checked against eager
    return StepSpec(**common, kind_path=KINDS["engine-torchscript"],
                    params={**base, "target": _target(t), "tolerances": {"fp32": _asdict(r.tolerances["fp32"])},
                            **_unordered(r)},
                    inputs={"reference": f"{reference.id}#reference"},
                    files={"checkpoint": r.model.checkpoint} if r.model.checkpoint else {},
                    outputs={"engine": f"{n}/engines/torchscript.pt", "result": f"{n}/parity/torchscript.json"})


# -- a model that is not a PyTorch factory ------------------------------------------
# `model: {onnx: FILE}` starts at `check` (the file verified as an export is) with ONNX Runtime
# on it as the reference; `model: {tensorflow: ...}` starts at `convert` (tf2onnx) with TensorFlow
# itself as the reference. Both produce `out/<recipe>/model.onnx`, so what follows is the same.


def model_files(r: Recipe, root: Path) -> dict[str, str]:
    """The workspace files the model is made of, by content in the keys: the ONNX file, or every
    file of the SavedModel folder, or the .keras file."""
    if r.model.onnx:
        return {"model": r.model.onnx}
    tf = r.model.tensorflow
    assert tf is not None  # a model with files is ONNX or TensorFlow
    if tf.keras:
        return {"model": tf.keras}
    assert tf.saved_model is not None  # one of the two is set
    folder = root / tf.saved_model
    found = sorted(Path(d, f) for d, _, names in os.walk(folder) for f in names)
    return {f"model.{i:04d}": p.relative_to(root).as_posix() for i, p in enumerate(found)}


def ingest_steps(r: Recipe, root: Path, base: dict[str, Any], parity: dict[str, Any], extra_files: dict[str, str]):
    """(the step that yields model.onnx, the reference step) for an ONNX or TensorFlow model."""
    n = r.name
    files = model_files(r, root)
    params = {**base, "export": {"opset": r.export.opset}}
    if r.model.onnx:
        first = StepSpec(id=f"{n}:check", recipe=n, name="check", kind_path=KINDS["check"], params=params,
                         outputs={"model": f"{n}/model.onnx"}, files=files)
        reference = StepSpec(id=f"{n}:reference", recipe=n, name="reference",
                             kind_path=KINDS["reference-onnxruntime"],
                             params={**base, "parity": parity}, inputs={"model": f"{first.id}#model"},
                             outputs={"reference": f"{n}/reference.npz"}, files=extra_files)
        return first, reference
    first = StepSpec(id=f"{n}:convert", recipe=n, name="convert", kind_path=KINDS["convert"], params=params,
                     outputs={"model": f"{n}/model.onnx"}, files=files)
    reference = StepSpec(id=f"{n}:reference", recipe=n, name="reference", kind_path=KINDS["reference-tensorflow"],
                         params={**base, "parity": parity}, outputs={"reference": f"{n}/reference.npz"},
                         files={**files, **extra_files})
    return first, reference
