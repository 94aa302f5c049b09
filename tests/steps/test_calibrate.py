"""calibrate and quantize[flavour] on a tiny conv model: real ONNX Runtime calibrator and quantizer."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from buildsys.engine.stepjob import run_job
from tests.e2e.conftest import Workspace
from tests.steps import RecipeSteps

CONVNET = '''\
import torch
from torch import nn


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        )

    def forward(self, x):
        return self.body(x)


def tiny_conv():
    return TinyConv().eval()
'''

RECIPE = """\
version: 1
model: {{factory: "tcal.convnet:tiny_conv"}}
inputs: [{{name: x, dtype: float32, shape: [batch, 3, side, side], data: {{kind: uniform, low: 0.0, high: 1.0}}}}]
outputs: [{{name: scores}}]
dims:
  batch: {{min: 1, opt: 2, max: 4}}
  side: {{min: 8, opt: 16, max: 32}}
export: {{opset: 18, exporter: torchscript}}
calibration: {{data: {data}, samples: {samples}, method: {method}}}
targets: [{{backend: onnxruntime, precision: int8}}, {{backend: tensorrt, precision: int8}}]
"""

RANDOM = "{kind: uniform, low: 0.0, high: 1.0}"
WARNING = "calibrated on random data: ranges may not match real inputs"


def recipe(data: str = RANDOM, samples: int = 4, method: str = "minmax") -> str:
    return RECIPE.format(data=data, samples=samples, method=method)


def workspace(root: Path) -> Path:
    # A package of its own (not the fixtures' `tm`): steps run in this process import it,
    # and a `tm` imported from here would shadow the `tm` of other tests' workspaces.
    (root / "tcal").mkdir(exist_ok=True)
    (root / "tcal" / "__init__.py").write_text("")
    (root / "tcal" / "convnet.py").write_text(CONVNET)
    return root


@pytest.fixture(autouse=True)
def _forget_model_modules():
    yield
    for name in [n for n in sys.modules if n == "tcal" or n.startswith("tcal.")]:
        del sys.modules[name]


def steps_for(root: Path, text: str) -> RecipeSteps:
    return RecipeSteps(workspace(root), text)


def run_on(steps: RecipeSteps, step: str, model: Path, ranges: Path | None = None, params: dict | None = None) -> dict:
    """Run a step of `steps` on a given model (and calib.json), as a worker would."""
    job = steps.job(step, params)
    job["inputs"]["model"] = str(model)
    if ranges is not None:
        job["inputs"]["ranges"] = str(ranges)
    answer = run_job(job)
    if answer["ok"]:  # place the outputs under out/, as RecipeSteps.run does
        for name, files in answer["outputs"].items():
            target = steps.out(step, name).parent
            target.mkdir(parents=True, exist_ok=True)
            for rel, _, _ in files:
                shutil.copyfile(Path(job["scratch"]) / rel, target / rel)
    shutil.rmtree(job["scratch"], ignore_errors=True)
    return answer


def calib_of(steps: RecipeSteps) -> dict:
    return json.loads(steps.out("calibrate", "ranges").read_text())


def zero_point_types(path: Path) -> dict[str, set[str]]:
    """Element types (and values) of the zero points of activation QuantizeLinear nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    types, values = set(), set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            zp = inits[node.input[2]]
            types.add(str(zp.dtype))
            values.update(int(v) for v in zp.ravel())
    return {"types": types, "values": values}


def int32_dequantized(path: Path) -> int:
    """DequantizeLinear nodes of int32 initializers: quantized biases, which TensorRT cannot parse."""
    import onnx

    model = onnx.load(str(path))
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    return sum(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in model.graph.node)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> RecipeSteps:
    """The tiny conv model exported and simplified once; calibrated on random data."""
    steps = steps_for(tmp_path_factory.mktemp("fp32"), recipe())
    for step in ("export", "simplify", "calibrate"):
        answer = steps.run(step)
        assert answer["ok"], answer.get("error")
    return steps


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    """The whole build through the real command: random calibration, both int8 targets."""
    ws = Workspace(workspace(tmp_path_factory.mktemp("built")))
    ws.write("recipes/r.yaml", recipe())
    return ws


def model_of(steps: RecipeSteps) -> Path:
    return steps.out("simplify", "model")


# -- the real command ------------------------------------------------------------------


