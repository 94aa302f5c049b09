"""Real third-party models (transformers architectures, the repo's samples) through export and parity.

Slow: one build of every model with both exporters (tests/fixtures/real_models.py);
benchmarks/real_models.py prints the same builds as a table with timings.
"""
from __future__ import annotations

import json

import pytest

from tests.fixtures.real_models import EXPORTERS, FP16_SAMPLES, MODELS, SAMPLES, SIZE_DEPENDENT

pytestmark = pytest.mark.slow
pytest.importorskip("transformers", reason="the test extra installs transformers")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.e2e.conftest import Workspace
    from tests.fixtures.real_models import workspace

    root = tmp_path_factory.mktemp("real")
    names = workspace(root)
    ws = Workspace(root)
    r = ws.run("build", "--json", "-k", *names, timeout=3600)
    return ws, {s["id"]: s for s in r.json["steps"]}


def _parity(ws, name: str) -> dict | None:
    path = ws.root / "out" / name / "parity" / "fp32.json"
    return json.loads(path.read_text()) if path.is_file() else None


@pytest.mark.parametrize("model", [m for m in MODELS if m not in SIZE_DEPENDENT])
def test_the_default_exporter_builds_every_size_independent_model(built, model):
    ws, steps = built
    name = f"{model}-dynamo"
    assert steps[f"{name}:export"]["state"] == "ran", steps[f"{name}:export"].get("message")
    parity = _parity(ws, name)
    assert parity is not None and parity["passed"], parity and parity["failures"]
    points = {r["point"] for r in parity["results"]}
    assert {"min", "opt", "max", "random1", "random2"} <= points


def test_swin_fails_export_naming_the_dims_and_the_guard(built):
    _, steps = built
    step = steps["swin-dynamo:export"]
    assert step["state"] == "failed"
    msg = step["message"]
    # confirmed by running the graph: at 64 and 96 it is right, at 34 its output has the wrong shape
    assert "dim height: the exported graph holds for only sizes 32·n from 64 to 96, not for all of the declared " \
           "32..96 (run at size 34 it is wrong (shape [2, 32, 32] instead of [2, 40, 32]))" in msg, msg
    assert "dim width:" in msg and "not for all of the declared 32..96" in msg
    assert "export: {exporter: torchscript} is the other route" in msg
    assert "the model's code constrains it at transformers/models/swin/modeling_swin.py:" in msg


@pytest.mark.parametrize("model", MODELS)
def test_torchscript_passes_or_says_where_it_is_wrong(built, model):
    ws, steps = built
    name = f"{model}-torchscript"
    export = steps[f"{name}:export"]
    if export["state"] == "failed":
        assert "the torchscript exporter failed: " in export["message"] and "\x1b" not in export["message"]
        return
    parity = _parity(ws, name)
    assert parity is not None
    if not parity["passed"]:
        assert parity["failures"] and all(f.split()[0].rstrip(":") in {r["point"] for r in parity["results"]}
                                          for f in parity["failures"])
        assert "passed at" in steps[f"{name}:parity[fp32]"]["summary"]


def test_torchscript_passes_on_at_least_80_percent_of_the_models(built):
    ws, _ = built
    passed = [m for m in MODELS if (_parity(ws, f"{m}-torchscript") or {}).get("passed")]
    assert len(passed) >= 0.8 * len(MODELS), sorted(set(MODELS) - set(passed))


@pytest.mark.parametrize("name", [f"{m}-{e}" for m in SAMPLES for e in EXPORTERS]
                         + [f"{m}-torchscript" for m in FP16_SAMPLES])
def test_every_sample_passes_the_default_fp16_tolerance_on_the_cpu(built, name):
    from buildsys.recipe.model import DEFAULT_TOLERANCES

    ws, steps = built
    assert steps[f"{name}:convert[fp16]"]["state"] == "ran"
    assert steps[f"{name}:parity[fp16]"]["state"] == "ran", steps[f"{name}:parity[fp16]"].get("message")
    doc = json.loads((ws.root / "out" / name / "parity" / "fp16.json").read_text())
    assert doc["passed"], doc["failures"]
    assert doc["tolerance"] == {k: v for k, v in vars(DEFAULT_TOLERANCES["fp16"]).items()}
    assert steps[f"{name}:engine[tensorrt-fp16]"]["state"] in ("unavailable", "ran")  # "ran" where TensorRT runs


def test_every_export_runs_under_both_exporters(built):
    _, steps = built
    assert {s.rpartition("-")[2].partition(":")[0] for s in steps if s.endswith(":export")} == set(EXPORTERS)
