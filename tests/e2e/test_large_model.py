"""A model over 2 GiB: external data through export, parity and the ONNX Runtime engine."""
from __future__ import annotations

import os
import resource
import shutil
import time

import onnx
import onnxruntime as ort
import pytest

RECIPE = """\
version: 1
model: {factory: "tm.large:large"}
inputs: [{name: x, dtype: float32, shape: [batch, 8192], data: {kind: uniform, low: -1.0, high: 1.0}}]
outputs: [{name: y}]
dims: {batch: {min: 1, opt: 2, max: 4}}
export: {opset: 18, exporter: dynamo}
tolerances: {fp32: {atol: 1.0e-3, rtol: 1.0e-3}}
"""


@pytest.mark.slow
def test_a_model_over_2_gib_builds_with_external_data(workspace):
    workspace.write("recipes/large.yaml", RECIPE.replace("outputs: [{name: y}]", "outputs: [{name: hidden}]"))
    t0 = time.perf_counter()
    r = workspace.build()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"\n>2 GiB model: clean build {seconds:.0f}s, peak RSS of a worker {peak:.1f} GiB")
    assert r.code == 0, r.stderr
    out = workspace.root / "out/large"
    assert (out / "model.onnx.data").stat().st_size > 2**31
    assert (out / "model.onnx").stat().st_size < 2**20  # the graph alone; weights are beside it
    steps = {s["id"]: s for s in r.json["steps"]}
    assert steps["large:parity[fp32]"]["passed"] is True
    # why onnxsim did not run is said where users look: the console and build --json
    why = "onnxsim skipped: the model is over 2 GiB"
    assert steps["large:simplify"]["state"] == "ran" and steps["large:simplify"]["note"].startswith(why)
    assert f"note: {why}" in r.stderr
    assert "beyond the ORT format's limit" in steps["large:engine[onnxruntime-fp32]"]["note"]
    assert (out / "engines/onnxruntime-fp32.onnx.data").exists()
    # each artifact names its own data file, so it travels with that file alone
    for rel in ("model.onnx", "model.sim.onnx", "engines/onnxruntime-fp32.onnx"):
        artifact = out / rel
        graph = onnx.load(str(artifact), load_external_data=False)
        assert {e.value for t in graph.graph.initializer for e in t.external_data
                if e.key == "location"} == {artifact.name + ".data"}, rel
        # linked, not copied: the folder holds this pair alone, without 2 GiB more on the disk
        alone = workspace.root / "alone" / rel.replace("/", "_")
        alone.mkdir(parents=True)
        for f in (artifact, artifact.with_name(artifact.name + ".data")):
            os.link(f, alone / f.name)
        session = ort.InferenceSession(str(alone / artifact.name), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["hidden"]
        del session
        shutil.rmtree(alone)
    # the pair is one artifact: a second build finds both files as it left them
    r = workspace.build()
    assert r.ran() == []
    # the weights take a few GiB; later tests in the session need the disk
    shutil.rmtree(workspace.root / "out")
