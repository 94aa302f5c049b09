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
