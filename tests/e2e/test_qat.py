"""A model trained with torch.ao.quantization's QAT API builds end to end with its own scales."""
from __future__ import annotations

import json

import onnx
import pytest

from tests.e2e.conftest import tiny_recipe

RECIPE = """\
version: 1
model: {{factory: "tm.qat:qat", kwargs: {{version: {version}}}}}
inputs:
  - {{name: image, dtype: float32, shape: [batch, 3, 16, 16], data: {{kind: uniform, low: 0.0, high: 1.0}}}}
outputs: [{{name: logits}}]
dims: {{batch: {{min: 1, opt: 2, max: 4}}}}
export: {{opset: {opset}, exporter: {exporter}}}
tolerances:
  int8: {{atol: 1.0e-5, rtol: 1.0e-4}}
targets:
  - {{backend: onnxruntime, precision: int8}}
  - {{backend: tensorrt, precision: int8}}
"""


@pytest.mark.parametrize("exporter, opset, version", [("torchscript", 17, 0), ("dynamo", 18, 1)])
def test_a_prepare_qat_model_exports_its_qdq_and_needs_no_calibration(workspace, exporter, opset, version):
    workspace.write("recipes/qat.yaml", RECIPE.format(exporter=exporter, opset=opset, version=version))

    r = workspace.build()

    assert r.code == 0, r.stderr
    out = workspace.root / "out/qat"
    ops = [n.op_type for n in onnx.load(out / "model.onnx").graph.node]
    assert ops.count("QuantizeLinear") == 7 and ops.count("DequantizeLinear") == 7
    assert "quantization-aware trained: 7 FakeQuantize modules exported" in (out / "logs/export.log").read_text()
    calib = json.loads((out / "calib.json").read_text())
    assert calib["qat"] is True and calib["random_data"] is False and calib["tensors"] == {}
    steps = {s["id"]: s for s in r.json["steps"]}
    assert "quantization-aware trained (Q/DQ from the model)" in steps["qat:calibrate"]["note"]
    assert "note: quantization-aware trained (Q/DQ from the model)" in r.stderr
    # the exported Q/DQ graph computes what the fake-quant PyTorch model computes, at every point
    parity = json.loads((out / "parity/int8.json").read_text())
    # the corners and the seeded shapes drawn inside the declared ranges
    assert parity["passed"] and {row["point"] for row in parity["results"]} == {"min", "opt", "max",
                                                                                 "random1", "random2"}
    assert (out / "engines/onnxruntime-int8.ort").is_file()
    assert steps["qat:engine[tensorrt-int8]"]["state"] in ("ran", "unavailable")
    assert (out / "model.int8.tensorrt.onnx").read_bytes() == (out / "model.sim.onnx").read_bytes()

    r = workspace.run("check")
    assert r.code == 0, r.stderr
    report = json.loads((workspace.root / "out/reports/parity.json").read_text())
    (int8,) = [c for rec in report["recipes"] for c in rec["checks"] if c["check"] == "int8"]
    assert int8["qat"] is True and int8["random_calibration"] is False
    for name in ("parity.md", "parity.html", "junit.xml"):
        text = (workspace.root / "out/reports" / name).read_text()
        assert "random data" not in text, name
    assert "quantization-aware trained (Q/DQ from the model)" in (workspace.root / "out/reports/parity.md").read_text()


def test_observers_left_on_are_switched_off_for_the_reference(workspace):
    workspace.write("recipes/qat.yaml", RECIPE.format(exporter="torchscript", opset=17, version=0).replace(
        "kwargs: {version: 0}", "kwargs: {version: 0, observers_off: false}"))
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "observers were still on; switched off" in (workspace.root / "out/qat/logs/reference.log").read_text()


def test_int8_without_calibration_on_a_model_without_qdq_names_the_missing_block(workspace):
    base = tiny_recipe().split("tolerances:")[0]
    workspace.write("recipes/tiny.yaml", base + "targets:\n  - {backend: onnxruntime, precision: int8}\n")

    assert workspace.run("validate").code == 0  # whether the model carries Q/DQ is known once it is exported
    r = workspace.build()

    assert r.code == 3
    assert "recipes/tiny.yaml: calibration: the model carries no QuantizeLinear/DequantizeLinear nodes" in r.stderr
    assert "hint: add calibration:" in r.stderr
