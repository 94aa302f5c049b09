"""engine[tensorrt-*]: recipe → builder settings without a GPU, the GPU's identity, and a real build on one."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from buildsys.core import gpu
from buildsys.core.errors import StepError
from buildsys.engine.stepjob import run_job
from buildsys.recipe.model import Dim, InputSpec
from buildsys.steps import engine_tensorrt as et
from buildsys.steps.engine_tensorrt import TensorRTEngine, builder_settings, profile_shapes, timing_cache_path
from buildsys.steps.params import TensorRTParams, from_slice
from tests.e2e.conftest import Workspace
from tests.steps import FIXTURES, RecipeSteps

IMAGE = """\
version: 1
model: {{factory: "tm.tiny:tiny", kwargs: {{features: 4}}}}
inputs:
  - {{name: image, dtype: float32, shape: [batch, 3, height, width]}}
  - {{name: mask, dtype: int64, shape: [1, 16], data: {{kind: randint, low: 0, high: 2}}}}
outputs: [{{name: scores}}]
dims:
  batch: {{min: 1, opt: 8, max: 32}}
  height: {{min: 224, opt: 224, max: 384}}
  width: {{min: 224, opt: 256, max: 384}}
profiles:
  - {{batch: {{min: 32, opt: 64, max: 128}}}}
  - {{height: {{max: 512}}, width: {{opt: 320, max: 512}}}}
export: {{opset: 18, exporter: torchscript}}
calibration: {{data: {{kind: uniform, low: 0, high: 1}}, samples: 4}}
targets:
  - {{backend: tensorrt, precision: {precision}{workspace}}}
"""

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "driver": "550.54.15", "cuda": "12.4"}
A100 = {"name": "NVIDIA A100-SXM4-40GB", "compute_cap": "8.0", "driver": "550.54.15", "cuda": "12.4"}


def engine_params(tmp_path: Path, precision: str = "fp16", workspace: str = "") -> dict:
    text = IMAGE.format(precision=precision, workspace=f", workspace: {workspace}" if workspace else "")
    steps = RecipeSteps(tmp_path, text)
    return steps.steps[f"engine[tensorrt-{precision}]"].params


def typed(tmp_path: Path, precision: str = "fp16", workspace: str = "") -> TensorRTParams:
    """The engine step's parameters as the step receives them: the resolved slice, typed on arrival."""
    return from_slice(TensorRTEngine.PARAMS, engine_params(tmp_path, precision, workspace))


# -- recipe → builder settings ---------------------------------------------------------


def test_profile_zero_comes_from_dims_and_fixed_sizes_stay_as_written(tmp_path):
    s = builder_settings(typed(tmp_path), tmp_path / "t.cache")
    assert s.profiles[0] == {
        "image": ((1, 3, 224, 224), (8, 3, 224, 256), (32, 3, 384, 384)),
        "mask": ((1, 16), (1, 16), (1, 16)),
    }


def test_each_profiles_entry_overrides_some_dims_and_keeps_the_rest(tmp_path):
    s = builder_settings(typed(tmp_path), tmp_path / "t.cache")
    assert len(s.profiles) == 3
    assert s.profiles[1]["image"] == ((32, 3, 224, 224), (64, 3, 224, 256), (128, 3, 384, 384))
    assert s.profiles[2]["image"] == ((1, 3, 224, 224), (8, 3, 224, 320), (32, 3, 512, 512))
    assert all(p["mask"] == ((1, 16),) * 3 for p in s.profiles)


def test_profile_shapes_of_inputs_with_named_and_fixed_dims():
    inputs = (InputSpec("ids", "int64", ("batch", "seq")), InputSpec("scale", "float32", (1,)))
    profile = {"batch": Dim("batch", 1, 2, 4), "seq": Dim("seq", 8, 128, 512)}
    assert profile_shapes(inputs, profile) == {"ids": ((1, 8), (2, 128), (4, 512)), "scale": ((1,), (1,), (1,))}


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
@pytest.mark.parametrize(("precision", "tf32"), [
    ("fp32", False),  # TF32 off: fp32 tolerances are tighter than its 10-bit mantissa
    ("fp16", True),
    ("int8", True),
])
def test_fp32_fp16_and_int8_build_strongly_typed_on_both_majors_without_precision_flags(tmp_path, version,
                                                                                      precision, tf32):
    s = builder_settings(typed(tmp_path, precision), tmp_path / "t.cache", version)
    assert (s.fp16, s.int8, s.tf32, s.strongly_typed) == (False, False, tf32, True)


def test_best_uses_the_precision_flags_on_tensorrt_10_and_is_refused_on_11(tmp_path):
    s = builder_settings(typed(tmp_path / "a", "best"), tmp_path / "t.cache", "10.16.1.11")
    assert (s.fp16, s.int8, s.tf32, s.strongly_typed) == (True, True, True, False)
    with pytest.raises(StepError, match="strongly typed networks only, and precision best") as err:
        builder_settings(typed(tmp_path / "b", "best"), tmp_path / "t.cache", "11.4.0.106")
    assert err.value.field == "targets" and "fp16" in err.value.hint


def test_fp16_engines_build_from_the_fp16_onnx_gated_by_its_own_cpu_parity(tmp_path):
    steps = RecipeSteps(tmp_path, IMAGE.format(precision="fp16", workspace=""))
    engine = steps.steps["engine[tensorrt-fp16]"]
    convert, parity = steps.steps["convert[fp16]"], steps.steps["parity[fp16]"]
    assert engine.inputs["model"] == f"{convert.id}#model" and engine.gates == (parity.id,)
    assert parity.inputs["model"] == f"{convert.id}#model" and parity.params["precision"] == "fp16"
    assert convert.inputs["model"] == "r:simplify#model" and convert.outputs == {"model": "r/model.fp16.onnx"}
    best = RecipeSteps(tmp_path / "b", IMAGE.format(precision="best", workspace=""))
    assert "convert[fp16]" not in best.steps  # best keeps the fp32 model and TensorRT 10's flags
    assert best.steps["engine[tensorrt-best]"].inputs["model"] == "r:simplify#model"


