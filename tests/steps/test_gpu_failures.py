"""The GPU without a GPU: MIG and UUID devices, CUDA failures named with a cause, ONNX Runtime's GPU providers."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from buildsys.core import gpu
from buildsys.steps import engine_onnxruntime as eo
from buildsys.steps import sessions
from tests.steps import RecipeSteps

ROWS = [{"index": "0", "uuid": "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77", "name": "NVIDIA A100-SXM4-40GB",
         "compute_cap": "8.0", "driver": "550.54.15"},
        {"index": "1", "uuid": "GPU-aa11bb22-0000-0000-0000-000000000000", "name": "NVIDIA A100-SXM4-40GB",
         "compute_cap": "8.0", "driver": "550.54.15"}]
LISTING = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 1g.5gb      Device  1: (UUID: MIG-0a1b2c3d-0000-5de3-91c7-45d71c87eb3f)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-aa11bb22-0000-0000-0000-000000000000)
"""


def test_a_mig_instance_is_its_gpu_with_the_profile_in_the_identity():
    migs = gpu.parse_list(LISTING)
    assert migs["MIG-0a1b2c3d-0000-5de3-91c7-45d71c87eb3f"] == {"index": "0", "profile": "1g.5gb"}
    ident = gpu.select(ROWS, "MIG-0a1b2c3d-0000-5de3-91c7-45d71c87eb3f", "12.4", migs)
    assert ident == {"name": "NVIDIA A100-SXM4-40GB", "compute_cap": "8.0", "driver": "550.54.15",
                     "cuda": "12.4", "mig": "1g.5gb"}
    assert gpu.select(ROWS, "MIG-c6d4", "12.4", migs)["mig"] == "3g.20gb"  # a unique prefix, as CUDA takes it
    assert gpu.select(ROWS, "MIG-ffff", "12.4", migs) == {}


def test_the_older_mig_form_names_its_gpu_by_uuid():
    ident = gpu.select(ROWS, "MIG-GPU-aa11bb22-0000-0000-0000-000000000000/1/0", None)
    assert ident["name"] == "NVIDIA A100-SXM4-40GB" and ident["mig"] == "gi/ci 1/0"


def test_gpu_uuids_and_their_unique_prefixes_select_a_gpu_and_an_ambiguous_one_none():
    assert gpu.select(ROWS, "GPU-aa11", "12.4")["name"] == "NVIDIA A100-SXM4-40GB"
    assert gpu.select(ROWS, "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77,1", None)["driver"] == "550.54.15"
    assert gpu.select(ROWS, "GPU-", None) == {}


@pytest.mark.parametrize(("message", "cause"), [
    ("TypeError: pybind11::init(): factory function returned nullptr", "start"),
    ("CUDA Error: 35. To figure out what this means, refer to https://docs.nvidia.com/cuda/", "driver"),
    ("[TRT] [E] 1: [defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime "
     "(CUDA driver version is insufficient for CUDA runtime version)", "driver"),
    ("CUDA failure 100: no CUDA-capable device is detected ; GPU=0", "device"),
    ("[E] 2: [executionContext.cpp] Error Code 2: OutOfMemory (Requested size was 4294967296 bytes.)", "memory"),
    ("CUDA Error: 2. To figure out what this means", "memory"),
    ("Error Code 4: Internal Error (Network has dynamic or shape inputs, but no optimization profile)", None),
])
def test_cuda_failures_are_named_by_their_cause(message, cause):
    assert gpu.failure_cause(message) == cause


def test_a_cuda_start_failure_with_an_old_driver_says_which_driver_is_needed(monkeypatch):
    monkeypatch.setattr(gpu, "gpu", lambda: {"name": "Tesla T4", "compute_cap": "7.5", "driver": "470.82.01",
                                             "cuda": "11.4"})
    err = gpu.failure("TensorRT could not build the engine",
                      TypeError("pybind11::init(): factory function returned nullptr"), needed_cuda=12)
    assert err.message.startswith("TensorRT could not build the engine: the NVIDIA driver is too old for this "
                                  "CUDA runtime (driver 470.82.01 (CUDA 11.4)): TypeError: pybind11::init()")
    assert "525.60.13 or newer (CUDA 12)" in err.hint


