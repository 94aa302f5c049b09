"""Outputs with the shapes real models have: detections compared as rows in any order
(parity.unordered), segmentation maps at dynamic sizes, and a model that takes only multiples of 8."""
from __future__ import annotations

import json

DETECTOR = """\
version: 1
model: {{factory: "tm.shaped:detector", kwargs: {kwargs}}}
inputs:
  - {{name: x, dtype: float32, shape: [rows, 4], data: {{kind: normal, mean: 0.0, std: 1.0}}}}
outputs: [{{name: boxes}}, {{name: scores}}, {{name: labels}}]
dims:
  rows: {{min: 4, opt: 16, max: 32}}
export: {{opset: 18, exporter: torchscript}}
{parity}
"""
UNORDERED = "parity: {unordered: [boxes, scores, labels]}"


def parity(workspace, recipe: str, check: str = "fp32") -> dict:
    return json.loads((workspace.root / f"out/{recipe}/parity/{check}.json").read_text())


def test_detections_whose_tied_rows_come_out_permuted_pass_as_rows_in_any_order(workspace):
    """The exported detector sorts tied scores the other way: the same detections in another order."""
    targets = "targets: [{backend: onnxruntime, precision: fp32}, {backend: torchscript, mode: trace}]\n"
    workspace.write("recipes/det.yaml", DETECTOR.format(kwargs="{}", parity=UNORDERED) + targets)
    workspace.write("recipes/ordered.yaml", DETECTOR.format(kwargs="{}", parity=""))
    workspace.write("recipes/wrong.yaml", DETECTOR.format(kwargs="{wrong: true}", parity=UNORDERED))
    workspace.write("recipes/drop.yaml", DETECTOR.format(kwargs="{drop: true}", parity=UNORDERED))
    r = workspace.build("-k")
    assert r.code == 1, r.stdout + r.stderr
    states = r.states()
    assert states["det:parity[fp32]"] == "ran" and states["det:engine[onnxruntime-fp32]"] == "ran"
    det = parity(workspace, "det")
    assert det["passed"]
    assert all(m["unordered"]["matched"] == m["unordered"]["rows"] == row["shapes"]["x"][0]
               for row in det["results"] for m in row["outputs"].values())

    # the TorchScript engine's check against eager compares the rows the same way
    traced = parity(workspace, "det", "torchscript")
    assert traced["passed"] and traced["results"][0]["outputs"]["boxes"]["unordered"]["matched"] == 4

    ordered = parity(workspace, "ordered")
    assert not ordered["passed"]
    boxes = [f for f in ordered["failures"] if f.startswith("opt boxes:")][0]
    assert ("its 16 rows match the reference's in another order: if the order carries no meaning (detections), "
            "compare them as rows in any order with parity: {unordered: [boxes, scores, labels]}") in boxes

    wrong = parity(workspace, "wrong")
    assert not wrong["passed"] and all("no candidate row within atol" in f for f in wrong["failures"])
    assert "1 of 16 reference rows have no candidate row" in [f for f in wrong["failures"] if f.startswith("opt")][0]

    drop = parity(workspace, "drop")
    assert not drop["passed"]
    assert "opt boxes: 15 rows, the reference has 16 (parity.unordered pairs the rows one to one: the counts must " \
           "agree)" in drop["failures"]

    # the reports say how the rows were compared
    r = workspace.run("check", "det")
    assert r.code == 0, r.stdout + r.stderr
    md = (workspace.root / "out/reports/parity.md").read_text()
    rows = sum(row["shapes"]["x"][0] for row in det["results"])
    assert f"boxes, scores, labels compared as rows in any order: {rows} of {rows} rows matched" in md
    html = (workspace.root / "out/reports/parity.html").read_text()
    assert f"{rows} of {rows} rows matched" in html
    report = json.loads((workspace.root / "out/reports/parity.json").read_text())
    outputs = report["recipes"][0]["checks"][0]["results"][0]["outputs"]
    assert outputs[0]["unordered"] == {"outputs": ["boxes", "scores", "labels"], "rows": 4, "matched": 4}