def test_the_engine_builder_network_is_strongly_typed_through_polygraphy(tmp_path, monkeypatch):
    """The loader chain as Polygraphy receives it (tensorrt itself faked: its enum is all the chain reads)."""
    import types

    fake = types.SimpleNamespace(MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"))
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    s = builder_settings(typed(tmp_path, "int8", "1GiB"), tmp_path / "t.cache", "10.16.1.11")
    loader = et.engine_loader(s, tmp_path / "m.onnx")
    network = loader._network
    assert network.strongly_typed is True
    assert (loader._config.int8, loader._config.fp16, loader._config.tf32) == (False, False, True)
    assert loader._config.memory_pool_limits == {"workspace": 2**30}


def test_workspace_size_becomes_bytes_and_defaults_to_tensorrt_s_own(tmp_path):
    assert builder_settings(typed(tmp_path / "a", workspace="4GiB"), tmp_path / "t").workspace == 4 * 2**30
    assert builder_settings(typed(tmp_path / "b", workspace="512MiB"), tmp_path / "t").workspace == 512 * 2**20
    assert builder_settings(typed(tmp_path / "c"), tmp_path / "t").workspace is None


def test_best_is_judged_by_the_fp16_tolerance(tmp_path):
    params = typed(tmp_path, "best")
    assert set(params.tolerances) == {"fp16"}
    assert et.target_tolerance(params) == params.tolerances["fp16"]


def test_timing_cache_lives_under_out_one_file_per_gpu_and_tensorrt_version(tmp_path):
    h100 = timing_cache_path(tmp_path, H100, "10.16.1.11")
    assert h100.parent == tmp_path / "out" / ".buildsys" / "tensorrt"
    assert h100.name.startswith("timing-") and h100.suffix == ".cache" and len(h100.stem) == len("timing-") + 16
    assert timing_cache_path(tmp_path, dict(H100), "10.16.1.11") == h100
    assert timing_cache_path(tmp_path, A100, "10.16.1.11") != h100
    assert timing_cache_path(tmp_path, {**H100, "driver": "570.86.10"}, "10.16.1.11") != h100
    assert timing_cache_path(tmp_path, H100, "10.15.1.29") != h100
    s = builder_settings(typed(tmp_path), h100)
    assert s.timing_cache == h100


def test_int8_needs_a_qdq_model_and_says_so_before_touching_tensorrt(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    qdq = helper.make_model(helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "g", [x], [y], [scale]))
    onnx.save(plain, tmp_path / "plain.onnx")
    onnx.save(qdq, tmp_path / "qdq.onnx")
    assert et.qdq_nodes(tmp_path / "plain.onnx") == 0
    assert et.qdq_nodes(tmp_path / "qdq.onnx") == 2

    steps = RecipeSteps(tmp_path / "ws", IMAGE.format(precision="int8", workspace=""))
    job = steps.job("engine[tensorrt-int8]")
    job["inputs"]["model"] = str(tmp_path / "plain.onnx")
    answer = run_job(job)
    assert not answer["ok"]
    assert "precision int8 needs an explicitly quantized (Q/DQ) model; plain.onnx has no" in answer["error"]
    assert answer["field"] == "targets" and "implicit calibration" in answer["hint"]


# -- availability -----------------------------------------------------------------------


def test_unavailable_without_a_gpu_names_the_missing_device_file(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "NVIDIACTL", tmp_path / "nvidiactl")
    gpu.gpu.cache_clear()
    try:
        reason = TensorRTEngine.unavailable(engine_params(tmp_path))
        assert reason == f"no NVIDIA GPU on this machine (no {tmp_path / 'nvidiactl'})"
        assert gpu.gpu() == {}
    finally:
        gpu.gpu.cache_clear()


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA GPU")
def test_unavailable_here_says_there_is_no_gpu(tmp_path):
    assert TensorRTEngine.unavailable(engine_params(tmp_path)) == "no NVIDIA GPU on this machine (no /dev/nvidiactl)"


def test_unavailable_without_tensorrt_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "absent_reason", lambda: None)
    monkeypatch.setattr(et.importlib.util, "find_spec", lambda name: None)
    reason = TensorRTEngine.unavailable(engine_params(tmp_path))
    assert reason == ("TensorRT is not installed; its libraries come from NVIDIA's index, not PyPI: "
                      "PIP_EXTRA_INDEX_URL=https://pypi.nvidia.com make GPU=1 "
                      "(or pip install --extra-index-url https://pypi.nvidia.com '.[gpu]')")


def test_unavailable_for_best_on_tensorrt_11_but_not_for_fp16(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "absent_reason", lambda: None)
    monkeypatch.setattr(et, "tensorrt_missing", lambda: None)
    monkeypatch.setattr(et, "installed_tensorrt", lambda: "11.4.0.106")
    reason = TensorRTEngine.unavailable(engine_params(tmp_path / "a", "best"))
    assert reason.startswith("TensorRT 11.4.0.106 builds strongly typed networks only; precision best needs "
                             "TensorRT 10 (its libraries come from NVIDIA's index, not PyPI: PIP_EXTRA_INDEX_URL=")
    assert reason.endswith("), or use fp16 or int8")
    assert TensorRTEngine.unavailable(engine_params(tmp_path / "b", "fp16")) is None