def test_cuda_that_did_not_start_is_blamed_on_the_driver_only_when_it_is_older_than_the_cuda_needed(monkeypatch):
    old = {"name": "Tesla T4", "compute_cap": "7.5", "driver": "470.82.01", "cuda": "11.4"}
    monkeypatch.setattr(gpu, "gpu", lambda: old)
    nullptr = TypeError("pybind11::init(): factory function returned nullptr")
    start = ("x: CUDA could not start on Tesla T4: TypeError: pybind11::init(): factory function returned nullptr",
             "run nvidia-smi to check the driver answers; a CUDA runtime on LD_LIBRARY_PATH newer than the driver "
             "supports also stops it (unset LD_LIBRARY_PATH to test)")
    err = gpu.failure("x", nullptr, needed_cuda=12)
    assert (err.message, err.hint) == (
        "x: the NVIDIA driver is too old for this CUDA runtime (driver 470.82.01 (CUDA 11.4)): TypeError: "
        "pybind11::init(): factory function returned nullptr",
        "update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT build for your driver's CUDA")
    err = gpu.failure("x", nullptr, needed_cuda=11)  # the driver runs CUDA 11: something else stopped it
    assert (err.message, err.hint) == start
    err = gpu.failure("x", nullptr)  # the CUDA needed is not known
    assert (err.message, err.hint) == start
    err = gpu.failure("x", RuntimeError("CUDA Error: 2."), needed_cuda=12)  # a cause of its own stays
    assert err.message == "x: out of GPU memory: RuntimeError: CUDA Error: 2."
    monkeypatch.setattr(gpu, "gpu", lambda: {**old, "cuda": "unknown"})  # nvidia-smi did not tell
    assert (gpu.failure("x", nullptr, needed_cuda=12).message, gpu.cuda_shortfall(12, "TensorRT")) == (start[0], None)


def test_out_of_gpu_memory_and_no_device_get_their_hints(monkeypatch):
    monkeypatch.setattr(gpu, "gpu", lambda: {})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    oom = gpu.failure("TensorRT failed at max", RuntimeError("CUDA Error: 2."))
    assert oom.message.startswith("TensorRT failed at max: out of GPU memory") and "workspace" in oom.hint
    none = gpu.failure("x", RuntimeError("no CUDA-capable device is detected"))
    assert "(CUDA_VISIBLE_DEVICES=3)" in none.message and "--gpus" in none.hint
    other = gpu.failure("x", RuntimeError("Error Code 4: Internal Error (bad network)"))
    assert other.message == "x: RuntimeError: Error Code 4: Internal Error (bad network)"