SEGMENTER = """\
version: 1
model: {factory: "tm.shaped:segmenter", kwargs: {classes: 5}}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, height, width], data: {kind: uniform, low: 0.0, high: 1.0}}
outputs: [{name: masks}]
dims:
  batch: {min: 1, opt: 2, max: 3}
  height: {min: 32, opt: 48, max: 80}
  width: {min: 32, opt: 64, max: 96}
"""
BLOCKS = """\
version: 1
model: {factory: "tm.shaped:blocks8"}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, height, width], data: {kind: uniform, low: 0.0, high: 1.0}}
outputs: [{name: features}]
dims:
  batch: {min: 1, opt: 2, max: 3}
  height: {min: 16, opt: 32, max: 64, multiple_of: 8}
  width: {min: 16, opt: 32, max: 64, multiple_of: 8}
export: {exporter: torchscript}
"""


def test_segmentation_maps_and_a_model_of_multiples_of_8_at_dynamic_sizes(workspace):
    workspace.write("recipes/seg.yaml", SEGMENTER)
    workspace.write("recipes/blocks.yaml", BLOCKS)
    workspace.write("recipes/blocks_dynamo.yaml", BLOCKS.replace("export: {exporter: torchscript}\n", ""))
    workspace.write("recipes/anysize.yaml", BLOCKS.replace(", multiple_of: 8", ""))
    workspace.write("recipes/anysize_dynamo.yaml",
                    BLOCKS.replace(", multiple_of: 8", "").replace("export: {exporter: torchscript}\n", ""))
    r = workspace.build("-k")
    assert r.code == 3, r.stdout + r.stderr
    assert r.states()["seg:engine[onnxruntime-fp32]"] == "ran"
    assert r.states()["blocks:engine[onnxruntime-fp32]"] == "ran"
    assert r.states()["blocks_dynamo:engine[onnxruntime-fp32]"] == "ran"

    seg = parity(workspace, "seg")
    assert seg["passed"]
    for row in seg["results"]:  # [N, classes, H, W] at every point, drawn sizes included
        n, _, h, w = row["shapes"]["image"]
        assert row["outputs"]["masks"]["shape"] == [n, 5, h, w]
    assert {row["point"] for row in seg["results"]} == {"min", "opt", "max", "random1", "random2"}

    for name in ("blocks", "blocks_dynamo"):
        blocks = parity(workspace, name)
        assert blocks["passed"]
        drawn = [row["shapes"]["image"] for row in blocks["results"] if row["point"].startswith("random")]
        assert len(drawn) == 2 and all(h % 8 == 0 and w % 8 == 0 for _, _, h, w in drawn)
        assert any(h not in (16, 32, 64) or w not in (16, 32, 64) for _, _, h, w in drawn)
        assert {row["point"] for row in blocks["results"]} == {"min", "opt", "max", "random1", "random2"}

    # the dynamo exporter declares height and width as 8·n: the graph's input keeps them symbolic
    import onnx

    image = onnx.load(str(workspace.root / "out/blocks_dynamo/model.onnx"), load_external_data=False).graph.input[0]
    sizes = image.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in sizes] == [True, False, True, True], sizes

    # without multiple_of the seeded random shapes hold sizes the model cannot take: the message says what to do
    failed = [s for s in r.json["steps"] if s["id"] == "anysize:reference"][0]
    assert failed["state"] == "failed"
    said = r.stdout + r.stderr
    assert "recipes/anysize.yaml:6:1: dims: the PyTorch model failed at the random1 shape" in said
    assert "multiple_of: 8}" in said and "parity.random_shapes: 0" in said

    # the dynamo exporter finds the same from the capture, and names multiple_of in its hint
    assert r.states()["anysize_dynamo:export"] == "failed"
    assert "recipes/anysize_dynamo.yaml:8:3: dims.height: dim height: the exported graph holds for only sizes 8·n " \
           "from 16 to 64, not for all of the declared 16..64" in said
    assert "hint: if the model takes only those multiples, say so in the dim (height: {..., multiple_of: 8}; " \
           "width: {..., multiple_of: 8})" in said