def test_bindings_without_libraries_are_unavailable_with_the_command_that_adds_them(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "absent_reason", lambda: None)
    monkeypatch.setattr(gpu, "packages_note", lambda: None)
    monkeypatch.setattr(et.importlib.util, "find_spec", lambda name: None if name == "tensorrt_libs" else object())
    monkeypatch.setattr(et, "_system_nvinfer", lambda: False)
    monkeypatch.setattr(et, "installed_tensorrt", lambda: "10.16.1.11")
    monkeypatch.setattr(et, "libs_requirement", lambda version: f"tensorrt-cu12-libs=={version}")
    reason = TensorRTEngine.unavailable(engine_params(tmp_path))
    assert reason.startswith("TensorRT's Python bindings are installed but not its libraries")
    assert reason.endswith("pip install --extra-index-url https://pypi.nvidia.com 'tensorrt-cu12-libs==10.16.1.11'")
    monkeypatch.setattr(et, "_system_nvinfer", lambda: True)  # a TensorRT from NVIDIA's packages
    monkeypatch.setattr(et, "needed_cuda", lambda: None)
    assert TensorRTEngine.unavailable(engine_params(tmp_path)) is None


def test_a_note_left_by_make_is_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "absent_reason", lambda: None)
    monkeypatch.setattr(gpu.sys, "prefix", str(tmp_path))
    (tmp_path / gpu.PACKAGES_NOTE).write_text("GPU packages not installed (pip failed): run  make GPU=1\n")
    assert TensorRTEngine.unavailable(engine_params(tmp_path)) == ("GPU packages not installed (pip failed): run "
                                                                   "make GPU=1")


def test_a_driver_older_than_the_pinned_cuda_is_unavailable_naming_the_driver_needed(fake_smi, monkeypatch,
                                                                                     tmp_path):
    (tmp_path / "bin" / "nvidia-smi").write_text(SMI.replace("12.4", "11.4").replace("550.54.15", "470.82.01"))
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(et.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(et, "installed_tensorrt", lambda: "10.16.1.11")
    monkeypatch.setattr(et, "needed_cuda", lambda: 12)
    monkeypatch.setattr(gpu, "packages_note", lambda: None)
    assert TensorRTEngine.unavailable(engine_params(tmp_path / "ws")) == (
        "the NVIDIA driver 470.82.01 supports CUDA 11.4, and TensorRT 10.16.1.11 needs CUDA 12 "
        "(driver 525.60.13 or newer)")


def test_the_cuda_major_comes_from_the_installed_wheels(monkeypatch):
    from buildsys.core import toolchain

    monkeypatch.setattr(toolchain, "installed", lambda: {"numpy": "2", "tensorrt-cu12-bindings": "10.16.1.11"})
    assert et.needed_cuda() == 12
    monkeypatch.setattr(toolchain, "installed", lambda: {"tensorrt-cu13": "11.4.0.106"})
    assert et.needed_cuda() == 13
    monkeypatch.setattr(toolchain, "installed", lambda: {"tensorrt": "10.16.1.11"})
    assert et.needed_cuda() is None


def test_polygraphy_loads_the_cuda_runtime_of_the_wheel_before_the_system_toolkit(tmp_path, monkeypatch):
    """The wheel's folder comes first on the search path Polygraphy's CUDA wrapper is made with."""
    from polygraphy import cuda
    from polygraphy.cuda import cuda as pg_cuda

    wheel = tmp_path / "site" / "nvidia" / "cuda_runtime" / "lib"
    wheel.mkdir(parents=True)
    (wheel / "libcudart.so.12").write_bytes(b"")
    system = tmp_path / "toolkit"
    system.mkdir()
    (system / "libcudart.so.13").write_bytes(b"")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    monkeypatch.setenv("LD_LIBRARY_PATH", str(system))
    seen = []

    def wrapper():
        dirs = pg_cuda._find_cuda_lib_dirs()
        seen.append(pg_cuda.util.find_in_dirs("libcudart.so*", dirs)[0])

    monkeypatch.setattr(cuda, "wrapper", wrapper)
    assert et.pin_cuda_runtime() == wheel
    assert seen == [str(wheel / "libcudart.so.12")]
    assert os.environ["LD_LIBRARY_PATH"] == str(system)  # put back once the wrapper is made


def test_unavailable_imports_neither_tensorrt_nor_polygraphy(tmp_path):
    params = engine_params(tmp_path)
    code = ("import json, sys; from buildsys.steps.engine_tensorrt import TensorRTEngine as T; "
            f"T.unavailable(json.loads({json.dumps(json.dumps(params))})); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'polygraphy', 'onnx', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_step_declares_its_tools_and_a_gpu_bound_result():
    assert {"tensorrt", "polygraphy", "onnx"} <= set(TensorRTEngine.TOOLS)
    assert TensorRTEngine.DEVICE == "gpu"


# -- through the command line -----------------------------------------------------------

# The tiny model's recipe up to its targets; each recipe below adds what it is about.
RECIPE_HEAD = """\
version: 1
model: {factory: "tm.tiny:tiny", kwargs: {features: 4}}
inputs: [{name: x, dtype: float32, shape: [batch, 4], data: {kind: normal, mean: 0.0, std: 1.0}}]
outputs: [{name: scores}]
dims: {batch: {min: 1, opt: 4, max: 8}}
export: {opset: 18, exporter: torchscript}
"""
BOTH = RECIPE_HEAD + """\
targets:
  - {backend: tensorrt, precision: fp16}
  - {backend: torchscript, mode: trace}
"""


def test_cli_build_reports_tensorrt_unavailable_and_require_all_fails(tmp_path):
    import shutil

    ws = Workspace(tmp_path)
    shutil.copytree(FIXTURES, tmp_path / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    ws.write("recipes/tiny.yaml", BOTH)
    params = RecipeSteps(tmp_path / "probe", BOTH, name="tiny").steps["engine[tensorrt-fp16]"].params
    reason = TensorRTEngine.unavailable(params)

    r = ws.build()
    steps = {s["id"]: s for s in r.json["steps"]}
    trt, ts = steps["tiny:engine[tensorrt-fp16]"], steps["tiny:engine[torchscript]"]
    assert ts["state"] == "ran", ts
    assert (tmp_path / "out/tiny/engines/torchscript.pt").is_file()
    assert json.loads((tmp_path / "out/tiny/parity/torchscript.json").read_text())["passed"] is True
    if reason is None:  # a machine that can build engines builds one
        assert trt["state"] == "ran" and r.code == 0, r.stdout + r.stderr
        return
    assert trt["state"] == "unavailable"
    assert trt["reason"] == reason
    assert not (tmp_path / "out/tiny/engines/tensorrt-fp16.plan").exists()
    assert r.code == 0, r.stderr

    r = ws.build("--require-all")
    assert r.code == 3
    assert r.states()["tiny:engine[tensorrt-fp16]"] == "unavailable"
    assert r.states()["tiny:engine[torchscript]"] == "cached"


# -- the GPU's identity -----------------------------------------------------------------

SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*)
    echo "0, GPU-1111aaaa, NVIDIA H100 80GB HBM3, 9.0, 550.54.15"
    echo "1, GPU-2222bbbb, NVIDIA A100-SXM4-40GB, 8.0, 550.54.15" ;;
  -L) echo "GPU 0: NVIDIA H100 80GB HBM3" ;;
  *) echo "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |" ;;