def test_a_visible_device_that_matches_no_gpu_is_named_in_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "NVIDIACTL", tmp_path)
    monkeypatch.setattr(gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu, "gpu", lambda: {})
    monkeypatch.setattr(gpu, "_smi_failure", lambda: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-ffff")
    assert gpu.absent_reason().startswith("CUDA_VISIBLE_DEVICES=MIG-ffff names no GPU that nvidia-smi lists")


# -- ONNX Runtime on the GPU ------------------------------------------------------------

RECIPE = """\
version: 1
model: {{factory: "tm.tiny:tiny", kwargs: {{features: 4}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, 4], data: {{kind: normal, mean: 0.0, std: 1.0}}}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
export: {{opset: 18, exporter: torchscript}}
calibration: {{data: {{kind: normal, mean: 0.0, std: 1.0}}, samples: 4}}
targets:
{targets}
"""


def recipe(tmp_path, *targets: str) -> RecipeSteps:
    return RecipeSteps(tmp_path, RECIPE.format(targets="\n".join(f"  - {t}" for t in targets)))


def test_gpu_targets_resolve_to_provider_steps_on_the_right_models(tmp_path):
    steps = recipe(tmp_path, "{backend: onnxruntime, provider: cuda, precision: fp16}",
                   "{backend: onnxruntime, provider: cuda, precision: fp32}",
                   "{backend: onnxruntime, provider: tensorrt, precision: int8}",
                   "{backend: onnxruntime, provider: tensorrt, precision: fp16}",
                   "{backend: onnxruntime, precision: fp32}").steps
    cuda16, cuda32 = steps["engine[onnxruntime-cuda-fp16]"], steps["engine[onnxruntime-cuda-fp32]"]
    trt8, trt16 = steps["engine[onnxruntime-tensorrt-int8]"], steps["engine[onnxruntime-tensorrt-fp16]"]
    assert cuda16.inputs["model"] == "r:convert[fp16]#model" and cuda16.gates == ("r:parity[fp16]",)
    assert cuda32.inputs["model"] == "r:simplify#model" and cuda32.gates == ("r:parity[fp32]",)
    assert trt8.inputs["model"] == "r:quantize[tensorrt]#model" and trt8.gates == ("r:parity[int8]",)
    assert trt16.inputs["model"] == "r:simplify#model"  # the provider's own fp16 flag on the fp32 model
    assert cuda16.outputs == {"result": "r/parity/onnxruntime-cuda-fp16.json"}
    assert cuda16.kind_path.endswith(":OrtCudaEngine") and trt8.kind_path.endswith(":OrtTensorRTEngine")
    assert steps["engine[onnxruntime-fp32]"].params == {"target": {"backend": "onnxruntime", "precision": "fp32",
                                                                   "workspace": None, "mode": None}}


FAST = {"device_id": "0", "prefer_nhwc": "1", "cudnn_conv_algo_search": "EXHAUSTIVE",
        "cudnn_conv_use_max_workspace": "1"}


def test_the_cuda_provider_options_are_in_the_step_s_key_and_tf32_is_the_recipe_s_choice_off_by_default(tmp_path):
    steps = recipe(tmp_path / "a", "{backend: onnxruntime, provider: cuda, precision: fp32}",
                   "{backend: onnxruntime, provider: cuda, precision: fp16}",
                   "{backend: onnxruntime, provider: tensorrt, precision: fp16}").steps
    for target in ("onnxruntime-cuda-fp32", "onnxruntime-cuda-fp16", "onnxruntime-tensorrt-fp16"):
        assert steps[f"engine[{target}]"].params["provider_options"] == {**FAST, "use_tf32": "0"}, target
    assert "tf32" not in steps["engine[onnxruntime-cuda-fp32]"].params["target"]  # its default keeps keys as they were
    on = recipe(tmp_path / "b", "{backend: onnxruntime, provider: cuda, precision: fp32, tf32: true}").steps[
        "engine[onnxruntime-cuda-fp32]"].params
    assert on["provider_options"] == {**FAST, "use_tf32": "1"} and on["target"]["tf32"] is True


@pytest.mark.parametrize(("target", "found"), [
    ("{backend: onnxruntime, precision: fp32, tf32: true}", "tf32"),
    ("{backend: onnxruntime, provider: tensorrt, precision: fp16, tf32: true}", "tf32"),
    ("{backend: tensorrt, precision: fp32, tf32: true}", "tf32"),
    ("{backend: onnxruntime, provider: cuda, precision: fp32, tf32: 1}", "tf32"),
    ("{backend: onnxruntime, precision: fp32, cpu_nodes: [Shape]}", "cpu_nodes"),
    ("{backend: onnxruntime, provider: cuda, precision: fp32, cpu_nodes: Shape}", "cpu_nodes"),
])
def test_tf32_and_cpu_nodes_belong_to_the_gpu_providers_only(tmp_path, target, found):
    from buildsys.core.errors import RecipeError

    with pytest.raises(RecipeError) as err:
        recipe(tmp_path, target)
    assert f"targets[0].{found}" in err.value.message or (found in err.value.message and "targets" in err.value.message)


class _Session:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


# Where nodes ran on a GPU session, as node_placement reads a profile: the CUDA provider keeps integer shape
# arithmetic on the CPU by design; a Conv on the CPU is a fallback.
PLACED = {"/conv/Conv": {"op": "Conv", "provider": "CUDAExecutionProvider", "float": True},
          "/Shape": {"op": "Shape", "provider": "CPUExecutionProvider", "float": True},
          "/Gather": {"op": "Gather", "provider": "CPUExecutionProvider", "float": False},
          "/head/GridSample": {"op": "GridSample", "provider": "CPUExecutionProvider", "float": True}}


def test_a_partial_cpu_fallback_fails_the_gpu_step_naming_the_nodes(tmp_path):
    from buildsys.core.errors import StepError

    session = _Session(["CUDAExecutionProvider", "CPUExecutionProvider"])
    sessions.refuse_fallback(session, "cuda")  # the provider list alone cannot see it
    with pytest.raises(StepError) as err:
        sessions.refuse_fallback(session, "cuda", PLACED)
    assert err.value.message.startswith("ONNX Runtime ran 2 node(s) on the CPU instead of its cuda provider: "
                                        "/Shape (Shape), /head/GridSample (GridSample)")
    assert "cpu_nodes" in err.value.hint and err.value.field == "targets"
    sessions.refuse_fallback(session, "cuda", PLACED, allowed=("Shape", "/head/GridSample"))  # by op, by name
    record = sessions.placement_record(PLACED, ("GridSample",))
    assert record["nodes"] == {"CUDAExecutionProvider": 1, "CPUExecutionProvider": 3}
    assert {c["node"]: c["why"] for c in record["cpu"]} == {
        "/Shape": "a fallback", "/Gather": "shape arithmetic (integers), kept on the CPU by design",
        "/head/GridSample": "allowed by the target's cpu_nodes"}


def test_node_placement_reads_onnx_runtime_s_own_profile(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="act"), helper.make_node("Shape", ["r"], ["s"], name="size"),
         helper.make_node("Cast", ["s"], ["y"], name="cast", to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    so = sessions.session_options(1)
    so.enable_profiling, so.profile_file_prefix = True, str(tmp_path / "placement")
    so.graph_optimization_level = __import__("onnxruntime").GraphOptimizationLevel.ORT_DISABLE_ALL
    session = sessions.cpu_session(model, 1, so)
    session.run(None, {"x": np.ones((2, 3), np.float32)})
    placement = sessions.node_placement(__import__("pathlib").Path(session.end_profiling()))
    assert placement == {"act": {"op": "Relu", "provider": "CPUExecutionProvider", "float": True},
                         "size": {"op": "Shape", "provider": "CPUExecutionProvider", "float": True},
                         "cast": {"op": "Cast", "provider": "CPUExecutionProvider", "float": True}}


@pytest.mark.parametrize(("target", "found"), [
    ("{backend: onnxruntime, provider: cuda, precision: int8}", "int8"),
    ("{backend: onnxruntime, provider: tensorrt, precision: fp32}", "fp32"),
    ("{backend: onnxruntime, precision: fp16}", "fp16"),
    ("{backend: tensorrt, provider: cuda, precision: fp16}", "provider: not allowed for backend tensorrt"),
])
def test_precisions_a_provider_cannot_run_are_recipe_errors(tmp_path, target, found):
    from buildsys.core.errors import RecipeError

    with pytest.raises(RecipeError) as err:
        recipe(tmp_path, target)
    assert "targets" in err.value.message and found in err.value.message


def test_tensorrt_provider_options_hold_precision_profile_and_the_step_s_cache(tmp_path):
    shapes = {"x": ((1, 4), (4, 4), (8, 4)), "mask": ((1, 16),) * 3}
    opts = sessions.tensorrt_options("int8", shapes, tmp_path / "c", workspace=2**30)
    assert opts["trt_int8_enable"] == "True" and opts["trt_fp16_enable"] == "True"
    assert opts["trt_profile_min_shapes"] == "x:1x4,mask:1x16"
    assert opts["trt_profile_opt_shapes"] == "x:4x4,mask:1x16"
    assert opts["trt_profile_max_shapes"] == "x:8x4,mask:1x16"
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path / "c")
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_max_workspace_size"] == str(2**30)
    fp16 = sessions.tensorrt_options("fp16", shapes, tmp_path / "c")
    assert (fp16["trt_int8_enable"], fp16["trt_fp16_enable"]) == ("False", "True")
    assert "trt_max_workspace_size" not in fp16


def test_the_tensorrt_provider_cache_is_keyed_by_model_tools_gpu_and_target(tmp_path, monkeypatch):
    params = recipe(tmp_path / "ws", "{backend: onnxruntime, provider: tensorrt, precision: fp16}").steps[
        "engine[onnxruntime-tensorrt-fp16]"].params
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"model a")
    b.write_bytes(b"model b")
    monkeypatch.setattr(gpu, "gpu", lambda: {"name": "NVIDIA H100", "compute_cap": "9.0"})
    first = eo.ort_tensorrt_cache(tmp_path, a, params)
    assert first.parent == tmp_path / "out" / ".buildsys" / "onnxruntime-tensorrt" and len(first.name) == 16
    assert eo.ort_tensorrt_cache(tmp_path, a, params) == first
    assert eo.ort_tensorrt_cache(tmp_path, b, params) != first
    monkeypatch.setattr(eo.OrtTensorRTEngine, "TOOLS", ("tensorrt-cu12",))
    from buildsys.core import toolchain

    monkeypatch.setattr(toolchain, "installed", lambda: {"tensorrt-cu12": "10.15.1.29"})
    assert eo.ort_tensorrt_cache(tmp_path, a, params) != first
    monkeypatch.setattr(toolchain, "installed", lambda: {"tensorrt-cu12": "10.16.1.11"})
    other = eo.ort_tensorrt_cache(tmp_path, a, params)
    monkeypatch.setattr(gpu, "gpu", lambda: {"name": "NVIDIA A100", "compute_cap": "8.0"})
    assert eo.ort_tensorrt_cache(tmp_path, a, params) != other


