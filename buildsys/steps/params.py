"""A step's typed parameters: its slice of the resolved recipe as frozen dataclasses.

The resolver hands each step its slice as plain data (it travels to worker
processes and to Dask, and its canonical JSON is part of the step's key, so its
shape stays what it is). A step turns the slice into its `Params` class on
arrival and reads attributes. The field types are the recipe's own dataclasses
(`buildsys.recipe.model`), so a default is declared once, there, and a test
holds those defaults equal to the schema's.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from buildsys.recipe.model import (
    CalibrationSpec,
    Dim,
    ExportSpec,
    InputSpec,
    ModelSpec,
    QuantizationSpec,
    SimplifySpec,
    TargetSpec,
    Tolerance,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def from_slice(cls: type[T], data: dict[str, Any]) -> T:
    """`cls` built from a params slice; nested mappings become the dataclasses the field types name.

    A key the slice leaves out takes the dataclass's default; a key `cls` does not
    declare is a bug in the resolver or the step, and raises.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    return cls(**{k: typed_value(hints[k], v) for k, v in data.items()})


def typed_value(tp: Any, value: Any, key: str | None = None) -> Any:
    """`value` (plain data) as the type `tp` names: dataclasses built, lists made tuples where `tp` says so."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return typed_value(arg, value, key)
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if key is not None and "name" in {f.name for f in dataclasses.fields(tp)} and "name" not in value:
            value = {"name": key, **value}  # a mapping keyed by name, as `dims` is
        return from_slice(tp, value)
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return tuple(typed_value(item, v) for v in value)
    if origin is dict:
        return {k: typed_value(args[1], v, k) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SimplifyParams:
    simplify: SimplifySpec = SimplifySpec()


@dataclass(frozen=True)
class ExportParams:
    """What export (and the steps that stand in for it: check, convert) read: the model and its signature."""

    model: ModelSpec
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    dims: dict[str, Dim] = field(default_factory=dict)
    export: ExportSpec = ExportSpec()


@dataclass(frozen=True)
class ShapePoints:
    """Where the reference (and so parity) runs: the recipe's `parity` settings and the shapes drawn from them."""

    samples: int
    seed: int
    points: tuple[str, ...]  # min / opt / max as the recipe lists them, then the seeded shapes' names
    shapes: dict[str, dict[str, int]] = field(default_factory=dict)  # "random1" -> {dim: size}
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # input -> the real-data files parity draws from


@dataclass(frozen=True)
class ReferenceParams:
    model: ModelSpec
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    dims: dict[str, Dim]
    parity: ShapePoints


@dataclass(frozen=True)
class RowOrder:
    """`parity.unordered` as the steps that compare outputs read it."""

    unordered: tuple[str, ...] = ()  # outputs compared as rows in any order


@dataclass(frozen=True)
class ParityParams:
    precision: str
    tolerances: dict[str, Tolerance]
    outputs: tuple[str, ...]
    quantization: QuantizationSpec | None = None  # int8 parity: the CPU class and the nodes kept in fp32
    parity: RowOrder = RowOrder()
    data: dict[str, Any] = field(default_factory=dict)  # int8 parity: what each input's values are (resolve.judged_data)

    @property
    def tolerance(self) -> Tolerance:
        return self.tolerances[self.precision]


@dataclass(frozen=True)
class CalibrateParams:
    calibration: CalibrationSpec | None  # None: the model must carry its own Q/DQ nodes
    inputs: tuple[InputSpec, ...]
    dims: dict[str, Dim]
    held_out: tuple[str, ...] = ()  # files of the data kept for parity only (resolve.parity_split)


@dataclass(frozen=True)
class QuantizeParams:
    flavour: str  # onnxruntime | tensorrt
    calibration: CalibrationSpec  # per_channel alone (None where the model is quantization-aware trained)
    quantization: QuantizationSpec  # exclude; cpu for the onnxruntime flavour
    settings: dict[str, Any] = field(default_factory=dict)  # the flavour's choices (flavours.Flavour), for the key


@dataclass(frozen=True)
class FallbackParams:
    calibration: CalibrationSpec | None
    inputs: tuple[InputSpec, ...]
    dims: dict[str, Dim]
    outputs: tuple[str, ...]
    tolerances: dict[str, Tolerance]  # int8's
    quantization: QuantizationSpec
    parity: RowOrder = RowOrder()
    settings: dict[str, Any] = field(default_factory=dict)  # the onnxruntime flavour's choices, for the key


@dataclass(frozen=True)
class TorchScriptParams:
    """The TorchScript engine: compiled from the PyTorch model itself, checked against eager."""

    model: ModelSpec
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    dims: dict[str, Dim]
    target: TargetSpec
    tolerances: dict[str, Tolerance]  # fp32's
    parity: RowOrder = RowOrder()


@dataclass(frozen=True)
class OrtEngineParams:
    """The ONNX Runtime engine on this CPU: the target (and the outputs compared as rows in any order)."""

    target: TargetSpec
    parity: RowOrder = RowOrder()


@dataclass(frozen=True)
class OrtGpuParams:
    """ONNX Runtime on a GPU provider: the target, the signature, the first profile and the tolerance."""

    target: TargetSpec
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    profiles: tuple[dict[str, Dim], ...]
    tolerances: dict[str, Tolerance]
    parity: RowOrder = RowOrder()
    # ONNX Runtime's CUDA provider options (gpu.cuda_options, from the target); None for the TensorRT engine
    provider_options: dict[str, str] | None = None


@dataclass(frozen=True)
class TensorRTParams(OrtGpuParams):
    """The TensorRT engine: as on ONNX Runtime's GPU providers, with every profile (one optimization profile each)."""


def as_dict(value: Any) -> Any:
    """A typed value as the plain data it came from (what the numerics and the result files speak)."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