def test_build_calibrates_once_flags_random_data_and_quantizes_both_flavours(built):
    r = built.build()
    assert r.code == 0, r.stderr
    states = r.states()
    for step in ("calibrate", "quantize[onnxruntime]", "quantize[tensorrt]", "parity[int8]",
                 "engine[onnxruntime-int8]"):
        assert states[f"r:{step}"] == "ran", step
    assert states["r:engine[tensorrt-int8]"] in ("unavailable", "ran")
    parity = next(s for s in r.json["steps"] if s["id"] == "r:parity[int8]")
    assert parity["passed"] is True

    out = built.root / "out" / "r"
    calib = json.loads((out / "calib.json").read_text())
    assert calib["random_data"] is True and calib["qat"] is False
    assert calib["method"] == "minmax" and calib["samples"] == 4
    assert calib["data"]["kind"] == "uniform"
    assert calib["data"]["inputs"]["x"] == {"shape": [2, 3, 16, 16], "dtype": "float32", "from": "calibration.data"}
    assert calib["tensors"] and all(t["min"] <= t["max"] for t in calib["tensors"].values())
    assert "x" in calib["tensors"]  # the model input is quantized too: its range is [0, 1)
    assert 0.0 <= calib["tensors"]["x"]["min"] < 0.01 and 0.99 < calib["tensors"]["x"]["max"] < 1.0
    assert WARNING in (out / "logs" / "calibrate.log").read_text()

    # ONNX Runtime's CPU kernels want unsigned activations; TensorRT symmetric signed ones.
    ort = zero_point_types(out / "model.int8.onnx")
    trt = zero_point_types(out / "model.int8.tensorrt.onnx")
    assert ort["types"] == {"uint8"}
    assert trt["types"] == {"int8"} and trt["values"] == {0}
    assert int32_dequantized(out / "model.int8.onnx") and not int32_dequantized(out / "model.int8.tensorrt.onnx")

    # nothing changed: nothing runs, and the ranges are not computed again
    r = built.build()
    assert r.code == 0 and r.ran() == []

    # a tolerance of int8 parity touches parity only: calibration and quantization stay cached
    built.write("recipes/r.yaml", recipe() + "tolerances: {int8: {min_cosine: 0.98}}\n")
    r = built.build()
    assert r.ran() == ["r:parity[int8]"]


def test_artifacts_are_byte_identical_across_processes(built, tmp_path):
    """The build's calib.json and Q/DQ models, recomputed in this process, match byte for byte."""
    if not (built.root / "out" / "r" / "calib.json").exists():
        assert built.build().code == 0
    out = built.root / "out" / "r"
    again = tmp_path / "again"
    shutil.copytree(built.root, again, ignore=shutil.ignore_patterns("out", "__pycache__"))
    steps = steps_for(again, (built.root / "recipes" / "r.yaml").read_text())
    model = out / "model.sim.onnx"
    assert run_on(steps, "calibrate", model)["ok"]
    assert steps.out("calibrate", "ranges").read_bytes() == (out / "calib.json").read_bytes()
    for flavour, name in (("onnxruntime", "model.int8.onnx"), ("tensorrt", "model.int8.tensorrt.onnx")):
        answer = run_on(steps, f"quantize[{flavour}]", model, steps.out("calibrate", "ranges"))
        assert answer["ok"], answer.get("error")
        assert steps.out(f"quantize[{flavour}]", "model").read_bytes() == (out / name).read_bytes(), flavour


def test_npy_file_of_the_wrong_shape_or_dtype_fails_naming_the_field_and_files(tmp_path):
    ws = Workspace(workspace(tmp_path))
    calib = tmp_path / "data" / "calib"
    calib.mkdir(parents=True)
    np.save(calib / "a.npy", np.zeros((2, 3, 16, 16), np.float32))
    np.save(calib / "b.npy", np.zeros((2, 4, 16, 16), np.float32))  # 4 channels
    np.save(calib / "c.npy", np.zeros((1, 3, 16, 16)))  # float64
    ws.write("recipes/r.yaml", recipe(data="{kind: npy, path: 'data/calib/*.npy'}"))
    r = ws.build()
    assert r.code == 3
    failed = next(s for s in r.json["steps"] if s["id"] == "r:calibrate")
    assert failed["state"] == "failed"
    message = failed["message"]
    assert message.startswith("recipes/r.yaml:9:")
    assert "calibration.data.path: calibration data that does not fit the model's inputs" in message
    assert ("data/calib/b.npy: input 'x': expected float32 [batch 1..4, 3, side 8..32, side 8..32], "
            "found float32 [2, 4, 16, 16]") in message
    assert "data/calib/c.npy: input 'x': expected float32" in message and "found float64 [1, 3, 16, 16]" in message
    assert "a.npy" not in message
    assert "hint: " in message
    assert "Traceback" not in message and "bug" not in message


# -- the steps, run as a worker would --------------------------------------------------