esac
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """A machine whose nvidia-smi reports an H100 and an A100."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    ctl = tmp_path / "nvidiactl"
    ctl.touch()
    monkeypatch.setattr(gpu, "NVIDIACTL", ctl)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    gpu.gpu.cache_clear()
    yield monkeypatch
    gpu.gpu.cache_clear()


def test_gpu_identity_from_nvidia_smi_is_model_capability_driver_and_cuda(fake_smi):
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpu.gpu() == H100
    assert gpu.absent_reason() is None


def test_cuda_visible_devices_picks_the_gpu_by_index_or_uuid(fake_smi):
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert gpu.gpu() == A100
    gpu.gpu.cache_clear()
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "GPU-2222")
    assert gpu.gpu() == A100
    gpu.gpu.cache_clear()
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu.gpu() == {}


def test_unpinned_mixed_gpus_list_the_others_so_the_key_covers_either(fake_smi):
    fake_smi.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu.gpu() == {**H100, "others": "NVIDIA A100-SXM4-40GB (8.0)"}


def test_gpu_is_asked_once_per_process(fake_smi, tmp_path):
    fake_smi.setenv("CUDA_VISIBLE_DEVICES", "0")
    first = gpu.gpu()
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    assert gpu.gpu() == first


def test_a_failing_nvidia_smi_is_a_reason_not_a_crash(fake_smi, tmp_path):
    (tmp_path / "bin" / "nvidia-smi").write_text('#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t '
                                                  'communicate with the NVIDIA driver."\nexit 9\n')
    assert gpu.gpu() == {}
    assert gpu.absent_reason() == ("nvidia-smi lists no usable GPU (nvidia-smi exited with 9: NVIDIA-SMI has failed "
                                   "because it couldn't communicate with the NVIDIA driver.)")


def test_parse_query_skips_lines_that_are_not_gpu_rows():
    text = "0, GPU-a, Tesla T4, 7.5, 535.1\nNo devices were found\n\n"
    assert gpu.parse_query(text) == [{"index": "0", "uuid": "GPU-a", "name": "Tesla T4", "compute_cap": "7.5",
                                      "driver": "535.1"}]


# -- on a GPU ---------------------------------------------------------------------------

TINY = """\
version: 1
model: {{factory: "tm.tiny:tiny", kwargs: {{features: 4}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, 4], data: {{kind: normal, mean: 0.0, std: 1.0}}}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
profiles: [{{batch: {{min: 16, opt: 32, max: 64}}}}]
export: {{opset: 17, exporter: torchscript}}
simplify: false
targets: [{{backend: tensorrt, precision: {precision}, workspace: 256MiB}}]
"""


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_builds_a_real_engine_with_two_profiles_a_timing_cache_and_passing_parity(tmp_path, precision):
    from polygraphy.backend.trt import EngineFromBytes

    steps = RecipeSteps(tmp_path, TINY.format(precision=precision))
    assert steps.run("export")["ok"]
    assert steps.run("reference")["ok"]
    name = f"engine[tensorrt-{precision}]"
    answer = steps.run(name)
    assert answer["ok"], answer.get("error")
    assert answer["verdict"]["passed"], answer["verdict"]["summary"]
    plan = steps.out(name, "engine")
    engine = EngineFromBytes(plan.read_bytes())()
    assert engine.num_optimization_profiles == 2
    result = json.loads(steps.out(name, "result").read_text())
    points = {r["point"] for r in result["results"]}
    assert result["passed"] and points == {"min", "opt", "max", "random1", "random2"}
    assert result["builder"]["fp16"] is (precision == "fp16")
    caches = list((tmp_path / "out" / ".buildsys" / "tensorrt").glob("timing-*.cache"))
    assert len(caches) == 1 and caches[0].stat().st_size > 0
    again = steps.run(name)  # loads the cache it saved
    assert again["ok"] and again["verdict"]["passed"]


# -- CUDA and TensorRT failures become step errors with their cause (Polygraphy and TensorRT faked) ---

FP32 = RECIPE_HEAD + """\
parity: {samples: 1, seed: 0, points: [min, opt, max]}
targets:
  - {backend: tensorrt, precision: fp32}
"""
T4 = {"name": "Tesla T4", "compute_cap": "7.5", "driver": "550.54.15", "cuda": "12.4"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> RecipeSteps:
    """The engine step's inputs, built once: the simplified model and the reference."""
    steps = RecipeSteps(tmp_path_factory.mktemp("trt"), FP32)
    for name in ("export", "reference", "simplify"):
        assert steps.run(name)["ok"], name
    return steps


class FakeEngine:
    def serialize(self):
        return b"not a real plan"


class FakeRunner:
    """Polygraphy's TrtRunner over a fake engine: activate/infer do what the test says."""

    activate_error: BaseException | None = None
    infer_error: BaseException | None = None
    outputs = None  # feeds -> the engine's outputs; None: zeros
    made: list = []  # each runner's (engine, optimization profile), and whether it was deactivated

    def __init__(self, engine, name=None, optimization_profile=None):  # Polygraphy's signature
        self.made.append({"engine": engine, "profile": optimization_profile, "deactivated": False})

    def activate(self):
        if self.activate_error is not None:
            raise self.activate_error

    def get_input_metadata(self):
        from polygraphy.datatype import DataType

        return {"x": types.SimpleNamespace(dtype=DataType.FLOAT32)}

    def infer(self, feeds):
        if self.infer_error is not None:
            raise self.infer_error
        if self.outputs is not None:
            return self.outputs(feeds)
        return {"scores": np.zeros((feeds["x"].shape[0], 2), np.float32)}

    def deactivate(self):
        self.made[-1]["deactivated"] = True


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """TensorRT 10 'installed' for CUDA 12 on a T4; the engine builds unless `build_error` says otherwise."""
    import polygraphy.backend.trt as ptrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.16.1.11"))
    monkeypatch.setattr(gpu, "gpu", lambda: dict(T4))
    monkeypatch.setattr(et, "needed_cuda", lambda: 12)
    monkeypatch.setattr(et, "cuda_runtime_dir", lambda: None)
    faults = types.SimpleNamespace(build=None, loaded=[])

    def loader(settings, model):
        faults.loaded.append((settings, model))

        def build():
            if faults.build is not None:
                raise faults.build
            return FakeEngine()
        return build

    monkeypatch.setattr(et, "engine_loader", loader)
    runner = type("Runner", (FakeRunner,), {"made": []})
    monkeypatch.setattr(ptrt, "TrtRunner", runner)
    faults.runner = runner
    return faults


def _engine(upstream: RecipeSteps, params: dict | None = None) -> dict:
    return upstream.run("engine[tensorrt-fp32]", params)


def test_a_bug_while_building_is_not_reworded_as_a_tensorrt_failure(upstream, fake_tensorrt):
    fake_tensorrt.build = ValueError("a bug in the loader")
    answer = _engine(upstream)
    assert not answer["ok"] and answer["error"] == "ValueError: a bug in the loader" and "traceback" in answer


def test_the_engine_builds_and_its_parity_runs_through_the_faked_runner(upstream, fake_tensorrt):
    answer = _engine(upstream)  # the fake engine answers zeros: the step runs, its parity fails
    assert answer["ok"], answer
    assert not answer["verdict"]["passed"] and answer["verdict"]["summary"].startswith("fp32 (fp32, 1 profile, ")


def test_running_out_of_gpu_memory_at_a_point_is_a_step_error_and_other_failures_fail_parity(upstream, fake_tensorrt):
    fake_tensorrt.runner.infer_error = RuntimeError("CUDA Error: 2. To figure out what this means")
    answer = _engine(upstream)
    assert not answer["ok"] and "traceback" not in answer, answer
    assert answer["error"].startswith("TensorRT failed at min: out of GPU memory: RuntimeError: CUDA Error: 2.")
    assert "lower the target's workspace or the dims' max" in answer["hint"]

    fake_tensorrt.runner.infer_error = RuntimeError("Error Code 3: API Usage Error (shape [9, 4] out of the profile)")
    answer = _engine(upstream)  # the engine's own failure at a point: parity fails, the step does not
    assert answer["ok"] and not answer["verdict"]["passed"]
    assert "min: TensorRT failed: Error Code 3: API Usage Error" in answer["verdict"]["summary"]


def test_a_cuda_runtime_that_does_not_load_is_a_step_error_with_the_driver_needed(upstream, fake_tensorrt, monkeypatch,
                                                                                 tmp_path):
    from polygraphy import cuda

    def refuses():
        raise RuntimeError("CUDA Error: 35. To figure out what this means, refer to the CUDA documentation")

    monkeypatch.setattr(et, "cuda_runtime_dir", lambda: tmp_path)
    monkeypatch.setattr(cuda, "wrapper", refuses)
    answer = _engine(upstream)
    assert not answer["ok"] and "traceback" not in answer, answer
    assert answer["error"] == ("the CUDA runtime could not be loaded: the NVIDIA driver is too old for this CUDA "
                               "runtime (driver 550.54.15 (CUDA 12.4)): RuntimeError: CUDA Error: 35. To figure out what "
                               "this means, refer to the CUDA documentation")
    assert answer["hint"] == ("update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT "
                              "build for your driver's CUDA")


# -- what a user sees of a TensorRT step: its result file, its summary, every error in full (faked) ---

INSTALL_HINT = ("its libraries come from NVIDIA's index, not PyPI: PIP_EXTRA_INDEX_URL=https://pypi.nvidia.com "
                "make GPU=1 (or pip install --extra-index-url https://pypi.nvidia.com '.[gpu]')")


def _params(upstream: RecipeSteps, precision: str = "fp32", profiles: int = 1) -> dict:
    """The fp32 engine step's parameters with another target precision, or the batch profile given twice."""
    params = json.loads(json.dumps(upstream.steps["engine[tensorrt-fp32]"].params))
    params["target"]["precision"] = precision
    params["profiles"] = params["profiles"] * profiles
    return params


def _reference(upstream: RecipeSteps) -> dict[bytes, np.ndarray]:
    """The reference's outputs by the bytes of their input: a faked engine that answers them is exact."""
    from buildsys.steps.reference import read_reference

    manifest, arrays = read_reference(upstream.out("reference", "reference"))
    return {arrays[e["inputs"]["x"]].astype(np.float32).tobytes(): np.array(arrays[e["outputs"]["scores"]])
            for e in manifest}


def _exact(upstream: RecipeSteps, fake_tensorrt, change=lambda scores: scores) -> None:
    table = _reference(upstream)
    fake_tensorrt.runner.outputs = staticmethod(lambda feeds: {"scores": change(table[feeds["x"].tobytes()])})


def _result(upstream: RecipeSteps) -> dict:
    return json.loads(upstream.out("engine[tensorrt-fp32]", "result").read_text())


POINTS = ("min", "opt", "max", "random1", "random2")


def test_an_engine_that_matches_the_reference_passes_and_its_result_says_how_it_was_built(upstream, fake_tensorrt,
                                                                                          capsys):
    _exact(upstream, fake_tensorrt)
    answer = _engine(upstream)
    summary = "fp32 (fp32, 1 profile, 0.0 KiB): parity passed at min, opt, max, random1, random2 (max abs error 0)"
    assert answer["ok"] and answer["verdict"] == {"passed": True, "summary": summary} and answer["summary"] == summary
    assert summary in capsys.readouterr().out.splitlines()  # what the step's log holds
    assert upstream.out("engine[tensorrt-fp32]", "engine").read_bytes() == b"not a real plan"
    text = upstream.out("engine[tensorrt-fp32]", "result").read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=1, sort_keys=True) + "\n"
    assert {k: v for k, v in doc.items() if k != "results"} == {
        "precision": "fp32", "passed": True, "failures": [], "candidate": "tensorrt-fp32.plan",
        "model": "model.sim.onnx", "tensorrt": "10.16.1.11", "summary": summary.split(": ", 1)[1],
        "tolerance": {"atol": 1e-4, "rtol": 1e-3, "min_cosine": None, "min_top1": None, "min_top1_decided": None,
                      "max_scaled_error": None},
        "builder": {"fp16": False, "int8": False, "tf32": False, "strongly_typed": True, "workspace": None,
                    "profiles": 1, "qdq_nodes": 0}}
    rows = doc["results"]
    assert [(r["point"], r["sample"], r["error"]) for r in rows] == [(pt, 0, None) for pt in POINTS]
    assert [r["shapes"]["x"] for r in rows[:3]] == [[1, 4], [4, 4], [8, 4]]
    assert all(r["outputs"]["scores"]["passed"] and r["outputs"]["scores"]["max_abs"] == 0.0 for r in rows)
    (settings, model), = fake_tensorrt.loaded
    cache = timing_cache_path(upstream.ws, T4, "10.16.1.11")
    assert settings == builder_settings(typed_from(upstream), cache, "10.16.1.11") and cache.parent.is_dir()
    assert model == upstream.out("simplify", "model")
    assert fake_tensorrt.runner.made == [{"engine": settings and fake_tensorrt.runner.made[0]["engine"],
                                          "profile": 0, "deactivated": True}]
    assert isinstance(fake_tensorrt.runner.made[0]["engine"], FakeEngine)


