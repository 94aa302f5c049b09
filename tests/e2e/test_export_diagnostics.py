"""Export failures name their root cause and the model's line; an export that needs autograd off gets it."""
from __future__ import annotations

import json

import pytest

RECIPE = """\
version: 1
model: {{factory: "tm.failing:build", kwargs: {{kind: {kind}}}}}
inputs:
  - {{name: x, dtype: float32, shape: {shape}, data: {{kind: normal, mean: 0.0, std: 1.0}}}}
outputs: [{{name: out}}]
dims:
  batch: {{min: 1, opt: 2, max: 4}}
{extra}export: {{opset: 18, exporter: dynamo}}
"""
SEQ = "  seq: {min: 4, opt: 12, max: 16}\n"
CASES = {
    "attention": ("[batch, seq, 8]", SEQ),
    "unsupported": ("[batch, 4, 4]", ""),
    "branch": ("[batch, 4]", ""),
    "mismatch": ("[batch, 4]", ""),
    "size_branch": ("[batch, seq, 8]", SEQ),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import shutil

    from tests.e2e.conftest import FIXTURES, Workspace

    root = tmp_path_factory.mktemp("diag")
    shutil.copytree(FIXTURES, root / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    ws = Workspace(root)
    for kind, (shape, extra) in CASES.items():
        ws.write(f"recipes/{kind}.yaml", RECIPE.format(kind=kind, shape=shape, extra=extra))
    r = ws.build("-k")
    return ws, r, {s["id"]: s for s in r.json["steps"]}


def _message(steps, recipe: str) -> str:
    step = steps[f"{recipe}:export"]
    assert step["state"] == "failed", step
    return step["message"]


def test_a_view_of_a_gradient_tracking_tensor_exports_with_autograd_off(built):
    ws, r, steps = built
    assert steps["attention:export"]["state"] == "ran", steps["attention:export"]
    assert steps["attention:parity[fp32]"]["state"] == "ran"
    assert "passed at min, opt, max, random1" in steps["attention:parity[fp32]"]["summary"]


def test_an_unsupported_operator_is_named_with_the_models_line(built):
    _, _, steps = built
    msg = _message(steps, "unsupported")
    assert "no ONNX conversion for the operator aten.linalg_eig.default" in msg
    assert "at tm/failing.py:38 (return torch.linalg.eigvals(x).real)" in msg


def test_a_branch_on_tensor_values_is_named_with_the_models_line(built):
    _, _, steps = built
    msg = _message(steps, "branch")
    assert "the model branches on the values of a tensor" in msg
    assert "at tm/failing.py:45 (if x.sum() > 0:)" in msg


def test_a_shape_mismatch_is_named_with_the_models_line(built):
    _, _, steps = built
    msg = _message(steps, "mismatch")
    assert "must have same reduction dim" in msg and "[5, 2]" in msg
    assert "at tm/failing.py:58 (return self.fc(x))" in msg


def test_a_dim_the_model_narrows_fails_naming_the_range_that_holds_and_the_guard(built):
    _, _, steps = built
    msg = _message(steps, "size_branch")
    assert "dim seq: the exported graph holds for 9..16, not for all of the declared 4..16" in msg
    assert "the model's code constrains it at tm/failing.py:65 in forward" in msg
    assert msg.startswith("recipes/size_branch.yaml:8:3: dims.seq: ")
    assert "hint: " in msg and "export: {exporter: torchscript} is the other route" in msg
    assert "L['x']" not in msg and "<=" not in msg


def test_no_terminal_colour_anywhere_and_the_log_keeps_the_whole_report(built):
    ws, r, _ = built
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr
    log = (ws.root / "out/unsupported/logs/export.log").read_text()
    assert "\x1b" not in log
    assert "Traceback (most recent call last)" in log and "DispatchError" in log
    assert "Error when translating node %linalg_eig" in log
    assert json.dumps(r.json).find("\\u001b") == -1
