"""The step kinds: each kind's implementation as "module:Class", named without importing it.

The resolver writes these into the graph, with the facts it reads from each
class once (`step_class`), and the workers import them, so the table sits below
both.
"""
from __future__ import annotations

import importlib

KINDS: dict[str, str] = {
    "export": "buildsys.steps.export:ExportOnnx",
    "simplify": "buildsys.steps.simplify:SimplifyOnnx",
    "reference": "buildsys.steps.reference:ReferenceOutputs",
    "parity": "buildsys.steps.parity:ParityCheck",
    "engine-onnxruntime": "buildsys.steps.engine_onnxruntime:OrtFormatEngine",
    "calibrate": "buildsys.steps.calibrate:CalibrateRanges",
    "quantize": "buildsys.steps.quantize:QuantizeQdq",
    "fallback": "buildsys.steps.fallback:Int8Fallback",
    "engine-tensorrt": "buildsys.steps.engine_tensorrt:TensorRTEngine",
    "engine-torchscript": "buildsys.steps.engine_torchscript:TorchScriptEngine",
    "convert-fp16": "buildsys.steps.convert_fp16:ConvertFp16",
    "engine-onnxruntime-cuda": "buildsys.steps.engine_onnxruntime:OrtCudaEngine",
    "engine-onnxruntime-tensorrt": "buildsys.steps.engine_onnxruntime:OrtTensorRTEngine",
    "check": "buildsys.steps.check_onnx:CheckOnnx",
    "reference-onnxruntime": "buildsys.steps.check_onnx:OnnxRuntimeReference",
    "convert": "buildsys.steps.convert_tensorflow:ConvertTensorFlow",
    "reference-tensorflow": "buildsys.steps.convert_tensorflow:TensorFlowReference",
}


def step_class(kind_path: str):
    """Import a step class from `module:Class` (a KINDS value or a test's own step)."""
    module, _, name = kind_path.partition(":")
    return getattr(importlib.import_module(module), name)
