"""quantize[flavour]: the explicitly quantized (Q/DQ) ONNX model for one backend, from stored ranges.

Calibration ran once (`calibrate`, which wrote `calib.json`); each flavour turns
those ranges into its own Q/DQ model with `onnxruntime.quantization.quantize_static`,
handed the ranges through its calibration-cache file (`calibration_cache_path`,
written with `save_tensors_data`) so that the model never runs again here.

The flavours differ in what their runtime executes fast or at all:

- `onnxruntime` (CPU): unsigned (QUInt8, asymmetric) activations with signed
  (QInt8) weights. On an x86 CPU without VNNI this is the pair ONNX Runtime's
  integer kernels are fast with (ResNet-18, 2 threads: 1.8-2x fp32), where signed
  activations gain nothing over fp32. The weights keep 7 bits (`reduce_range`):
  those kernels sum pairs of u8 x s8 products in 16 bits (AVX2 `vpmaddubsw`), which
  saturates with 8-bit weights. Measured on EfficientNet-Lite0 (32 views of 16
  photographs, median cosine to fp32 and top-1 agreement): 8-bit weights give 0.94
  and 56% in those kernels where the model's own Q/DQ arithmetic gives 0.99 and 78%;
  7-bit weights give 0.97 and 75% in both.
  The artifact is not tied to the machine that built it, so it is safe on every
  x86 CPU rather than best on a VNNI one.
- `tensorrt`: signed, symmetric int8 activations and weights (zero point 0), the
  only int8 TensorRT's explicit quantization accepts; biases stay float (TensorRT
  fuses them into the convolution and has no int32 dequantization).

A QAT model (`calib.json` says `qat`) already carries its Q/DQ nodes and is copied
unchanged.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult


@dataclass(frozen=True)
class Flavour:
    activations: str  # onnxruntime.quantization.QuantType member
    weights: str
    symmetric_activations: bool
    quantize_bias: bool
    reduce_range: bool  # 7-bit weights


FLAVOURS: dict[str, Flavour] = {
    "onnxruntime": Flavour(activations="QUInt8", weights="QInt8", symmetric_activations=False, quantize_bias=True,
                           reduce_range=True),
    "tensorrt": Flavour(activations="QInt8", weights="QInt8", symmetric_activations=True, quantize_bias=False,
                        reduce_range=False),
}


class QuantizeQdq(Step):
    KIND = "quantize"
    VERSION = 1
    TOOLS = ("onnx", "onnxruntime", "numpy")

    def run(self) -> StepResult:
        from buildsys.steps.calibrate import FORMAT
        from buildsys.steps.export import check_onnx

        p = self.params
        flavour = FLAVOURS.get(p["flavour"])
        if flavour is None:
            raise StepError(f"unknown quantization flavour {p['flavour']!r} (known: {', '.join(FLAVOURS)})")
        model = self.ctx.inputs["model"]
        out = self.ctx.output("model")
        calib = json.loads(self.ctx.inputs["ranges"].read_text())
        if calib.get("format") != FORMAT:
            raise StepError(f"{self.ctx.inputs['ranges'].name} has format {calib.get('format')}, expected {FORMAT}")
        if calib["qat"]:
            written = _copy_model(model, out)
            summary = (f"quantization-aware trained (Q/DQ from the model): its {calib['qdq_nodes']} "
                       "QuantizeLinear/DequantizeLinear nodes are kept, the model is copied unchanged")
            return StepResult(outputs={"model": written}, summary=summary)

        with tempfile.TemporaryDirectory(dir=self.ctx.scratch) as tmp:
            written = quantize(model, calib, flavour, p["calibration"]["per_channel"], out, Path(tmp))
        check_onnx(out, self.ctx.scratch)
        counts = _q_dq_counts(out)
        kinds = f"{flavour.activations} activations{' (symmetric)' if flavour.symmetric_activations else ''}, " \
                f"{flavour.weights} {'per-channel' if p['calibration']['per_channel'] else 'per-tensor'} weights"
        summary = (f"{p['flavour']}: {counts['QuantizeLinear']} QuantizeLinear, {counts['DequantizeLinear']} "
                   f"DequantizeLinear ({kinds}) from {calib['method']} ranges")
        if calib.get("random_data"):
            summary += " of random data"
        return StepResult(outputs={"model": written}, summary=summary)


def quantize(model: Path, calib: dict, flavour: Flavour, per_channel: bool, out: Path, tmp: Path) -> list[str]:
    """Write the Q/DQ model to `out` (and its external data beside it); return the files written."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    from buildsys.steps.calibrate import METHODS, has_external_data, stage_model
    from buildsys.steps.export import EXTERNAL_DATA_BYTES

    method = getattr(CalibrationMethod, METHODS[calib["method"]])
    ranges = TensorsData(method, {name: TensorData(lowest=np.float32(r["min"]), highest=np.float32(r["max"]))
                                  for name, r in calib["tensors"].items()})
    cache = tmp / "ranges.json"
    save_tensors_data(ranges, cache)
    staged = stage_model(model, tmp)
    external = has_external_data(staged) or staged.stat().st_size > EXTERNAL_DATA_BYTES
    options = {
        "ActivationSymmetric": flavour.symmetric_activations,
        "WeightSymmetric": True,
        "QuantizeBias": flavour.quantize_bias,
    }
    # ORT's logged advice to run quant_pre_process is not followed: torch.onnx.export folds
    # BatchNorm and onnxsim folds constants, and pre-processing changed no node of the sample
    # models (measured); without it, calibrate and quantize read the very same graph, so
    # the tensor names in calib.json are the quantizer's.
    print("quantize_static: ranges from calib.json (the model is not run again)", flush=True)
    try:
        quantize_static(
            staged, out, calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            per_channel=per_channel, reduce_range=flavour.reduce_range,
            activation_type=getattr(QuantType, flavour.activations), weight_type=getattr(QuantType, flavour.weights),
            calibrate_method=method, calibration_cache_path=cache, use_external_data_format=external,
            extra_options=options,
        )
    except Exception as exc:
        raise StepError(f"ONNX Runtime's quantizer failed: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}") \
            from None
    files = [out.name] + ([out.name + ".data"] if (out.parent / (out.name + ".data")).exists() else [])
    _check_ranges_matched(onnx.load(str(out), load_external_data=False), calib)
    return files


def _copy_model(model: Path, out: Path) -> list[str]:
    from buildsys.steps.calibrate import has_external_data

    if not has_external_data(model):
        shutil.copyfile(model, out)
        return [out.name]
    import onnx

    # Re-saved rather than copied: the external data file is named after the output.
    onnx.save(onnx.load(str(model)), str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=out.name + ".data")
    return [out.name, out.name + ".data"]


def _check_ranges_matched(model, calib: dict) -> None:
    """A Q/DQ model without any quantized activation means the ranges named other tensors."""
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    if calib["tensors"] and not quantized & set(calib["tensors"]):
        raise StepError("none of the calibrated tensors was quantized: calib.json does not describe this model",
                        hint="rebuild with the calibrate step (buildsys clean, then build)")


def _q_dq_counts(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
