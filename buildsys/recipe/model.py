"""The resolved recipe: frozen dataclasses with every default filled in.

`buildsys.recipe.load` produces these from YAML after validation; everything
downstream (resolver, steps, reports) reads only these objects, never the file.
Defaults here mirror the defaults in `schemas/recipe.schema.json`; the schema
tests check the two agree.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

POINTS = ("min", "opt", "max")


@dataclass(frozen=True)
class DataSpec:
    """How to produce values for one input (parity inputs or calibration)."""

    kind: str = "uniform"  # uniform | normal | randint | npy | images
    low: float = 0.0
    high: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    path: str | None = None  # npy: a glob; images: a folder (workspace-relative)
    preset: str | None = None  # images: preprocessing preset, e.g. "imagenet"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # float32 | float16 | int64 | int32 | bool | ...
    shape: tuple[int | str, ...]  # an int is fixed, a str names a dim
    data: DataSpec = DataSpec()


@dataclass(frozen=True)
class OutputSpec:
    name: str


@dataclass(frozen=True)
class Dim:
    name: str
    min: int
    opt: int
    max: int
    multiple_of: int = 1  # every size the model takes is a multiple of this (min, opt, max included)

    def at(self, point: str) -> int:
        return getattr(self, point)

    def sizes(self) -> range:
        """Every size of the declared range that the model takes."""
        first = -(-self.min // self.multiple_of) * self.multiple_of
        return range(first, self.max + 1, self.multiple_of)


@dataclass(frozen=True)
class TensorFlowSpec:
    """A TensorFlow model, converted to ONNX with tf2onnx: one of the two is set."""

    saved_model: str | None = None  # workspace-relative SavedModel folder
    keras: str | None = None  # workspace-relative .keras file


@dataclass(frozen=True)
class ModelSpec:
    """The model: a PyTorch factory, an existing ONNX file, or a TensorFlow model (exactly one)."""

    factory: str = ""  # "module.path:callable"
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # workspace-relative state_dict file
    onnx: str | None = None  # workspace-relative .onnx file, used as it is
    tensorflow: TensorFlowSpec | None = None

    @property
    def kind(self) -> str:
        """pytorch | onnx | tensorflow: which steps produce the ONNX model and the reference."""
        return "onnx" if self.onnx else "tensorflow" if self.tensorflow else "pytorch"

    @property
    def module(self) -> str:
        return self.factory.partition(":")[0]

    @property
    def attr(self) -> str:
        return self.factory.partition(":")[2]


@dataclass(frozen=True)
class ExportSpec:
    opset: int = 18
    exporter: str = "dynamo"  # dynamo | torchscript
    strict_trace: bool = False  # torchscript: a TracerWarning refuses the trace


@dataclass(frozen=True)
class SimplifySpec:
    enabled: bool = True
    fallback: bool = False  # onnxsim in a child process; on any failure keep the exported model
    passes: tuple[str, ...] = ("onnxsim",)  # onnxsim | onnxoptimizer, run in the order written
    onnxoptimizer: tuple[str, ...] = ()  # onnxoptimizer's passes; () means its fuse-and-eliminate set


@dataclass(frozen=True)
class CalibrationSpec:
    data: DataSpec = DataSpec()
    samples: int = 64
    method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True


@dataclass(frozen=True)
class QuantizationSpec:
    cpu: str = "auto"  # auto | vnni | avx2: the CPU class of ONNX Runtime's int8 flavour
    exclude: tuple[str, ...] = ()  # node names kept in fp32
    fallback: str = "off"  # off | auto: sensitivity-guided fp32 fallback when parity[int8] fails
    max_fp32_nodes: int = 8


@dataclass(frozen=True)
class TargetSpec:
    backend: str  # onnxruntime | tensorrt | torchscript
    precision: str = "fp32"  # fp32 | fp16 | int8 | best
    workspace: int | None = None  # bytes (TensorRT)
    mode: str | None = None  # torchscript: script | trace
    provider: str | None = None  # onnxruntime: cpu (None) | cuda | tensorrt (execution provider)
    tf32: bool = False  # onnxruntime on cuda: fp32 convolutions and matmuls may use TF32 tensor cores
    cpu_nodes: tuple[str, ...] = ()  # onnxruntime on a GPU provider: op types or node names allowed on the CPU

    @property
    def id(self) -> str:
        if self.backend == "torchscript":
            return "torchscript"
        if self.provider not in (None, "cpu"):
            return f"{self.backend}-{self.provider}-{self.precision}"
        return f"{self.backend}-{self.precision}"


@dataclass(frozen=True)
class Tolerance:
    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None
    min_top1_decided: float | None = None  # top-1 agreement where the reference's top-1 margin >= 0.1
    max_scaled_error: float | None = None  # max |got - ref| over the output's largest |ref|


# Tolerances of each precision when the recipe gives none; an entry in the recipe
# replaces its precision's default entirely (schema: `tolerances.default`).
# fp16, from benchmarks/fp16_tolerances.py (15 healthy models on the CPU's float16 emulation, which
# matches what an H100 gave within 5%): the largest error is 0.06% to 1.1% of the output's scale
# (EfficientNet-Lite0 the worst; 3x margin), the lowest cosine 0.99996 (27x margin on 1 - cosine),
# decided top-1 agreement 100%; the broken models give Inf/NaN, or 97% of the scale and cosine 0.05.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(max_scaled_error=0.03, min_cosine=0.999, min_top1_decided=0.99),
    "int8": Tolerance(min_cosine=0.99),
    "best": Tolerance(atol=1e-2, rtol=1e-2),
}


@dataclass(frozen=True)
class ParitySpec:
    samples: int = 1
    seed: int = 0
    points: tuple[str, ...] = POINTS
    random_shapes: int = 2  # seeded extra shape points inside the declared ranges
    unordered: tuple[str, ...] = ()  # outputs sharing their first axis, compared as rows in any order
    holdout: float = 0.25  # real data that calibration also reads: the share of its files kept for parity
    max_regression: float | None = None  # check --baseline: allowed growth factor (None: the command's)


@dataclass(frozen=True)
class Recipe:
    """One model's build description, fully resolved."""

    name: str
    file: str  # workspace-relative path of the recipe file
    sources: tuple[str, ...]  # the recipe file and every file it extends, in order
    model: ModelSpec
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    dims: tuple[Dim, ...]
    description: str = ""
    version: int = 1
    profiles: tuple[dict[str, dict[str, int]], ...] = ()
    export: ExportSpec = ExportSpec()
    simplify: SimplifySpec = SimplifySpec()
    calibration: CalibrationSpec | None = None
    quantization: QuantizationSpec = QuantizationSpec()
    targets: tuple[TargetSpec, ...] = (TargetSpec("onnxruntime", "fp32"),)
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    parity: ParitySpec = ParitySpec()
    # "field.path" -> (file, line, column) of the file that set it; not part of any key.
    positions: dict[str, tuple[str, int, int]] = field(default_factory=dict, compare=False)

    def dim(self, name: str) -> Dim:
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    def shape_at(self, inp: InputSpec, point: str, profile: int = 0) -> tuple[int, ...]:
        """The concrete shape of `inp` at a profile's min/opt/max point."""
        dims = self.profile_dims(profile)
        return tuple(s if isinstance(s, int) else dims[s].at(point) for s in inp.shape)

    def profile_dims(self, profile: int = 0) -> dict[str, Dim]:
        """Dims of profile 0 (the recipe's `dims`) or of an entry of `profiles:`."""
        base = {d.name: d for d in self.dims}
        if profile == 0:
            return base
        over: dict[str, dict[str, Any]] = self.profiles[profile - 1]
        return {n: dataclasses.replace(d, **over.get(n, {})) for n, d in base.items()}

    def where(self, field_path: str) -> str:
        """`file:line:col` of a field (or its nearest located parent), for messages."""
        path = field_path
        while path:
            if path in self.positions:
                f, line, col = self.positions[path]
                return f"{f}:{line}:{col}"
            path = path.rpartition(".")[0]
        return self.file

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return recipe_from_dict(json.loads(text))