def typed_from(upstream: RecipeSteps, params: dict | None = None) -> TensorRTParams:
    return from_slice(TensorRTEngine.PARAMS, params or upstream.steps["engine[tensorrt-fp32]"].params)


@pytest.mark.parametrize(("precision", "profiles", "head", "builder"), [
    ("fp16", 1, "fp16 (tf32, 1 profile, 0.0 KiB)", {"fp16": False, "int8": False, "tf32": True,
                                                    "strongly_typed": True}),
    ("best", 2, "best (fp16+int8+tf32, 2 profiles, 0.0 KiB)", {"fp16": True, "int8": True, "tf32": True,
                                                              "strongly_typed": False}),
])
def test_the_summary_names_the_precision_its_kernels_and_the_profiles(upstream, fake_tensorrt, precision, profiles,
                                                                      head, builder):
    _exact(upstream, fake_tensorrt)
    answer = _engine(upstream, _params(upstream, precision, profiles))
    assert answer["summary"] == f"{head}: parity passed at min, opt, max, random1, random2 (max abs error 0)"
    assert _result(upstream)["builder"] == {**builder, "workspace": None, "profiles": profiles, "qdq_nodes": 0}
    assert _result(upstream)["precision"] == precision


def test_best_on_tensorrt_11_is_refused_by_the_step_too(upstream, fake_tensorrt, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.4.0.106"))
    answer = _engine(upstream, _params(upstream, "best"))
    assert (answer["ok"], answer["error"], answer["field"]) == (
        False, "TensorRT 11 builds strongly typed networks only, and precision best asks for precision flags",
        "targets")
    assert answer["hint"] == f"use precision fp16 (built from an fp16 ONNX) or int8 (from the Q/DQ model), " \
                             f"or install TensorRT 10 ({INSTALL_HINT})"
    assert fake_tensorrt.loaded == []


def _qdq_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["y"])],
        "g", [x], [y], [scale])), path)
    return path


