"""Tool versions as the step keys hold them."""
from __future__ import annotations

from buildsys.core import toolchain


def test_onnxruntime_gpu_stands_for_onnxruntime_and_is_named(monkeypatch):
    monkeypatch.setattr(toolchain, "installed", lambda: {"onnxruntime-gpu": "1.31.1", "numpy": "2.4.6"})
    assert toolchain.versions(("onnxruntime", "numpy", "onnx")) == {
        "onnxruntime": "1.31.1 (onnxruntime-gpu)", "numpy": "2.4.6", "onnx": "absent"}


def test_the_cpu_wheel_keeps_its_plain_version(monkeypatch):
    monkeypatch.setattr(toolchain, "installed", lambda: {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"})
    assert toolchain.versions(("onnxruntime",)) == {"onnxruntime": "1.32.0"}
