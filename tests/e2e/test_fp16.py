"""parity[fp16] on the CPU: the default fp16 tolerance passes a healthy model and fails broken ones, naming the cause.

The broken models (tests/fixtures/models/fp16_broken.py) are exact in fp32 and
leave float16's range in one layer; parity[fp16] computes the fp16 model as a GPU
does (float16 storage, float32 arithmetic), so the overflow shows here too.
"""
from __future__ import annotations

import json

import pytest

RECIPE = """\
version: 1
model: {{factory: "tm.fp16_broken:broken", kwargs: {{kind: {kind}}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, 16], data: {{kind: normal, mean: 0.0, std: 1.0}}}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
export: {{opset: 18, exporter: torchscript}}
parity: {{random_shapes: 0}}
targets: [{{backend: tensorrt, precision: fp16}}]
"""
KINDS = ("healthy", "activations", "softmax", "layernorm")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.e2e.conftest import new_workspace

    ws = new_workspace(tmp_path_factory.mktemp("fp16"))
    for kind in KINDS:
        ws.write(f"recipes/{kind}.yaml", RECIPE.format(kind=kind))
    r = ws.build("-k")
    return ws, r


def _result(ws, name: str) -> dict:
    return json.loads((ws.root / "out" / name / "parity" / "fp16.json").read_text())


def test_a_healthy_model_passes_the_default_fp16_tolerance_and_its_engine_is_unavailable_here(built):
    ws, r = built
    steps = {s["id"]: s for s in r.json["steps"]}
    assert steps["healthy:convert[fp16]"]["state"] == "ran"
    assert steps["healthy:parity[fp16]"]["state"] == "ran"
    assert steps["healthy:parity[fp16]"]["summary"].startswith("fp16 passed at min, opt, max")
    assert steps["healthy:engine[tensorrt-fp16]"]["state"] == "unavailable"
    doc = _result(ws, "healthy")
    assert doc["passed"] and "cause" not in doc
    assert doc["tolerance"]["max_scaled_error"] is not None


def test_activations_beyond_float16_s_range_fail_naming_the_node(built):
    ws, r = built
    assert r.code == 1  # a parity failure
    doc = _result(ws, "activations")
    assert not doc["passed"]
    assert any("NaN and" in f and "Inf values" in f for f in doc["failures"])
    assert doc["cause"].startswith("float16 overflow at Mul node ")
    assert "beyond float16's largest value 65504, and becomes Inf" in doc["cause"]
    summary = next(s for s in r.json["steps"] if s["id"] == "activations:parity[fp16]")["summary"]
    assert "fp16 FAILED" in summary and "cause: float16 overflow at Mul node" in summary
    assert next(s for s in r.json["steps"] if s["id"] == "activations:engine[tensorrt-fp16]")["state"] == "skipped"


def test_a_softmax_whose_scores_overflow_fails_naming_the_overflow_and_the_softmax(built):
    ws, _ = built
    doc = _result(ws, "softmax")
    assert not doc["passed"]
    assert doc["cause"].startswith("float16 overflow at Mul node ")
    assert "; Softmax node '/Softmax' then turns it into NaN" in doc["cause"]


def test_a_layernorm_whose_variance_overflows_fails_although_its_output_is_finite(built):
    ws, _ = built
    doc = _result(ws, "layernorm")
    assert not doc["passed"]
    outs = [m for row in doc["results"] for m in row["outputs"].values()]
    assert all(m["nan"] == 0 and m["inf"] == 0 for m in outs)  # the normalised values collapse to 0, finitely
    assert any("of the output's scale" in f for f in doc["failures"])
    assert doc["cause"].startswith("float16 overflow at Mul node ")  # the squared deviations
