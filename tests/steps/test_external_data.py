"""Artifacts with external data: each names its own data file, so it can be copied with it alone.

Fast stand-in for the >2 GiB model (tests/e2e/test_large_model.py): a small model
whose export is forced to external data, and a simplify step forced to pass it
through as it does over 2 GiB.
"""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort

import buildsys.steps.export
import buildsys.steps.simplify
from tests.steps import RecipeSteps

RECIPE = """\
version: 1
model: {factory: "tm.tiny:tiny", kwargs: {features: 512}}  # weights big enough to be stored outside
inputs:
  - {name: x, dtype: float32, shape: [batch, 512], data: {kind: normal, mean: 0.0, std: 1.0}}
outputs:
  - name: scores
dims:
  batch: {min: 1, opt: 4, max: 8}
export: {opset: 18, exporter: dynamo}
calibration: {data: {kind: normal, mean: 0.0, std: 1.0}, samples: 4}
targets:
  - {backend: onnxruntime, precision: fp32}
  - {backend: onnxruntime, precision: int8}
"""


def locations(path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}


def test_every_artifact_with_external_data_names_its_own_file_and_loads_copied_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(buildsys.steps.export, "EXTERNAL_DATA_BYTES", 0)
    monkeypatch.setattr(buildsys.steps.simplify, "TWO_GIB", 0)
    steps = RecipeSteps(tmp_path / "ws", RECIPE)
    answers = {name: steps.run(name) for name in ("export", "reference", "simplify", "calibrate",
                                                  "quantize[onnxruntime]", "engine[onnxruntime-fp32]",
                                                  "engine[onnxruntime-int8]")}
    assert all(a["ok"] for a in answers.values()), {k: a.get("error") for k, a in answers.items()}
    assert answers["simplify"]["note"].startswith("onnxsim skipped: the model is over 2 GiB")
    assert "written as optimised ONNX" in answers["engine[onnxruntime-fp32]"]["note"]

    out = tmp_path / "ws/out/r"
    artifacts = sorted(p for p in [*out.glob("*.onnx"), *out.glob("engines/*.onnx")] if p.with_name(p.name + ".data").exists())
    assert [p.relative_to(out).as_posix() for p in artifacts] == [
        "engines/onnxruntime-fp32.onnx", "engines/onnxruntime-int8.onnx", "model.int8.onnx", "model.onnx",
        "model.sim.onnx"]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)}
    for i, artifact in enumerate(artifacts):
        assert locations(artifact) == {artifact.name + ".data"}, artifact
        alone = tmp_path / f"copy{i}"
        alone.mkdir()
        for f in (artifact, artifact.with_name(artifact.name + ".data")):
            shutil.copyfile(f, alone / f.name)
        onnx.checker.check_model(str(alone / artifact.name))
        (scores,) = ort.InferenceSession(str(alone / artifact.name), providers=["CPUExecutionProvider"]).run(None, feeds)
        assert scores.shape == (2, 2), artifact