def test_without_onnxruntime_gpu_the_provider_steps_are_unavailable_saying_so(tmp_path, monkeypatch):
    from buildsys.core import toolchain

    monkeypatch.setattr(gpu, "absent_reason", lambda: None)
    monkeypatch.setattr(gpu, "packages_note", lambda: None)
    monkeypatch.setattr(toolchain, "installed", lambda: {"onnxruntime": "1.32.0"})
    reason = eo.OrtCudaEngine.unavailable({})
    assert reason.startswith("ONNX Runtime's CPU wheel is installed; the cuda provider needs onnxruntime-gpu")
    monkeypatch.setattr(gpu, "absent_reason", lambda: "no NVIDIA GPU on this machine (no /dev/nvidiactl)")
    assert eo.OrtTensorRTEngine.unavailable({}) == "no NVIDIA GPU on this machine (no /dev/nvidiactl)"


class FallbackSession:
    """What ONNX Runtime gives when the CUDA provider fails to load: a session on the CPU only."""

    def __init__(self, path, so=None, providers=None):
        self.asked = providers

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def run(self, names, feeds):
        raise AssertionError("a session that fell back to the CPU must not run")


def built(tmp_path, target: str, step: str) -> RecipeSteps:
    steps = recipe(tmp_path, target)
    for name in ("export", "reference", "simplify", "convert[fp16]", "parity[fp16]"):
        if name in steps.steps:
            assert steps.run(name)["ok"], name
    return steps


