"""simplify: onnxsim, and the fallback to the exported model when the recipe allows it."""
from __future__ import annotations

import types

import pytest

from tests.steps import RecipeSteps

RECIPE = """\
version: 1
model: {{factory: "tm.tiny:tiny", kwargs: {{features: 4}}}}
inputs:
  - {{name: x, dtype: float32, shape: [batch, 4], data: {{kind: normal, mean: 0.0, std: 1.0}}}}
outputs:
  - name: scores
dims:
  batch: {{min: 1, opt: 4, max: 8}}
export: {{opset: 18, exporter: torchscript}}
simplify: {simplify}
tolerances:
  fp32: {{atol: 1.0e-4, rtol: 1.0e-3}}
"""

# A stand-in for onnxsim's native code, first on the child's import path.
CRASHING = "import os\n\ndef simplify(model):\n    os.abort()\n"
RAISING = "def simplify(model):\n    raise RuntimeError('unsupported node Foo')\n"


def _steps(tmp_path, simplify: str) -> RecipeSteps:
    steps = RecipeSteps(tmp_path, RECIPE.format(simplify=simplify))
    assert steps.run("export")["ok"]
    return steps


def test_with_fallback_a_healthy_onnxsim_still_simplifies(tmp_path):
    steps = _steps(tmp_path, "{fallback: true}")
    answer = steps.run("simplify")
    assert answer["ok"], answer
    assert "nodes" in answer["summary"] and "fell back" not in answer["summary"]
    assert steps.out("simplify", "model").read_bytes() != b""


@pytest.mark.parametrize("fake, reason", [(CRASHING, "onnxsim crashed (SIGABRT)"),
                                          (RAISING, "unsupported node Foo")])
def test_with_fallback_a_failing_onnxsim_leaves_the_exported_model_and_says_so(tmp_path, monkeypatch, capsys, fake,
                                                                              reason):
    steps = _steps(tmp_path, "{fallback: true}")
    fakes = tmp_path / "fake"
    (fakes / "onnxsim").mkdir(parents=True)
    (fakes / "onnxsim" / "__init__.py").write_text(fake)
    monkeypatch.setenv("PYTHONPATH", str(fakes))
    answer = steps.run("simplify")
    assert answer["ok"], answer
    assert answer["summary"].startswith("fell back to the exported model (simplify.fallback): ")
    assert reason in answer["summary"]
    assert steps.out("simplify", "model").read_bytes() == steps.out("export", "model").read_bytes()
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("onnxsim did not give a usable model: ")]
    assert len(said) == 1 and reason in said[0]  # in the step's log


def test_without_fallback_a_failing_onnxsim_fails_the_step_and_names_the_way_out(tmp_path, monkeypatch):
    steps = _steps(tmp_path, "true")
    fake = types.ModuleType("onnxsim")

    def simplify(model):
        raise RuntimeError("unsupported node Foo")

    fake.simplify = simplify
    monkeypatch.setitem(__import__("sys").modules, "onnxsim", fake)
    answer = steps.run("simplify")
    assert not answer["ok"]
    assert answer["error"] == "onnxsim failed: RuntimeError: unsupported node Foo"
    assert answer["field"] == "simplify" and "simplify: {fallback: true}" in answer["hint"]