def test_int8_builds_from_a_qdq_model_and_refuses_a_plain_one_in_full(upstream, fake_tensorrt, tmp_path):
    _exact(upstream, fake_tensorrt)
    job = upstream.job("engine[tensorrt-fp32]", _params(upstream, "int8"))
    job["inputs"]["model"] = str(_qdq_model(tmp_path / "qdq.onnx"))
    answer = run_job(job)
    assert answer["ok"] and answer["summary"].startswith("int8 (tf32, 1 profile, 0.0 KiB): parity passed"), answer
    result = json.loads((Path(job["scratch"]) / "tensorrt-fp32.json").read_text())
    assert result["model"] == "qdq.onnx" and result["builder"]["qdq_nodes"] == 2

    answer = _engine(upstream, _params(upstream, "int8"))
    assert (answer["ok"], answer["error"], answer["field"]) == (
        False, "precision int8 needs an explicitly quantized (Q/DQ) model; model.sim.onnx has no "
               "QuantizeLinear/DequantizeLinear node", "targets")
    assert answer["hint"] == ("TensorRT >= 10 deprecated implicit calibration: build the int8 target from the "
                              "quantize[tensorrt] step's model, or give the recipe a QAT model")
    assert len(fake_tensorrt.loaded) == 1  # the plain model never reached TensorRT