def test_a_silent_fallback_to_the_cpu_fails_the_step_instead_of_passing_as_cuda(tmp_path, monkeypatch):
    steps = built(tmp_path, "{backend: onnxruntime, provider: cuda, precision: fp16}", "engine[onnxruntime-cuda-fp16]")
    fake = types.SimpleNamespace(InferenceSession=FallbackSession, SessionOptions=_FakeOptions)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    answer = steps.run("engine[onnxruntime-cuda-fp16]")
    assert not answer["ok"]
    assert answer["error"].startswith("ONNX Runtime did not load its cuda provider (CUDAExecutionProvider); the "
                                      "session would run on CPUExecutionProvider")
    assert "missing CUDA, cuDNN or TensorRT library" in answer["hint"]
    assert not steps.out("engine[onnxruntime-cuda-fp16]", "result").exists()


def _cuda_session(asked: list, cpu_ops: tuple[str, ...] = (), disguised: bool = True):
    """A session that reports CUDA and computes on the CPU: it stands in for the GPU, so the step's own logic runs.

    Its profile says the nodes ran on CUDA (`disguised`), but for the op types `cpu_ops`.
    """
    import onnxruntime as real

    class CudaSession(real.InferenceSession):
        def __init__(self, path, so=None, providers=None):
            asked.append(providers)
            super().__init__(path, so, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def end_profiling(self):
            path = super().end_profiling()
            events = json.loads(open(path).read())
            for e in events:
                if disguised and "provider" in e.get("args", {}) and e["args"].get("op_name") not in cpu_ops:
                    e["args"]["provider"] = "CUDAExecutionProvider"
            open(path, "w").write(json.dumps(events))
            return path

    return types.SimpleNamespace(InferenceSession=CudaSession, SessionOptions=real.SessionOptions,
                                 GraphOptimizationLevel=real.GraphOptimizationLevel)


def test_the_provider_step_checks_every_point_with_the_provider_it_asked_for(tmp_path, monkeypatch):
    steps = built(tmp_path, "{backend: onnxruntime, provider: cuda, precision: fp16}", "engine[onnxruntime-cuda-fp16]")
    asked = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _cuda_session(asked))
    answer = steps.run("engine[onnxruntime-cuda-fp16]")
    assert answer["ok"], answer.get("error")
    assert asked == [[("CUDAExecutionProvider", {**FAST, "use_tf32": "0"}), "CPUExecutionProvider"]]
    doc = json.loads(steps.out("engine[onnxruntime-cuda-fp16]", "result").read_text())
    assert doc["passed"] and doc["candidate"] == "model.fp16.onnx" and doc["provider"] == "cuda"
    assert doc["options"] == {**FAST, "use_tf32": "0"}  # what the provider was told, in its report
    assert doc["placement"]["cpu"] == [] and doc["placement"]["nodes"]["CUDAExecutionProvider"] >= 2
    # the corners and the seeded shapes drawn inside the declared ranges
    assert {r["point"] for r in doc["results"]} == {"min", "opt", "max", "random1", "random2"}
    assert answer["verdict"]["summary"].startswith("fp16 on cuda: parity passed at min, opt, max")
    assert "nodes: " in answer["verdict"]["summary"] and " on CUDA" in answer["verdict"]["summary"]


