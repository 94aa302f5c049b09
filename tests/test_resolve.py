"""The resolver and step keys: which recipe field reaches which step."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from buildsys.core.errors import RecipeError
from buildsys.engine.keys import diff_docs
from buildsys.engine.rebuilder import Rebuilder
from buildsys.engine.workspace import Workspace
from buildsys.recipe.model import (
    CalibrationSpec,
    DataSpec,
    Dim,
    ExportSpec,
    InputSpec,
    ModelSpec,
    OutputSpec,
    Recipe,
    TargetSpec,
    Tolerance,
)
from buildsys.recipe.resolve import resolve
from buildsys.storage.state import State
from buildsys.storage.store import Store


def recipe(**changes) -> Recipe:
    base = Recipe(
        name="net", file="recipes/net.yaml", sources=("recipes/net.yaml",),
        model=ModelSpec("models.net:net", {"width": 8}),
        inputs=(InputSpec("input", "float32", ("batch", 3, "side", "side")),),
        outputs=(OutputSpec("logits"),),
        dims=(Dim("batch", 1, 2, 8), Dim("side", 32, 64, 96)),
        positions={"calibration.data.path": ("recipes/net.yaml", 14, 11)},
    )
    return dataclasses.replace(base, **changes)


def keys(tmp_path: Path, r: Recipe) -> dict[str, str]:
    """Every step's key, with fixed digests standing in for upstream artifacts."""
    graph = resolve([r], tmp_path)
    state = State(tmp_path / "state")
    rb = Rebuilder(Workspace(tmp_path), graph, state, Store(tmp_path / "store"))
    fake = {sid: {name: [["f", "0" * 64, 1]] for name in s.outputs} for sid, s in graph.steps.items()}
    out = {sid: rb.decide(s, fake).key for sid, s in graph.steps.items()}
    state.close()
    return out


def test_fp32_recipe_resolves_to_the_five_steps_in_order(tmp_path):
    g = resolve([recipe()], tmp_path)
    assert list(g.steps) == ["net:export", "net:reference", "net:simplify", "net:parity[fp32]",
                             "net:engine[onnxruntime-fp32]"]
    assert g.steps["net:parity[fp32]"].inputs == {"model": "net:simplify#model", "reference": "net:reference#reference"}
    assert g.steps["net:engine[onnxruntime-fp32]"].gates == ("net:parity[fp32]",)
    assert g.steps["net:export"].outputs == {"model": "net/model.onnx"}


def test_each_step_carries_its_class_facts_from_the_resolver(tmp_path):
    """Kind, version, tools, device, lane and residency are decided once, when the graph is made."""
    from buildsys.steps.export import ExportOnnx
    from buildsys.steps.parity import ParityCheck

    g = resolve([recipe()], tmp_path)
    export, parity = g.steps["net:export"], g.steps["net:parity[fp32]"]
    assert (export.kind, export.version, export.tools) == ("export", ExportOnnx.VERSION, tuple(ExportOnnx.TOOLS))
    assert export.lane == ExportOnnx.lane(export.params) == "dynamo"
    assert (parity.resident, parity.device, parity.lane) == (ParityCheck.RESIDENT, ParityCheck.DEVICE,
                                                            ParityCheck.lane(parity.params))


def test_simplify_off_feeds_the_exported_model_to_parity(tmp_path):
    from buildsys.recipe.model import SimplifySpec

    g = resolve([recipe(simplify=SimplifySpec(False))], tmp_path)
    assert "net:simplify" not in g.steps
    assert g.steps["net:parity[fp32]"].inputs["model"] == "net:export#model"


def test_tolerance_change_touches_only_parity(tmp_path):
    a = keys(tmp_path, recipe())
    b = keys(tmp_path, recipe(tolerances={**recipe().tolerances, "fp32": Tolerance(atol=1e-3, rtol=1e-3)}))
    assert {s for s in a if a[s] != b[s]} == {"net:parity[fp32]"}


def test_opset_change_touches_export_only_directly(tmp_path):
    # downstream steps change through their input digests once export produces new bytes
    a = keys(tmp_path, recipe())
    b = keys(tmp_path, recipe(export=ExportSpec(opset=17, exporter="torchscript")))
    assert {s for s in a if a[s] != b[s]} == {"net:export"}