def test_a_driver_older_than_tensorrt_s_cuda_stops_the_step_before_it_builds(upstream, fake_tensorrt, monkeypatch):
    monkeypatch.setattr(gpu, "gpu", lambda: {**T4, "driver": "470.82.01", "cuda": "11.4"})
    answer = _engine(upstream)
    assert (answer["ok"], answer["error"], answer["hint"]) == (
        False, "TensorRT cannot run here: the NVIDIA driver 470.82.01 supports CUDA 11.4, and TensorRT 10.16.1.11 "
               "needs CUDA 12 (driver 525.60.13 or newer)",
        "update the NVIDIA driver, or install the TensorRT build for the driver's CUDA")
    assert "traceback" not in answer and fake_tensorrt.loaded == []
    monkeypatch.setattr(et, "needed_cuda", lambda: None)  # a TensorRT whose CUDA is not named: it is tried
    _exact(upstream, fake_tensorrt)
    assert _engine(upstream)["ok"] and len(fake_tensorrt.loaded) == 1


BUILD_FAILURES = [
    (RuntimeError("[E] 2: [executionContext.cpp] Error Code 2: OutOfMemory (Requested size was 4294967296 bytes.)"),
     "TensorRT could not build the engine: out of GPU memory: RuntimeError: [E] 2: [executionContext.cpp] Error Code "
     "2: OutOfMemory (Requested size was 4294967296 bytes.)",
     "free the GPU (nvidia-smi lists what holds it), lower the target's workspace or the dims' max, or build on a GPU "
     "with more memory"),
    (TypeError("pybind11::init(): factory function returned nullptr"),
     "TensorRT could not build the engine: CUDA could not start on Tesla T4: TypeError: pybind11::init(): factory "
     "function returned nullptr",
     "run nvidia-smi to check the driver answers; a CUDA runtime on LD_LIBRARY_PATH newer than the driver supports "
     "also stops it (unset LD_LIBRARY_PATH to test)"),
    (RuntimeError("CUDA Error: 35. To figure out what this means"),
     "TensorRT could not build the engine: the NVIDIA driver is too old for this CUDA runtime (driver 550.54.15 "
     "(CUDA 12.4)): RuntimeError: CUDA Error: 35. To figure out what this means",
     "update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT build for your driver's CUDA"),
    (ValueError("cudaErrorMemoryAllocation in the parser"),  # not TensorRT's kind of error, but CUDA's words
     "TensorRT could not build the engine: out of GPU memory: ValueError: cudaErrorMemoryAllocation in the parser",
     "free the GPU (nvidia-smi lists what holds it), lower the target's workspace or the dims' max, or build on a GPU "
     "with more memory"),
    (RuntimeError("Error Code 4: Internal Error (Network has dynamic inputs,   but no profile)"),
     "TensorRT could not build the engine: RuntimeError: Error Code 4: Internal Error (Network has dynamic inputs, "
     "but no profile)", "TensorRT's own messages are in the step's log"),
    ("polygraphy", "TensorRT could not build the engine: PolygraphyException: Invalid Engine. Please ensure the "
                   "engine was built correctly", "TensorRT's own messages are in the step's log"),
]


@pytest.mark.parametrize(("error", "message", "hint"), BUILD_FAILURES)
def test_a_failed_engine_build_is_a_step_error_with_its_cause_and_hint_in_full(upstream, fake_tensorrt, error,
                                                                                message, hint):
    from polygraphy.exception import PolygraphyException

    fake_tensorrt.build = PolygraphyException("Invalid Engine. Please ensure the engine was built correctly") \
        if error == "polygraphy" else error
    answer = _engine(upstream)
    assert (answer["ok"], answer["error"], answer["hint"]) == (False, message, hint)
    assert "traceback" not in answer and "field" not in answer
    assert not upstream.out("engine[tensorrt-fp32]", "result").exists() or fake_tensorrt.runner.made == []