def test_a_session_that_lists_cuda_but_ran_nodes_on_the_cpu_fails_naming_them(tmp_path, monkeypatch):
    target = "{backend: onnxruntime, provider: cuda, precision: fp32}"
    steps = built(tmp_path, target, "engine[onnxruntime-cuda-fp32]")
    monkeypatch.setitem(sys.modules, "onnxruntime", _cuda_session([], disguised=False))  # all of it on the CPU
    answer = steps.run("engine[onnxruntime-cuda-fp32]")
    assert not answer["ok"] and answer["error"].startswith("ONNX Runtime ran ")
    assert "(Gemm)" in answer["error"] and "instead of its cuda provider" in answer["error"]
    monkeypatch.setitem(sys.modules, "onnxruntime", _cuda_session([], cpu_ops=("Gemm",)))  # some of it
    answer = steps.run("engine[onnxruntime-cuda-fp32]")
    assert not answer["ok"], "a partial CPU fallback passed as a cuda result"
    assert answer["error"].startswith("ONNX Runtime ran 1 node(s) on the CPU instead of its cuda provider: "
                                      "/fc2/Gemm (Gemm); ")  # the other Gemm is fused with its activation


def test_nodes_the_recipe_allows_on_the_cpu_pass_and_are_reported(tmp_path, monkeypatch):
    target = "{backend: onnxruntime, provider: cuda, precision: fp32, cpu_nodes: [Gemm]}"
    steps = built(tmp_path, target, "engine[onnxruntime-cuda-fp32]")
    monkeypatch.setitem(sys.modules, "onnxruntime", _cuda_session([], cpu_ops=("Gemm",)))
    answer = steps.run("engine[onnxruntime-cuda-fp32]")
    assert answer["ok"], answer.get("error")
    doc = json.loads(steps.out("engine[onnxruntime-cuda-fp32]", "result").read_text())
    assert doc["placement"]["cpu"] == [{"node": "/fc2/Gemm", "op": "Gemm", "why": "allowed by the target's cpu_nodes"}]