def test_npy_samples_may_vary_within_dims_and_samples_caps_the_files(tmp_path):
    calib = tmp_path / "data"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i, (batch, side) in enumerate([(1, 8), (4, 32), (2, 16), (2, 16), (2, 16)]):
        np.save(calib / f"s{i}.npy", rng.uniform(0, 1, (batch, 3, side, side)).astype(np.float32))
    steps = steps_for(tmp_path, recipe(data="{kind: npy, path: 'data/*.npy'}", samples=3))
    assert steps.run("export")["ok"] and steps.run("simplify")["ok"]
    answer = steps.run("calibrate")
    assert answer["ok"], answer.get("error")
    doc = calib_of(steps)
    assert doc["random_data"] is False and doc["samples"] == 3
    assert doc["data"]["path_matches"] == 5
    assert [f["name"] for f in doc["data"]["files"]] == ["data/s0.npy", "data/s1.npy", "data/s2.npy"]
    assert doc["data"]["files"][1]["shapes"] == {"x": [4, 3, 32, 32]}
    assert WARNING not in answer["summary"]


def test_npy_for_a_model_with_two_inputs_asks_for_npz(fp32, tmp_path):
    text = recipe(data="{kind: npy, path: 'd/*.npy'}").replace(
        "inputs: [{name: x,", "inputs: [{name: extra, dtype: float32, shape: [batch, 2]}, {name: x,")
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "one.npy", np.zeros((2, 3, 16, 16), np.float32))
    steps = steps_for(tmp_path, text)
    answer = run_on(steps, "calibrate", model_of(fp32))  # the data is judged before the model runs
    assert not answer["ok"] and answer["field"] == "calibration.data.path"
    assert "d/one.npy: a .npy file holds one array, the model has 2 inputs (extra, x)" in answer["error"]


def _write_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_images_folder_with_a_file_that_is_not_an_image_names_it(fp32, tmp_path):
    pytest.importorskip("PIL")
    _write_images(tmp_path / "photos", 2)
    (tmp_path / "photos" / "notes.txt").write_text("not a picture\n")
    steps = steps_for(tmp_path, recipe(data="{kind: images, path: photos, preset: imagenet}"))
    answer = run_on(steps, "calibrate", model_of(fp32))
    assert not answer["ok"]
    assert answer["error"] == "not an image: photos/notes.txt"
    assert answer["field"] == "calibration.data.path"
    assert "only images" in answer["hint"]
    assert "traceback" not in answer


def test_images_fill_the_opt_batch_and_are_not_flagged_as_random(fp32, tmp_path):
    pytest.importorskip("PIL")
    _write_images(tmp_path / "photos", 3)
    steps = steps_for(tmp_path, recipe(data="{kind: images, path: photos}"))
    answer = run_on(steps, "calibrate", model_of(fp32))
    assert answer["ok"], answer.get("error")
    assert WARNING not in answer["summary"]
    assert "from 4 batches of 3 images (imagenet preset), then 2 of seeded views of them" in answer["summary"]
    doc = calib_of(steps)
    # [img0, img1], then [img2] (batch min is 1), then views up to `samples` (4): [img0, img1], [img2, img0]
    assert doc["random_data"] is False and doc["samples"] == 4 and doc["data"]["view_batches"] == 2
    assert doc["data"]["preset"] == "imagenet" and doc["data"]["shape"] == [2, 3, 16, 16]
    assert [f["name"] for f in doc["data"]["files"]] == ["photos/img0.png", "photos/img1.png", "photos/img2.png"]
    assert doc["data"]["files"][0]["size"] == [30, 20]
    # ImageNet normalisation: pixel values in [0, 1] become roughly [-2.1, 2.6]
    assert -2.2 < doc["tensors"]["x"]["min"] < -1.5 and 1.8 < doc["tensors"]["x"]["max"] < 2.7


def test_image_views_come_at_the_opt_min_and_max_sizes(fp32, tmp_path, monkeypatch):
    """Views at every size the model runs at: ranges from one size do not bound another's activations."""
    pytest.importorskip("PIL")
    import buildsys.steps.calibrate as calibrate

    seen = []
    real = calibrate.collect_ranges

    def spy(model, method, batches, threads, tmp):
        seen.extend(list(b()["x"].shape) for b in batches)
        return real(model, method, batches, threads, tmp)

    monkeypatch.setattr(calibrate, "collect_ranges", spy)
    _write_images(tmp_path / "photos", 2)
    steps = steps_for(tmp_path, recipe(data="{kind: images, path: photos}", samples=5))
    answer = run_on(steps, "calibrate", model_of(fp32))
    assert answer["ok"], answer.get("error")
    # one batch of centre crops (two images) at the opt size, then views at opt (16), min (8) and max (32) in turn
    assert seen == [[2, 3, 16, 16], [2, 3, 16, 16], [2, 3, 8, 8], [2, 3, 32, 32], [2, 3, 16, 16]]
    assert calib_of(steps)["data"]["view_sizes"] == [[16, 16], [8, 8], [32, 32]]