def test_an_engine_the_gpu_cannot_load_is_a_step_error_in_full(upstream, fake_tensorrt, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fake_tensorrt.runner.activate_error = RuntimeError("CUDA failure 100: no CUDA-capable device is detected ; GPU=1")
    answer = _engine(upstream)
    assert (answer["ok"], answer["error"], answer["hint"]) == (
        False, "TensorRT could not load the engine to check it: no CUDA device is visible to this process "
               "(CUDA_VISIBLE_DEVICES=1): RuntimeError: CUDA failure 100: no CUDA-capable device is detected ; GPU=1",
        "check that nvidia-smi lists the GPU and that CUDA_VISIBLE_DEVICES names it; in a container, start it with "
        "the GPU passed in (docker run --gpus all)")
    monkeypatch.setattr(gpu, "gpu", lambda: {**T4, "cuda": "unknown"})
    fake_tensorrt.runner.activate_error = RuntimeError("CUDA Error: 35.")
    answer = _engine(upstream)  # the driver floor of the CUDA TensorRT needs
    assert answer["error"] == ("TensorRT could not load the engine to check it: the NVIDIA driver is too old for this "
                               "CUDA runtime (driver 550.54.15 (CUDA unknown)): RuntimeError: CUDA Error: 35.")
    assert answer["hint"] == ("update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT "
                              "build for your driver's CUDA")


def test_a_gpu_failure_while_checking_is_a_step_error_naming_the_point(upstream, fake_tensorrt, monkeypatch):
    fake_tensorrt.runner.infer_error = RuntimeError("CUDA Error: 35. To figure out what this means")
    answer = _engine(upstream)
    assert (answer["ok"], answer["error"], answer["hint"]) == (
        False, "TensorRT failed at min: the NVIDIA driver is too old for this CUDA runtime (driver 550.54.15 "
               "(CUDA 12.4)): RuntimeError: CUDA Error: 35. To figure out what this means",
        "update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT build for your driver's CUDA")
    assert fake_tensorrt.runner.made[-1]["deactivated"]  # the runner is let go on the way out


def test_the_engine_s_own_failure_at_every_point_fails_parity_with_its_words(upstream, fake_tensorrt):
    words = "Error Code 3: API Usage Error  (shape\n out of the profile) " + "x" * 900
    fake_tensorrt.runner.infer_error = RuntimeError(words)
    answer = _engine(upstream)
    flat = " ".join(words.split())
    assert answer["ok"] and not answer["verdict"]["passed"]
    result = _result(upstream)
    assert [(r["point"], r["error"], r["outputs"]) for r in result["results"]] == [(pt, flat[:800], {}) for pt in POINTS]
    assert result["failures"] == [f"{pt}: TensorRT failed: {flat[:300]}" for pt in POINTS]
    assert answer["summary"] == ("fp32 (fp32, 1 profile, 0.0 KiB): parity FAILED: "
                                 + " | ".join(result["failures"][:4]))
    assert fake_tensorrt.runner.made[-1]["deactivated"]


def test_an_engine_without_an_output_the_recipe_names_fails_parity_at_every_point(upstream, fake_tensorrt):
    table = _reference(upstream)
    fake_tensorrt.runner.outputs = staticmethod(lambda feeds: {"logits": table[feeds["x"].tobytes()], "aux": 0})
    answer = _engine(upstream)
    assert answer["ok"] and not answer["verdict"]["passed"]
    result = _result(upstream)
    said = "the engine has no output 'scores' (it has ['aux', 'logits'])"
    assert [(r["point"], r["error"], r["outputs"]) for r in result["results"]] == [(pt, said, {}) for pt in POINTS]
    assert result["failures"] == [f"{pt}: {said}" for pt in POINTS]


def test_a_point_outside_the_tolerance_fails_parity_naming_the_point_and_the_output(upstream, fake_tensorrt):
    params = _params(upstream)
    params["tolerances"]["fp32"]["min_cosine"] = 0.999
    _exact(upstream, fake_tensorrt, lambda scores: -scores if scores.shape[0] == 8 else scores)
    answer = _engine(upstream, params)
    result = _result(upstream)
    rows = {r["point"]: r for r in result["results"]}
    why = rows["max"]["outputs"]["scores"]["failures"]
    assert len(why) == 2 and why[1] == "cosine -1.000000 < 0.999"  # values off, and the cosine
    assert [pt for pt in POINTS if not rows[pt]["outputs"]["scores"]["passed"]] == ["max"]
    assert result["failures"] == [f"max scores: {'; '.join(why)}"]
    assert answer["summary"] == f"fp32 (fp32, 1 profile, 0.0 KiB): parity FAILED: max scores: {'; '.join(why)}"


def test_an_engine_that_answers_nan_fails_parity_and_its_result_is_still_written(upstream, fake_tensorrt):
    _exact(upstream, fake_tensorrt, lambda scores: np.full_like(scores, np.nan))
    answer = _engine(upstream)
    assert answer["ok"] and not answer["verdict"]["passed"], answer
    text = upstream.out("engine[tensorrt-fp32]", "result").read_text()
    assert "NaN" in text and len(json.loads(text)["failures"]) == len(POINTS)


def test_tensorrt_whose_libraries_do_not_load_is_a_step_error_saying_how_to_reinstall(upstream, fake_tensorrt,
                                                                                     monkeypatch, tmp_path):
    """`import tensorrt` raises OSError where libnvinfer is missing, ImportError where the bindings are."""
    (tmp_path / "site" / "tensorrt").mkdir(parents=True)
    (tmp_path / "site" / "tensorrt" / "__init__.py").write_text(
        "raise OSError('libnvinfer.so.10: cannot open shared object file: No such file or directory')\n")
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    answer = _engine(upstream)
    assert (answer["ok"], answer["error"], answer["hint"]) == (
        False, "TensorRT cannot be imported: libnvinfer.so.10: cannot open shared object file: No such file or "
               "directory", f"reinstall it: {INSTALL_HINT}")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    answer = _engine(upstream)
    assert answer["error"] == "TensorRT cannot be imported: import of tensorrt halted; None in sys.modules"
    assert answer["hint"] == f"reinstall it: {INSTALL_HINT}" and "traceback" not in answer


def test_rows_of_an_output_parity_unordered_names_may_come_in_any_order(upstream, fake_tensorrt):
    """Detections: the engine may answer the same rows in another order than the reference."""
    _exact(upstream, fake_tensorrt, lambda scores: scores[::-1])
    params = _params(upstream)
    assert not _engine(upstream, params)["verdict"]["passed"]  # rows compared in place
    params["parity"] = {"unordered": ["scores"]}
    answer = _engine(upstream, params)
    assert answer["verdict"]["passed"], answer["summary"]