def test_a_gpu_out_of_memory_while_running_is_a_step_failure_with_its_hint(tmp_path, monkeypatch):
    steps = built(tmp_path, "{backend: onnxruntime, provider: cuda, precision: fp32}", "engine[onnxruntime-cuda-fp32]")

    class OomSession(FallbackSession):
        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def run(self, names, feeds):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory ; GPU=0")

    monkeypatch.setitem(sys.modules, "onnxruntime",
                        types.SimpleNamespace(InferenceSession=OomSession, SessionOptions=_FakeOptions))
    answer = steps.run("engine[onnxruntime-cuda-fp32]")
    assert not answer["ok"] and "traceback" not in answer
    assert answer["error"].startswith("ONNX Runtime failed at min: out of GPU memory")


class _FakeOptions:
    enable_profiling = False
    profile_file_prefix = ""

    def add_session_config_entry(self, key, value):
        pass


# -- the fp16 ONNX ----------------------------------------------------------------------


def test_the_fp16_onnx_keeps_float32_inputs_and_outputs_and_passes_its_own_parity_on_the_cpu(tmp_path):
    import onnx

    steps = recipe(tmp_path, "{backend: tensorrt, precision: fp16}")
    for name in ("export", "reference", "simplify"):
        assert steps.run(name)["ok"]
    answer = steps.run("convert[fp16]")
    assert answer["ok"], answer.get("error")
    model = onnx.load(steps.out("convert[fp16]", "model"))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert "initializers in float16" in answer["summary"]
    parity = steps.run("parity[fp16]")
    assert parity["ok"] and parity["verdict"]["passed"], parity["verdict"]
    doc = json.loads(steps.out("parity[fp16]", "result").read_text())
    errors = [m["max_abs"] for r in doc["results"] for m in r["outputs"].values()]
    assert doc["candidate"] == "model.fp16.onnx" and 0 < max(errors) < 1e-2  # float16 rounding shows, within tolerance
    again = recipe(tmp_path / "again", "{backend: tensorrt, precision: fp16}")
    for name in ("export", "simplify", "convert[fp16]"):
        assert again.run(name)["ok"]
    assert again.out("convert[fp16]", "model").read_bytes() == steps.out("convert[fp16]", "model").read_bytes()


# -- every cause, word for word: what a user reads when the GPU fails -----------------------------

_T4 = {"name": "Tesla T4", "compute_cap": "7.5", "driver": "470.82.01", "cuda": "11.4"}