def test_model_kwargs_touch_export_and_reference(tmp_path):
    a = keys(tmp_path, recipe())
    b = keys(tmp_path, recipe(model=ModelSpec("models.net:net", {"width": 16})))
    assert {s for s in a if a[s] != b[s]} == {"net:export", "net:reference"}


def test_reasons_speak_in_recipe_fields(tmp_path):
    graph = resolve([recipe()], tmp_path)
    step = graph.steps["net:export"]
    old = {"step": "export", "version": 1, "params": {"export": {"opset": 17}}, "inputs": {}, "files": {},
           "env": {"tools": {"torch": "2.12.0"}, "python": "3.11"}}
    new = {"step": "export", "version": 2, "params": {"export": {"opset": 18}}, "inputs": {}, "files": {},
           "env": {"tools": {"torch": "2.13.0"}, "python": "3.11"}}
    assert diff_docs(old, new, step) == ["export implementation v1 → v2", "export.opset: 17 → 18",
                                         "torch 2.12.0 → 2.13.0"]


def test_int8_target_adds_calibrate_quantize_and_int8_parity(tmp_path):
    (tmp_path / "calib").mkdir()
    for i in range(3):
        (tmp_path / f"calib/{i}.npy").write_bytes(b"x")
    r = recipe(targets=(TargetSpec("onnxruntime", "fp32"), TargetSpec("onnxruntime", "int8"),
                        TargetSpec("tensorrt", "int8")),
               calibration=CalibrationSpec(data=DataSpec(kind="npy", path="calib/*.npy")))
    g = resolve([r], tmp_path)
    assert g.steps["net:calibrate"].files == {"data.0000": "calib/0.npy", "data.0001": "calib/1.npy",
                                              "data.0002": "calib/2.npy"}
    assert g.steps["net:parity[int8]"].inputs["model"] == "net:quantize[onnxruntime]#model"
    trt = g.steps["net:engine[tensorrt-int8]"]
    assert trt.inputs["model"] == "net:quantize[tensorrt]#model" and trt.gates == ("net:parity[int8]",)
    assert g.steps["net:engine[onnxruntime-int8]"].outputs == {"engine": "net/engines/onnxruntime-int8.ort"}


def test_calibration_glob_matching_nothing_is_a_located_recipe_error(tmp_path):
    r = recipe(targets=(TargetSpec("onnxruntime", "int8"),),
               calibration=CalibrationSpec(data=DataSpec(kind="npy", path="nowhere/*.npy")))
    with pytest.raises(RecipeError) as err:
        resolve([r], tmp_path)
    assert err.value.problems[0].render() == (
        "recipes/net.yaml:14:11: calibration.data.path: the glob 'nowhere/*.npy' matches no file\n"
        "  hint: paths are relative to the workspace root")


def test_tensorrt_profiles_come_from_dims_then_overrides(tmp_path):
    r = recipe(targets=(TargetSpec("tensorrt", "fp16", workspace=1 << 30),),
               profiles=({"batch": {"min": 16, "opt": 16, "max": 32}},))
    step = resolve([r], tmp_path).steps["net:engine[tensorrt-fp16]"]
    batch = [p["batch"] for p in step.params["profiles"]]
    assert batch == [{"name": "batch", "min": 1, "opt": 2, "max": 8}, {"name": "batch", "min": 16, "opt": 16, "max": 32}]
    assert step.params["target"]["workspace"] == 1 << 30


