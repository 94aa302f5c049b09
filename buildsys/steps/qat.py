"""Quantization-aware trained PyTorch models (torch.ao.quantization) made exportable.

`prepare_qat` puts FakeQuantize modules (FakeQuantize, FusedMovingAvgObsFakeQuantize)
on weights and activations. Their forward branches in Python on their
observer/fake-quant flags (`if self.observer_enabled[0] == 1`), which both ONNX
exporters refuse or cannot convert. For export, each such module is replaced by
one that does what it does in eval mode with its observer off: the tensor-only
`torch.fake_quantize_per_tensor_affine` / `_per_channel_affine` call with its
trained scale and zero point, which the exporters write as QuantizeLinear +
DequantizeLinear. Parity then checks the exported graph against the original
modules.
"""
from __future__ import annotations


def fake_quant_modules(model) -> list[str]:
    """Names of the model's FakeQuantize modules (torch.ao.quantization), in module order."""
    from torch.ao.quantization import FakeQuantizeBase

    return [name for name, m in model.named_modules() if isinstance(m, FakeQuantizeBase)]


def freeze_observers(model) -> int:
    """Switch off every FakeQuantize's observer: the trained scales are what the model computes with.

    Left on, an observer moves the scales on every call, so the model's outputs
    would depend on what it saw before. Returns how many observers were on.
    """
    from torch.ao.quantization import FakeQuantizeBase

    on = 0
    for m in model.modules():
        if isinstance(m, FakeQuantizeBase):
            on += int(m.observer_enabled[0]) == 1
            m.disable_observer()
    return on


def tensor_only_fake_quant(model, exporter: str = "torchscript") -> int:
    """Give each FakeQuantize module its tensor-only eval-mode forward; return how many.

    The flags are read once, here, in Python: a fake-quantizer switched off
    becomes the identity, one switched on a single fake_quantize call. A
    per-tensor quantizer's scale and zero point become Python numbers here too:
    the tensor-qparams overload has no shape function for dynamic dims
    (torch.export), and reading them during the trace would be a tracer warning.
    """
    import types

    import torch
    from torch.ao.quantization import FakeQuantizeBase

    if exporter == "dynamo":
        # torch.export decomposes fake_quantize_* into an op without a shape function for
        # dynamic dims; the decomposed quantize/dequantize pair has one, and the dynamo
        # exporter writes it as QuantizeLinear + DequantizeLinear.
        import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed ops)
    per_tensor, per_channel = (_qdq_per_tensor, _qdq_per_channel) if exporter == "dynamo" else (_per_tensor, _per_channel)
    count = 0
    # The ignores below: torch's stubs declare neither FakeQuantize's buffers nor a forward patched in.
    for m in model.modules():
        if not isinstance(m, FakeQuantizeBase):
            continue
        count += 1
        if int(m.fake_quant_enabled[0]) != 1:
            m.forward = types.MethodType(_identity, m)  # type: ignore[method-assign]
        elif m.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
            m.zero_point = m.zero_point.to(torch.int32)
            m.forward = types.MethodType(per_channel, m)  # type: ignore[method-assign]
        else:
            m.frozen_qparams = (float(m.scale), int(m.zero_point))  # type: ignore[assignment, arg-type]
            m.forward = types.MethodType(per_tensor, m)  # type: ignore[method-assign]
    return count


def _per_tensor(fq, x):
    import torch

    scale, zero_point = fq.frozen_qparams
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, fq.quant_min, fq.quant_max)


def _per_channel(fq, x):
    import torch

    return torch.fake_quantize_per_channel_affine(x, fq.scale, fq.zero_point, fq.ch_axis, fq.quant_min, fq.quant_max)


def _qdq_per_tensor(fq, x):
    import torch

    scale, zero_point = fq.frozen_qparams
    ops, dtype = torch.ops.quantized_decomposed, _int_dtype(fq)
    q = ops.quantize_per_tensor(x, scale, zero_point, fq.quant_min, fq.quant_max, dtype)
    return ops.dequantize_per_tensor(q, scale, zero_point, fq.quant_min, fq.quant_max, dtype)


def _qdq_per_channel(fq, x):
    import torch

    ops, dtype = torch.ops.quantized_decomposed, _int_dtype(fq)
    q = ops.quantize_per_channel(x, fq.scale, fq.zero_point, fq.ch_axis, fq.quant_min, fq.quant_max, dtype)
    return ops.dequantize_per_channel(q, fq.scale, fq.zero_point, fq.ch_axis, fq.quant_min, fq.quant_max, dtype)


def _int_dtype(fq):
    import torch

    return torch.uint8 if fq.quant_min >= 0 else torch.int8


def _identity(fq, x):
    return x