@pytest.mark.parametrize(("ident", "visible", "error", "needed", "message", "hint"), [
    (_T4, None, RuntimeError("CUDA Error: 35."), 12,
     "x: the NVIDIA driver is too old for this CUDA runtime (driver 470.82.01 (CUDA 11.4)): RuntimeError: CUDA Error: 35.",
     "update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT build for your driver's CUDA"),
    ({"name": "Tesla T4", "driver": "470.82.01"}, None, RuntimeError("CUDA Error: 35."), None,
     "x: the NVIDIA driver is too old for this CUDA runtime (driver 470.82.01 (CUDA unknown)): RuntimeError: CUDA "
     "Error: 35.", "update the NVIDIA driver, or install the TensorRT build for your driver's CUDA"),
    ({}, None, RuntimeError("insufficient driver"), 99,
     "x: the NVIDIA driver is too old for this CUDA runtime (the NVIDIA driver): RuntimeError: insufficient driver",
     "update the NVIDIA driver, or install the TensorRT build for your driver's CUDA"),
    ({}, None, RuntimeError("CUDA failure 100: no CUDA-capable device is detected"), None,
     "x: no CUDA device is visible to this process: RuntimeError: CUDA failure 100: no CUDA-capable device is detected",
     "check that nvidia-smi lists the GPU and that CUDA_VISIBLE_DEVICES names it; in a container, start it with the "
     "GPU passed in (docker run --gpus all)"),
    ({}, "", RuntimeError("invalid device ordinal"), None,
     "x: no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES=): RuntimeError: invalid device ordinal",
     "check that nvidia-smi lists the GPU and that CUDA_VISIBLE_DEVICES names it; in a container, start it with the "
     "GPU passed in (docker run --gpus all)"),
    ({}, None, MemoryError("out of memory"), None, "x: out of GPU memory: MemoryError: out of memory",
     "free the GPU (nvidia-smi lists what holds it), lower the target's workspace or the dims' max, or build on a GPU "
     "with more memory"),
    ({}, None, RuntimeError("CUDA error: 46 busy or unavailable"), None,
     "x: the GPU is busy or unavailable (compute mode exclusive, or held by another process): RuntimeError: CUDA "
     "error: 46 busy or unavailable",
     "nvidia-smi -q -d COMPUTE shows the compute mode; wait for the other process or change the mode"),
    (_T4, None, TypeError("factory function returned nullptr"), None,
     "x: CUDA could not start on Tesla T4: TypeError: factory function returned nullptr",
     "run nvidia-smi to check the driver answers; a CUDA runtime on LD_LIBRARY_PATH newer than the driver supports "
     "also stops it (unset LD_LIBRARY_PATH to test)"),
    ({}, None, TypeError("initialization error"), 12,
     "x: CUDA could not start on the GPU: TypeError: initialization error",
     "run nvidia-smi to check the driver answers; a CUDA runtime on LD_LIBRARY_PATH newer than the driver supports "
     "also stops it (unset LD_LIBRARY_PATH to test)"),
    (_T4, None, TypeError("factory function returned nullptr"), 12,
     "x: the NVIDIA driver is too old for this CUDA runtime (driver 470.82.01 (CUDA 11.4)): TypeError: factory "
     "function returned nullptr",
     "update the NVIDIA driver to 525.60.13 or newer (CUDA 12), or install the TensorRT build for your driver's CUDA"),
    ({}, None, RuntimeError("Error Code 4:\n  Internal   Error"), None, "x: RuntimeError: Error Code 4: Internal Error",
     "TensorRT's own messages are in the step's log"),
], ids=["driver", "driver-no-cuda", "driver-no-gpu", "device", "device-visible", "memory", "busy", "start",
        "start-no-gpu", "start-old-driver", "other"])
def test_each_gpu_failure_reads_word_for_word(monkeypatch, ident, visible, error, needed, message, hint):
    monkeypatch.setattr(gpu, "gpu", lambda: dict(ident))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    err = gpu.failure("x", error, needed)
    assert (err.message, err.hint) == (message, hint)


def test_a_long_gpu_failure_is_cut_at_600_characters(monkeypatch):
    monkeypatch.setattr(gpu, "gpu", lambda: {})
    err = gpu.failure("x", RuntimeError("e" * 1000))
    assert err.message == "x: " + ("RuntimeError: " + "e" * 1000)[:600]


@pytest.mark.parametrize(("text", "cause"), [
    ("CUDA runtime error: 803", "driver"), ("cuda failure 804", "driver"), ("forward compatibility was attempted", "driver"),
    ("system has unsupported display driver", "driver"), ("CUDA error 101", "device"), ("cudaErrorMemoryAllocation", "memory"),
    ("could not be allocated", "memory"), ("failed to allocate memory", "memory"), ("CUDA error: 3", "start"),
    ("CUDA error: 999", None), ("error 35 elsewhere", None),
])
def test_more_cuda_failures_are_named_by_their_cause(text, cause):
    assert gpu.failure_cause(text) == cause