def test_npy_input_files_are_in_the_export_and_reference_keys(tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(2):
        (tmp_path / f"data/{i}.npy").write_bytes(b"x")
    r = recipe(inputs=(InputSpec("input", "float32", ("batch", 3, "side", "side"),
                                 data=DataSpec(kind="npy", path="data/*.npy")),))
    g = resolve([r], tmp_path)
    assert g.steps["net:reference"].files == {"input.input.0000": "data/0.npy", "input.input.0001": "data/1.npy"}
    before = keys(tmp_path, r)
    (tmp_path / "data/1.npy").write_bytes(b"y")
    after = keys(tmp_path, r)
    assert before["net:reference"] != after["net:reference"]
    assert before["net:export"] != after["net:export"]
    assert before["net:simplify"] == after["net:simplify"]  # upstream digests are fixed stand-ins here


def test_an_onnx_file_starts_at_check_with_an_onnxruntime_reference(tmp_path):
    from buildsys.recipe.model import SimplifySpec

    r = recipe(model=ModelSpec(onnx="models/net.onnx"))
    graph = resolve([r], tmp_path)
    assert list(graph.steps) == ["net:check", "net:reference", "net:simplify", "net:parity[fp32]",
                                 "net:engine[onnxruntime-fp32]"]
    check, ref = graph.steps["net:check"], graph.steps["net:reference"]
    assert check.files == {"model": "models/net.onnx"} and check.outputs == {"model": "net/model.onnx"}
    assert ref.kind_path.endswith(":OnnxRuntimeReference") and ref.inputs == {"model": "net:check#model"}
    assert graph.steps["net:simplify"].inputs == {"model": "net:check#model"}
    # the simplify passes reach simplify and what reads its model, not the check
    before = keys(tmp_path, r)
    after = keys(tmp_path, dataclasses.replace(r, simplify=SimplifySpec(passes=("onnxsim", "onnxoptimizer"))))
    assert {s for s in before if before[s] != after[s]} == {"net:simplify"}


def test_a_saved_model_folder_is_in_the_convert_and_reference_keys_file_by_file(tmp_path):
    from buildsys.recipe.model import TensorFlowSpec

    for rel in ("models/sm/saved_model.pb", "models/sm/variables/variables.index"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    r = recipe(model=ModelSpec(tensorflow=TensorFlowSpec(saved_model="models/sm")))
    graph = resolve([r], tmp_path)
    convert, ref = graph.steps["net:convert"], graph.steps["net:reference"]
    expected = {"model.0000": "models/sm/saved_model.pb", "model.0001": "models/sm/variables/variables.index"}
    assert convert.files == expected and ref.files == expected
    assert ref.kind_path.endswith(":TensorFlowReference") and "net:export" not in graph.steps


def test_a_pytorch_recipes_export_key_does_not_name_the_other_model_kinds(tmp_path):
    graph = resolve([recipe()], tmp_path)
    assert set(graph.steps["net:export"].params["model"]) == {"factory", "kwargs", "checkpoint"}


def test_fallback_auto_puts_its_step_between_quantize_and_int8_parity(tmp_path):
    from buildsys.recipe.model import QuantizationSpec

    r = recipe(targets=(TargetSpec("onnxruntime", "int8"), TargetSpec("tensorrt", "int8")),
               calibration=CalibrationSpec(),
               quantization=QuantizationSpec(cpu="avx2", exclude=("/a/Conv",), fallback="auto", max_fp32_nodes=3))
    g = resolve([r], tmp_path)
    fb = g.steps["net:fallback[onnxruntime]"]
    assert fb.inputs["quantized"] == "net:quantize[onnxruntime]#model"
    assert fb.params["quantization"] == {"cpu": "avx2", "exclude": ["/a/Conv"], "max_fp32_nodes": 3}
    assert fb.outputs == {"model": "net/model.int8.fallback.onnx", "report": "net/fallback.json"}
    assert g.steps["net:parity[int8]"].inputs["model"] == "net:fallback[onnxruntime]#model"
    assert g.steps["net:engine[onnxruntime-int8]"].inputs["model"] == "net:fallback[onnxruntime]#model"
    # the TensorRT flavour keeps the pinned nodes in fp32 too, and has no CPU class
    assert g.steps["net:quantize[tensorrt]"].params["quantization"] == {"exclude": ["/a/Conv"]}
    assert g.steps["net:quantize[onnxruntime]"].params["quantization"] == {"exclude": ["/a/Conv"], "cpu": "avx2"}


def test_random_shapes_draw_only_multiples_of_a_dims_multiple_of(tmp_path):
    from buildsys.recipe.model import ParitySpec

    free = resolve([recipe(parity=ParitySpec(random_shapes=16))], tmp_path).steps["net:reference"]
    assert any(s["side"] % 8 for s in free.params["parity"]["shapes"].values())  # the seed draws other sizes
    r = recipe(dims=(Dim("batch", 1, 2, 8), Dim("side", 32, 64, 96, multiple_of=8)),
               parity=ParitySpec(random_shapes=16))
    shapes = resolve([r], tmp_path).steps["net:reference"].params["parity"]["shapes"]
    assert len(shapes) == 16 and all(s["side"] % 8 == 0 and 32 <= s["side"] <= 96 for s in shapes.values())
    assert len({s["side"] for s in shapes.values()}) > 3


def test_unordered_and_multiple_of_reach_only_the_steps_that_read_them(tmp_path):
    from buildsys.recipe.model import ParitySpec

    a = keys(tmp_path, recipe(targets=(TargetSpec("onnxruntime", "fp32"), TargetSpec("torchscript"))))
    b = keys(tmp_path, recipe(targets=(TargetSpec("onnxruntime", "fp32"), TargetSpec("torchscript")),
                              parity=ParitySpec(unordered=("logits",))))
    assert {k for k in a if a[k] != b[k]} == {"net:parity[fp32]", "net:engine[onnxruntime-fp32]",
                                             "net:engine[torchscript]"}
    c = keys(tmp_path, recipe(dims=(Dim("batch", 1, 2, 8), Dim("side", 32, 64, 96, multiple_of=8))))
    d = keys(tmp_path, recipe())
    assert c["net:export"] != d["net:export"] and c["net:reference"] != d["net:reference"]
def test_every_choice_of_the_int8_flavour_is_in_the_quantize_and_fallback_keys(tmp_path, monkeypatch):
    from buildsys.core import flavours
    from buildsys.recipe.model import QuantizationSpec

    int8 = dict(targets=(TargetSpec("onnxruntime", "int8"), TargetSpec("tensorrt", "int8")),
                calibration=CalibrationSpec(), quantization=QuantizationSpec(cpu="vnni", fallback="auto"))
    g = resolve([recipe(**int8)], tmp_path)
    settings = g.steps["net:quantize[onnxruntime]"].params["settings"]
    assert settings == {"activations": "QUInt8", "weights": "QInt8", "symmetric_activations": False,
                        "quantize_bias": True, "reduce_range": False, "integer_pad": True}
    assert g.steps["net:fallback[onnxruntime]"].params["settings"] == settings
    assert g.steps["net:quantize[tensorrt]"].params["settings"]["integer_pad"] is False
    # the CPU class's choice (7-bit weights for AVX2) is one of them
    avx2 = resolve([recipe(**{**int8, "quantization": QuantizationSpec(cpu="avx2")})], tmp_path)
    assert avx2.steps["net:quantize[onnxruntime]"].params["settings"]["reduce_range"] is True

    # A changed choice of the flavour re-quantizes (and re-searches the fallback), nothing upstream.
    before = keys(tmp_path, recipe(**int8))
    changed = dataclasses.replace(flavours.FLAVOURS["onnxruntime"], integer_pad=False)
    monkeypatch.setitem(flavours.FLAVOURS, "onnxruntime", changed)
    after = keys(tmp_path, recipe(**int8))
    assert {s for s in before if before[s] != after[s]} >= {"net:quantize[onnxruntime]", "net:fallback[onnxruntime]"}
    assert all(before[s] == after[s] for s in ("net:export", "net:calibrate", "net:quantize[tensorrt]"))


def test_npy_data_shared_by_parity_and_calibration_is_split_by_seed(tmp_path):
    (tmp_path / "d").mkdir()
    for i in range(8):
        (tmp_path / f"d/{i}.npy").write_bytes(b"x")
    shared = DataSpec(kind="npy", path="d/*.npy")
    r = recipe(inputs=(InputSpec("input", "float32", ("batch", 3, "side", "side"), shared),),
               targets=(TargetSpec("onnxruntime", "int8"),), calibration=CalibrationSpec(data=shared))
    g = resolve([r], tmp_path)
    held = g.steps["net:calibrate"].params["held_out"]
    assert len(held) == 2  # parity.holdout 0.25 of 8
    calibrated = sorted(g.steps["net:calibrate"].files.values())
    assert sorted(calibrated + held) == [f"d/{i}.npy" for i in range(8)]
    assert g.steps["net:reference"].params["parity"]["files"] == {"input": held}
    assert g.steps["net:parity[int8]"].params["data"]["input"]["held_out_of_calibration"] == 2
    # the split follows the parity seed
    other = resolve([dataclasses.replace(r, parity=dataclasses.replace(r.parity, seed=5))], tmp_path)
    assert other.steps["net:calibrate"].params["held_out"] != held
    # an fp32 recipe's npy parity data is not split: its keys stay as they were
    fp32 = resolve([dataclasses.replace(r, targets=(TargetSpec("onnxruntime", "fp32"),), calibration=None)], tmp_path)
    assert "files" not in fp32.steps["net:reference"].params["parity"]
