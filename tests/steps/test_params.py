"""Typed step parameters: every slice the resolver writes becomes its step's parameters."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from buildsys.recipe import discover, load_recipes
from buildsys.recipe.model import CalibrationSpec, QuantizationSpec, TargetSpec
from buildsys.resolve import resolve
from buildsys.steps import step_class
from buildsys.steps.params import ExportParams, from_slice
from tests.test_resolve import recipe

ROOT = Path(__file__).resolve().parents[2]


def _variants():
    yield recipe()
    yield recipe(calibration=CalibrationSpec(), quantization=QuantizationSpec(cpu="avx2", fallback="auto"),
                 targets=(TargetSpec("onnxruntime", "int8"), TargetSpec("tensorrt", "int8"),
                          TargetSpec("torchscript", mode="trace")))
    yield recipe(targets=(TargetSpec("onnxruntime", "int8"),))  # a quantization-aware trained model: no calibration


def _typed_steps(graph):
    for spec in graph.steps.values():
        cls = step_class(spec.kind_path)
        if cls.PARAMS is not None:
            yield spec, cls


@pytest.mark.parametrize("r", list(_variants()), ids=["fp32", "int8-fallback", "qat"])
def test_every_slice_the_resolver_writes_becomes_typed_parameters(tmp_path, r):
    graph = resolve([r], tmp_path)
    typed = {spec.name: from_slice(cls.PARAMS, spec.params) for spec, cls in _typed_steps(graph)}
    assert {"export", "reference", "simplify", "parity[fp32]"} <= set(typed)
    assert typed["export"].export.opset == r.export.opset
    assert typed["export"].dims["side"].max == 96
    assert typed["reference"].parity.points[:3] == ("min", "opt", "max")
    assert typed["parity[fp32]"].tolerance == r.tolerances["fp32"]


def test_the_sample_recipes_slices_become_typed_parameters():
    recipes, problems = load_recipes(ROOT, discover(ROOT))
    assert problems == []
    graph = resolve(recipes, ROOT)
    steps = list(_typed_steps(graph))
    assert {cls.KIND for _, cls in steps} >= {"export", "reference", "simplify", "parity", "quantize", "fallback"}
    for spec, cls in steps:
        params = from_slice(cls.PARAMS, spec.params)
        assert dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen, spec.id


def test_a_slice_with_a_field_the_parameters_do_not_declare_is_refused():
    with pytest.raises(TypeError, match="ExportParams has no field opset"):
        from_slice(ExportParams, {"model": {"factory": "m:f"}, "inputs": [], "outputs": [], "opset": 18})


def test_a_field_the_slice_leaves_out_takes_the_recipe_default():
    params = from_slice(ExportParams, {"model": {"factory": "m:f"}, "inputs": [], "outputs": [],
                                       "export": {"opset": 17}})
    assert params.export.exporter == "dynamo" and params.export.strict_trace is False
