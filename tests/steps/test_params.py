"""Typed step parameters: every slice the resolver writes becomes its step's parameters."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from buildsys.core.kinds import KINDS
from buildsys.recipe import discover, load_recipes
from buildsys.recipe.model import CalibrationSpec, ModelSpec, QuantizationSpec, TargetSpec, TensorFlowSpec
from buildsys.recipe.resolve import resolve
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
    yield gpu_recipe()
    yield recipe(model=ModelSpec(onnx="models/net.onnx"))  # check + ONNX Runtime's reference
    yield recipe(model=ModelSpec(tensorflow=TensorFlowSpec(keras="models/net.keras")))  # convert + TensorFlow's


def gpu_recipe():
    """TensorRT at every precision and ONNX Runtime's GPU providers, with a second profile: resolving needs no GPU."""
    return recipe(calibration=CalibrationSpec(), profiles=({"batch": {"min": 4, "opt": 8, "max": 16}},),
                  targets=(TargetSpec("tensorrt", "fp32", workspace=2**30), TargetSpec("tensorrt", "fp16"),
                           TargetSpec("tensorrt", "int8"), TargetSpec("tensorrt", "best"),
                           TargetSpec("onnxruntime", "fp16", provider="cuda"),
                           TargetSpec("onnxruntime", "int8", provider="tensorrt")))


def _typed_steps(graph):
    for spec in graph.steps.values():
        cls = step_class(spec.kind_path)
        if cls.PARAMS is not None:
            yield spec, cls


@pytest.mark.parametrize("r", list(_variants()), ids=["fp32", "int8-fallback", "qat", "gpu", "onnx", "tensorflow"])
def test_every_slice_the_resolver_writes_becomes_typed_parameters(tmp_path, r):
    graph = resolve([r], tmp_path)
    typed = {spec.name: from_slice(cls.PARAMS, spec.params) for spec, cls in _typed_steps(graph)}
    first = {"pytorch": "export", "onnx": "check", "tensorflow": "convert"}[r.model.kind]
    assert {first, "reference", "simplify", "parity[fp32]"} <= set(typed)
    assert typed[first].export.opset == r.export.opset
    assert typed["reference"].dims["side"].max == 96
    assert typed[first].dims["side"].max == 96
    assert typed["reference"].parity.points[:3] == ("min", "opt", "max")
    assert typed["parity[fp32]"].tolerance == r.tolerances["fp32"]


def test_the_gpu_engines_read_their_target_profiles_and_tolerance_as_attributes(tmp_path):
    graph = resolve([gpu_recipe()], tmp_path)
    typed = {spec.name: (cls, from_slice(cls.PARAMS, spec.params)) for spec, cls in _typed_steps(graph)}
    engines = {name: p for name, (cls, p) in typed.items() if cls.KIND.startswith("engine-")}
    assert {cls.KIND for cls, _ in typed.values()} >= {"engine-tensorrt", "engine-onnxruntime-cuda",
                                                        "engine-onnxruntime-tensorrt"}
    trt = engines["engine[tensorrt-fp32]"]
    assert trt.target.workspace == 2**30 and len(trt.profiles) == 2
    assert (trt.profiles[0]["batch"].max, trt.profiles[1]["batch"].max) == (8, 16)
    assert trt.inputs[0].shape == ("batch", 3, "side", "side")
    assert set(engines["engine[tensorrt-best]"].tolerances) == {"fp16"}  # best is judged by fp16's
    ort = [p for name, p in engines.items() if p.target.provider == "tensorrt"]
    assert len(ort) == 1 and len(ort[0].profiles) == 1 and ort[0].target.precision == "int8"


NO_PARAMETERS = {"convert-fp16"}  # the fp16 conversion reads its input model alone: its slice is {}


def test_every_step_kind_either_declares_typed_parameters_or_reads_none():
    """A kind without PARAMS would hand its step the plain dict: only the kinds listed here, which read nothing."""
    untyped = {kind for kind, path in KINDS.items() if step_class(path).PARAMS is None}
    assert untyped == NO_PARAMETERS
    for kind in NO_PARAMETERS:
        source = inspect.getsource(step_class(KINDS[kind]))
        assert "self.params" not in source and "self.slice" not in source, kind
    graphs = [resolve([r], Path("/nonexistent")) for r in (recipe(targets=(TargetSpec("tensorrt", "fp16"),)),)]
    written = [s for g in graphs for s in g.steps.values() if s.kind_path in {KINDS[k] for k in NO_PARAMETERS}]
    assert written and all(s.params == {} for s in written)


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
