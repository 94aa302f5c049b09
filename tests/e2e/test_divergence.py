"""buildsys check names the layer that breaks int8 parity, with its figures beside the tolerance."""
from __future__ import annotations

import json

RECIPE = """\
version: 1
model: {factory: "tm.outlier_cnn:outlier_cnn", kwargs: {outlier: 400.0}}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, 16, 16], data: {kind: uniform, low: 0.0, high: 1.0}}
outputs: [{name: logits}]
dims: {batch: {min: 1, opt: 2, max: 4}}
export: {opset: 17, exporter: torchscript}
calibration: {data: {kind: uniform, low: 0.0, high: 1.0}, samples: 8, per_channel: false}
tolerances:
  int8: {min_cosine: 0.999}
targets:
  - {backend: onnxruntime, precision: int8}
"""


def test_the_layer_with_an_outlier_weight_is_named(workspace):
    workspace.write("recipes/outlier.yaml", RECIPE)

    r = workspace.run("check")

    assert r.code == 1, r.stderr
    report = json.loads((workspace.root / "out/reports/parity.json").read_text())
    (int8,) = [c for rec in report["recipes"] for c in rec["checks"] if c["check"] == "int8"]
    d = int8["divergence"]
    assert d["verdict"] == "node" and (d["node"], d["op_type"]) == ("/conv2/Conv", "Conv"), d
    assert d["tolerance"]["min_cosine"] == 0.999 and d["cosine"] < 0.999
    # judged on the sample that failed worst, with the check's own figures
    lowest = min((o["cosine"], row["point"]) for row in int8["results"] for o in row["outputs"])
    assert d["point"] == lowest[1] and d["check_output"] == "logits"
    assert all(i["passed"] for i in d["inputs"]) and {i["reference_output"] for i in d["inputs"]} >= {"conv2.weight"}
    md = (workspace.root / "out/reports/parity.md").read_text()
    assert "first divergence: node /conv2/Conv (Conv)" in md
    assert "against tolerance cosine ≥ 0.999; its inputs: " in md


INPUT_QUANTIZATION = """\
version: 1
model: {factory: "tm.signs_cnn:signs_cnn"}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, 16, 16], data: {kind: uniform, low: 0.0, high: 1.0}}
outputs: [{name: logits}]
dims: {batch: {min: 1, opt: 2, max: 2}}
export: {opset: 17, exporter: torchscript}
calibration: {data: {kind: uniform, low: 0.0, high: 1.0}, samples: 4}
tolerances:
  int8: {min_cosine: 0.999999}
parity: {points: [opt]}
targets:
  - {backend: onnxruntime, precision: int8}
"""


def test_the_inputs_own_quantization_is_named_with_its_remedy(workspace):
    """Every weight of the model is exact in int8: the first tensor out of tolerance is the
    image's QuantizeLinear -> DequantizeLinear, before any layer."""
    workspace.write("recipes/signs.yaml", INPUT_QUANTIZATION)

    r = workspace.run("check")

    assert r.code == 1, r.stderr
    report = json.loads((workspace.root / "out/reports/parity.json").read_text())
    (int8,) = [c for rec in report["recipes"] for c in rec["checks"] if c["check"] == "int8"]
    d = int8["divergence"]
    assert d["verdict"] == "node" and d["op_type"] == "DequantizeLinear", d
    assert d["quantized_input"] == "image" and d["reference_output"] == "image" and d["cosine"] < 0.999999
    assert d["readers"] == ["/conv1/Conv"]
    # its input is the image as fed, which both models read alike
    assert [(i["tensor"], i["node"], i["cosine"]) for i in d["inputs"]] == [("image", "(graph input)", 1.0)]
    md = (workspace.root / "out/reports/parity.md").read_text()
    assert "first divergence: the quantization of input image" in md
    assert "remedy: keep input image in fp32 with quantization: {exclude: \\[/conv1/Conv\\]}" in md  # escaped
    assert d["remedy"].startswith("keep input image in fp32 with quantization: {exclude: [/conv1/Conv]}, "
                                  "or loosen the tolerance")