def test_random_calibration_is_flagged_in_the_summary(fp32):
    answer = run_on(fp32, "calibrate", model_of(fp32))
    assert answer["ok"]
    assert answer["summary"].endswith(WARNING)
    assert answer["summary"].startswith("minmax ranges of ")


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_give_ranges_inside_the_minmax_ones(fp32, method):
    minmax = calib_of(fp32)["tensors"]
    params = json.loads(json.dumps(fp32.steps["calibrate"].params))
    params["calibration"]["method"] = method
    job = fp32.job("calibrate", params)
    job["scratch"] = str(fp32.ws / "tmp" / method)
    answer = run_job(job)
    assert answer["ok"], answer.get("error")
    doc = json.loads((Path(job["scratch"]) / "calib.json").read_text())
    assert doc["method"] == method and set(doc["tensors"]) == set(minmax)
    for name, r in doc["tensors"].items():
        assert minmax[name]["min"] - 1e-6 <= r["min"] <= r["max"] <= minmax[name]["max"] + 1e-6, name
    assert any(r != minmax[n] for n, r in doc["tensors"].items())


def test_a_qat_model_skips_calibration_and_is_copied_unchanged(fp32, tmp_path):
    # A model that already carries Q/DQ nodes: the int8 model of the fp32 one will do.
    assert fp32.run("quantize[tensorrt]")["ok"]
    qat = tmp_path / "qat.onnx"
    shutil.copyfile(fp32.out("quantize[tensorrt]", "model"), qat)
    steps = steps_for(tmp_path, recipe())
    answer = run_on(steps, "calibrate", qat)
    assert answer["ok"], answer.get("error")
    assert "quantization-aware trained (Q/DQ from the model)" in answer["summary"]
    assert "calibration skipped" in answer["summary"]
    doc = calib_of(steps)
    assert doc["qat"] is True and doc["tensors"] == {} and doc["qdq_nodes"] > 0
    for flavour in ("onnxruntime", "tensorrt"):
        answer = run_on(steps, f"quantize[{flavour}]", qat, steps.out("calibrate", "ranges"))
        assert answer["ok"], answer.get("error")
        assert "copied unchanged" in answer["summary"]
        assert steps.out(f"quantize[{flavour}]", "model").read_bytes() == qat.read_bytes()


def test_quantize_runs_no_model_and_says_what_it_made(fp32, monkeypatch):
    import onnxruntime as ort

    def no_session(*args, **kwargs):
        raise AssertionError("quantize opened an ONNX Runtime session")

    monkeypatch.setattr(ort, "InferenceSession", no_session)
    answer = fp32.run("quantize[onnxruntime]")
    assert answer["ok"], answer.get("error")
    from buildsys.core.toolchain import cpu_class

    # auto: the class of this machine's CPU, 8-bit weights with VNNI, 7-bit without
    if cpu_class() == "vnni":
        assert answer["summary"].startswith("int8 for VNNI CPUs (8-bit weights): ")
        assert "QUInt8 activations, QInt8 per-channel weights" in answer["summary"]
    else:
        assert answer["summary"].startswith("int8 for AVX2 CPUs (7-bit weights): ")
        assert "QUInt8 activations, 7-bit QInt8 per-channel weights" in answer["summary"]
    assert answer["summary"].endswith("from minmax ranges of random data")


def test_threads_setting_reaches_the_calibrator(fp32, monkeypatch):
    """The calibrator's session runs with the step's threads and without spinning, like every step."""
    import onnxruntime as ort

    seen = []
    real = ort.InferenceSession

    def spy(*args, **kwargs):
        so = args[1] if len(args) > 1 else kwargs.get("sess_options")
        if str(args[0]).endswith("augmented.onnx") and so is not None:
            try:
                spinning = so.get_session_config_entry("session.intra_op.allow_spinning")
            except RuntimeError:  # not set: ORT's default, spinning
                spinning = None
            seen.append((so.intra_op_num_threads, spinning))
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    job = fp32.job("calibrate")
    job["threads"] = 2
    job["scratch"] = str(fp32.ws / "tmp" / "threads")
    assert run_job(job)["ok"]
    assert seen[-1] == (2, "0")  # the session that runs the batches is the last one made


def test_the_cpu_class_follows_the_instruction_set():
    from buildsys.core.toolchain import cpu_class
    from buildsys.steps.quantize import flavour_for

    assert cpu_class("avx avx2 fma avx512f avx512_vnni") == "vnni"
    assert cpu_class("avx avx2 avx_vnni") == "vnni"
    assert cpu_class("avx2 amx_tile amx_int8") == "vnni"
    assert cpu_class("avx avx2 fma f16c") == "avx2"
    assert flavour_for("onnxruntime", "vnni").reduce_range is False
    assert flavour_for("onnxruntime", "avx2").reduce_range is True
    assert flavour_for("tensorrt", None).reduce_range is False
