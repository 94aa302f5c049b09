"""End to end on tiny models: the real command, real exporters, real ONNX Runtime."""
from __future__ import annotations

import json

import numpy as np

from tests.e2e.conftest import tiny_recipe

ALL = ["tiny:engine[onnxruntime-fp32]", "tiny:export", "tiny:parity[fp32]", "tiny:reference", "tiny:simplify"]


def test_build_then_noop_then_one_field_changes(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert r.ran() == ALL
    out = workspace.root / "out" / "tiny"
    for rel in ("model.onnx", "model.sim.onnx", "reference.npz", "parity/fp32.json",
                "engines/onnxruntime-fp32.ort", "logs/export.log"):
        assert (out / rel).is_file(), rel
    parity = json.loads((out / "parity/fp32.json").read_text())
    assert parity["passed"] is True
    assert {row["point"] for row in parity["results"]} == {"min", "opt", "max", "random1", "random2"}
    drawn = [row["shapes"]["x"] for row in parity["results"] if row["point"].startswith("random")]
    assert all(1 <= batch <= 8 and features == 4 for batch, features in drawn), drawn
    assert "passed at min, opt, max, random1 [" in next(s["summary"] for s in r.json["steps"]
                                                        if s["id"] == "tiny:parity[fp32]")
    m = parity["results"][0]["outputs"]["scores"]
    assert {"max_abs", "mean_abs", "max_rel", "cosine"} <= set(m)

    r = workspace.build()
    assert r.code == 0 and r.ran() == []
    assert set(r.states().values()) == {"cached"}

    # a tolerance touches only parity
    workspace.write("recipes/tiny.yaml", tiny_recipe(atol="2.0e-4"))
    r = workspace.build()
    assert r.ran() == ["tiny:parity[fp32]"]
    reason = next(s["reason"] for s in r.json["steps"] if s["id"] == "tiny:parity[fp32]")
    assert reason == "tolerances.fp32.atol: 0.0001 → 0.0002"

    # the opset touches export and everything that reads its model
    workspace.write("recipes/tiny.yaml", tiny_recipe(opset=17, atol="2.0e-4"))
    r = workspace.run("explain", "tiny:export")
    assert r.code == 0
    assert "export.opset: 18 → 17" in r.stdout
    r = workspace.build()
    assert "tiny:export" in r.ran() and "tiny:reference" not in r.ran()

    # going back is a cache hit: nothing runs
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.build()
    assert r.code == 0 and r.ran() == []


def test_dynamo_export_is_byte_identical_across_processes_and_checkouts(workspace, tmp_path_factory):
    import shutil

    workspace.write("recipes/tiny.yaml", tiny_recipe(exporter="dynamo"))
    assert workspace.build().code == 0
    first = (workspace.root / "out/tiny/model.onnx").read_bytes()
    assert b"tiny.py" not in first  # no source paths or line numbers in the artifact
    assert workspace.run("clean", "--cache").code == 0
    assert workspace.build().code == 0
    assert (workspace.root / "out/tiny/model.onnx").read_bytes() == first

    elsewhere = tmp_path_factory.mktemp("another-checkout")
    for d in ("recipes", "tm"):
        shutil.copytree(workspace.root / d, elsewhere / d)
    other = type(workspace)(elsewhere)
    assert other.build().code == 0
    assert (elsewhere / "out/tiny/model.onnx").read_bytes() == first

    # a comment edit re-runs export (its source changed) but the bytes are the same: cut off
    src = workspace.root / "tm/tiny.py"
    src.write_text("# a comment that shifts every line\n" + src.read_text())
    r = workspace.build()
    assert r.ran() == ["tiny:export", "tiny:reference"]
    assert r.states()["tiny:simplify"] == "cutoff"
    assert r.states()["tiny:parity[fp32]"] == "cutoff"


def test_dynamo_at_opset_17_fails_naming_the_field_and_the_fix(workspace):
    workspace.write("tm/convnet.py", """\
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)

            def forward(self, x):
                return self.conv(x).mean(dim=(2, 3))

        def net():
            return Net()
        """)
    workspace.write("recipes/conv.yaml", """\
        version: 1
        model: {factory: "tm.convnet:net"}
        inputs: [{name: x, dtype: float32, shape: [batch, 3, 8, 8]}]
        outputs: [{name: scores}]
        dims: {batch: {min: 1, opt: 2, max: 4}}
        export: {opset: 17, exporter: dynamo}
        """)
    r = workspace.build()
    assert r.code == 3
    step = next(s for s in r.json["steps"] if s["id"] == "conv:export")
    assert step["state"] == "failed"
    assert "wrote opset 18, not the 17 asked for" in step["message"]
    assert "hint: set export.opset: 18, or export.exporter: torchscript" in step["message"]
    assert "recipes/conv.yaml" in step["message"]


BAKED = """\
version: 1
model: {{factory: "tm.baked:baked", kwargs: {{mode: {mode}, quiet: {quiet}}}}}
inputs:
  - {{name: input_ids, dtype: int64, shape: [batch, seq], data: {{kind: randint, low: 0, high: 100}}}}
outputs: [{{name: logits}}]
dims:
  batch: {{min: 1, opt: 2, max: 4}}
  seq: {{min: 4, opt: 16, max: 32}}
export: {{opset: 17, exporter: torchscript, strict_trace: {strict}}}
"""


def test_silently_baked_sequence_length_fails_parity_at_the_corners(workspace):
    workspace.write("recipes/baked.yaml", BAKED.format(mode="pool", quiet="true", strict="false"))
    r = workspace.build("-k")
    states = r.states()
    assert r.code == 1, r.stderr
    assert states["baked:export"] == "ran"
    parity = json.loads((workspace.root / "out/baked/parity/fp32.json").read_text())
    assert parity["passed"] is False
    failing = {f.split()[0].rstrip(":") for f in parity["failures"]}
    # right at the traced (opt) length, wrong at both corners and at the drawn lengths
    assert {"min", "max"} <= failing and "opt" not in failing
    summary = next(s["summary"] for s in r.json["steps"] if s["id"] == "baked:parity[fp32]")
    assert "(passed at opt" in summary
    assert states["baked:engine[onnxruntime-fp32]"] == "skipped"
    assert "parity failed: baked:parity[fp32]" in workspace.run("build").stderr


def test_baked_positions_fail_in_onnx_runtime_at_the_corners(workspace):
    workspace.write("recipes/baked.yaml", BAKED.format(mode="positions", quiet="true", strict="false"))
    r = workspace.build("-k")
    assert r.code == 1
    parity = json.loads((workspace.root / "out/baked/parity/fp32.json").read_text())
    errors = {row["point"]: row["error"] for row in parity["results"]}
    assert errors["opt"] is None
    assert "broadcast" in errors["min"] and "broadcast" in errors["max"]


def test_tracer_warning_is_listed_and_the_trace_judged_by_parity_at_drawn_shapes(workspace):
    workspace.write("recipes/baked.yaml", BAKED.format(mode="pool", quiet="false", strict="false"))
    r = workspace.build("-k")
    assert r.code == 1, r.stderr
    steps = {s["id"]: s for s in r.json["steps"]}
    assert steps["baked:export"]["state"] == "ran"
    log = (workspace.root / "out/baked/logs/export.log").read_text()
    assert "2 tracer warnings (parity judges the trace; first: tm/baked.py:" in log
    assert "TracerWarning: tm/baked.py:" in log and "Converting a tensor to a Python integer" in log
    parity = json.loads((workspace.root / "out/baked/parity/fp32.json").read_text())
    drawn = [f for f in parity["failures"] if f.startswith("random")]
    # a drawn shape names the sizes where the trace is wrong
    assert drawn and all("(input_ids [" in f for f in drawn), parity["failures"]


def test_strict_trace_refuses_a_trace_that_warned(workspace):
    workspace.write("recipes/baked.yaml", BAKED.format(mode="pool", quiet="false", strict="true"))
    r = workspace.build("-k")
    assert r.code == 3
    msg = next(s["message"] for s in r.json["steps"] if s["id"] == "baked:export")
    assert "the TorchScript tracer could not follow the model: tm/baked.py:" in msg
    assert "Converting a tensor to a Python integer" in msg
    assert msg.startswith("recipes/baked.yaml:9:"), msg


def test_keep_going_builds_good_recipes_past_a_broken_factory(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    workspace.write("tm/broken.py", "raise RuntimeError('weights server unreachable')\n")
    workspace.write("recipes/broken.yaml", tiny_recipe().replace("tm.tiny:tiny", "tm.broken:net").replace(
        "kwargs: {features: 4}", "kwargs: {}"))
    r = workspace.build("-k")
    assert r.code == 3
    states = r.states()
    assert states["tiny:engine[onnxruntime-fp32]"] == "ran"
    assert states["broken:export"] == "failed"
    msg = next(s["message"] for s in r.json["steps"] if s["id"] == "broken:export")
    assert "RuntimeError: weights server unreachable" in msg
    assert states["broken:parity[fp32]"] == "skipped"


def test_status_and_explain_say_what_is_stale_and_why(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.run("status")
    assert r.code == 0 and "tiny:export" in r.stdout and "no earlier build" in r.stdout
    workspace.build()
    r = workspace.run("status")
    assert all("up to date" in line for line in r.stdout.strip().splitlines())
    (workspace.root / "tm/tiny.py").write_text((workspace.root / "tm/tiny.py").read_text() + "\n# edited\n")
    r = workspace.run("explain", "tiny")
    assert "tiny:export: would re-run because" in r.stdout
    assert "source tm/tiny.py changed" in r.stdout
    workspace.write("recipes/tiny.yaml", tiny_recipe(opset=17))
    r = workspace.run("explain", "tiny:export")
    assert "  - export.opset: 18 → 17\n  - source tm/tiny.py changed\n" in r.stdout  # one line per reason


def test_checkpoint_that_does_not_fit_is_named(workspace):
    import torch

    torch.save({"fc1.weight": torch.zeros(3, 3)}, workspace.root / "bad.pt")
    workspace.write("recipes/tiny.yaml", tiny_recipe().replace(
        "kwargs: {features: 4}}", "kwargs: {features: 4}, checkpoint: bad.pt}"))
    r = workspace.build()
    assert r.code == 3
    msg = next(s["message"] for s in r.json["steps"] if s["id"] == "tiny:export")
    assert "checkpoint bad.pt does not fit the model" in msg
    assert "recipes/tiny.yaml" in msg


def test_noop_build_imports_no_heavy_library(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0
    r = workspace.run("build", env={"_pyflags": ["-X", "importtime"]})
    assert r.code == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "import time:" in line}
    assert not imported & {"torch", "onnx", "onnxruntime", "onnxsim", "numpy", "jsonschema", "yaml"}


def test_reference_inputs_are_seeded_and_shared_with_parity(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    workspace.build()
    data = np.load(workspace.root / "out/tiny/reference.npz")
    manifest = json.loads(bytes(data["manifest"]).decode())
    shapes = {e["point"]: list(data[e["inputs"]["x"]].shape) for e in manifest}
    drawn = {p: s for p, s in shapes.items() if p.startswith("random")}
    assert {p: s for p, s in shapes.items() if p not in drawn} == {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}
    assert sorted(drawn) == ["random1", "random2"] and all(1 <= b <= 8 for b, _ in drawn.values())


def test_repeated_noop_is_answered_from_stats_alone_and_says_the_same(workspace):
    import os
    import time

    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0
    past = time.time() - 60
    # the root too: creating out/ stamped it, and a file younger than 2 s is not recorded
    for p in [workspace.root, *workspace.root.rglob("*")]:
        os.utime(p, (past, past), follow_symlinks=False)
    full = workspace.build()  # stats moved: the full path checks digests and records the manifest
    assert full.code == 0 and full.ran() == []
    fast = workspace.run("build", "--json", env={"_pyflags": ["-X", "importtime"]})
    assert fast.code == 0
    assert fast.json["steps"] == [dict(s, seconds=0.0) for s in full.json["steps"]]
    assert "buildsys.engine.workspace" not in fast.stderr  # nothing was resolved
    # any edit falls back to the full path
    workspace.write("recipes/tiny.yaml", tiny_recipe(atol="3.0e-4"))
    r = workspace.build()
    assert r.ran() == ["tiny:parity[fp32]"]
