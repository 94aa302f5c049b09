"""Step kinds: one module each; this table maps a kind to its class without importing it.

Step modules import only the standard library at their top, so the orchestrator
can read a step's VERSION and TOOLS cheaply; heavy libraries are imported inside
`run`, which executes in a worker process.
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
    "engine-tensorrt": "buildsys.steps.engine_tensorrt:TensorRTEngine",
    "engine-torchscript": "buildsys.steps.engine_torchscript:TorchScriptEngine",
    "convert-fp16": "buildsys.steps.convert_fp16:ConvertFp16",
    "engine-onnxruntime-cuda": "buildsys.steps.engine_onnxruntime:OrtCudaEngine",
    "engine-onnxruntime-tensorrt": "buildsys.steps.engine_onnxruntime:OrtTensorRTEngine",
}


def step_class(kind_path: str):
    """Import a step class from `module:Class` (a KINDS value or a test's own step)."""
    module, _, name = kind_path.partition(":")
    return getattr(importlib.import_module(module), name)
