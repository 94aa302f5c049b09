"""The int8 flavours: what each runtime's Q/DQ model is made of (see steps.quantize for why).

They live below the resolver, which puts a flavour's settings in the keys of the steps that
quantize with it: a changed choice re-quantizes, and `explain` names it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from buildsys.core.errors import StepError


@dataclass(frozen=True)
class Flavour:
    activations: str  # onnxruntime.quantization.QuantType member
    weights: str
    symmetric_activations: bool
    quantize_bias: bool
    reduce_range: bool  # 7-bit weights
    # A Pad between DequantizeLinear and QuantizeLinear of one scale runs on the integers, its
    # constant the zero point: ONNX Runtime runs such a Pad in float, with a dequantization
    # before and a quantization after it (EfficientNet's "same" padding, 5 of them).
    integer_pad: bool = False


FLAVOURS: dict[str, Flavour] = {
    "onnxruntime": Flavour(activations="QUInt8", weights="QInt8", symmetric_activations=False, quantize_bias=True,
                           reduce_range=True, integer_pad=True),
    "tensorrt": Flavour(activations="QInt8", weights="QInt8", symmetric_activations=True, quantize_bias=False,
                        reduce_range=False),
}
# CPU classes of the onnxruntime flavour (the machine's own: toolchain.cpu_class).
CPU_CLASSES = ("vnni", "avx2")
CPU_LABELS = {"vnni": "int8 for VNNI CPUs (8-bit weights)", "avx2": "int8 for AVX2 CPUs (7-bit weights)"}


def flavour_for(name: str, cpu: str | None) -> Flavour:
    """The flavour a quantize step applies: onnxruntime's weight bits follow its CPU class."""
    flavour = FLAVOURS.get(name)
    if flavour is None:
        raise StepError(f"unknown quantization flavour {name!r} (known: {', '.join(FLAVOURS)})")
    if name == "onnxruntime":
        if cpu not in CPU_CLASSES:
            raise StepError(f"unknown CPU class {cpu!r} (known: {', '.join(CPU_CLASSES)})", field="quantization.cpu")
        flavour = replace(flavour, reduce_range=cpu == "avx2")
    return flavour