def model_from_dict(d: dict) -> ModelSpec:
    """A ModelSpec from the recipe's `model:` mapping (or its `asdict` form)."""
    tf = d.get("tensorflow")
    return ModelSpec(**{**d, "tensorflow": TensorFlowSpec(**tf) if tf is not None else None})


def _data(d: dict) -> DataSpec:
    return DataSpec(**d)


def _tupled(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def recipe_from_dict(d: dict) -> Recipe:
    """Rebuild a Recipe from `dataclasses.asdict` output (the recipe cache)."""
    cal = d.get("calibration")
    return Recipe(
        name=d["name"],
        file=d["file"],
        sources=tuple(d["sources"]),
        model=model_from_dict(d["model"]),
        inputs=tuple(
            InputSpec(i["name"], i["dtype"], tuple(i["shape"]), _data(i["data"])) for i in d["inputs"]
        ),
        outputs=tuple(OutputSpec(**o) for o in d["outputs"]),
        dims=tuple(Dim(**x) for x in d["dims"]),
        description=d.get("description", ""),
        version=d.get("version", 1),
        profiles=tuple(d.get("profiles", ())),
        export=ExportSpec(**d["export"]),
        simplify=SimplifySpec(**_tupled(d["simplify"])),
        calibration=None
        if cal is None
        else CalibrationSpec(
            data=_data(cal["data"]),
            samples=cal["samples"],
            method=cal["method"],
            per_channel=cal["per_channel"],
        ),
        quantization=QuantizationSpec(**{**d.get("quantization", {}),
                                         "exclude": tuple(d.get("quantization", {}).get("exclude", ()))}),
        targets=tuple(TargetSpec(**{**t, **({"cpu_nodes": tuple(t["cpu_nodes"])} if "cpu_nodes" in t else {})})
                      for t in d["targets"]),
        tolerances={k: Tolerance(**v) for k, v in d["tolerances"].items()},
        parity=ParitySpec(
            samples=d["parity"]["samples"], seed=d["parity"]["seed"], points=tuple(d["parity"]["points"]),
            random_shapes=d["parity"].get("random_shapes", ParitySpec.random_shapes),
            holdout=d["parity"].get("holdout", ParitySpec.holdout),
            max_regression=d["parity"].get("max_regression"),
            unordered=tuple(d["parity"].get("unordered", ())),
        ),
        positions={k: tuple(v) for k, v in d.get("positions", {}).items()},
    )
