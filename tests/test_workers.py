"""Worker processes and the GPU: no template and no CPU step sees it; a GPU step's child gets it back;
a template whose warm-up initialised CUDA is refused, naming its lane."""
from __future__ import annotations

import json
import os

import pytest

STEPS = '''
import json
import os

from buildsys.steps.base import Step, StepResult


class Seen(Step):
    """Writes what its process was told of the GPU."""
    KIND = "seen"
    TOOLS = ("onnxruntime",)

    def run(self):
        seen = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
                "nvml": os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK", "<unset>"),
                "saved": any(k.startswith("BUILDSYS_SAVED_") for k in os.environ)}
        self.ctx.output("out").write_text(json.dumps(seen))
        return StepResult()


class OnnxSeen(Seen):
    TOOLS = ("onnx",)


class TorchSeen(Seen):
    TOOLS = ("torch",)


class DynamoSeen(Seen):
    @classmethod
    def lane(cls, params):
        return "dynamo"


class ResidentOrtSeen(Seen):
    RESIDENT = True
    TOOLS = ("numpy",)


class ResidentSeen(Seen):
    RESIDENT = True
    TOOLS = ("onnx",)


class GpuSeen(Seen):
    DEVICE = "gpu"


class GpuOnnxSeen(OnnxSeen):
    DEVICE = "gpu"
'''

CPU_STEPS = {"Seen": "ort", "OnnxSeen": "onnx", "TorchSeen": "torch", "DynamoSeen": "dynamo",
             "ResidentOrtSeen": "resident-ort", "ResidentSeen": "resident"}
GPU_STEPS = {"GpuSeen": "ort", "GpuOnnxSeen": "onnx"}


def _job(tmp_path, name: str, device=False):
    """The job of the step class `name`, with the lane the resolver decides from its class."""
    from buildsys.engine.answer import Job
    from buildsys.recipe.resolve import StepSpec, with_facts

    lane = with_facts(StepSpec(f"r:{name}", "r", name, f"gsteps:{name}", {})).lane
    return Job.from_wire({"id": f"r:{name}", "kind_path": f"gsteps:{name}", "params": {}, "workspace": str(tmp_path),
                          "scratch": str(tmp_path / "tmp" / name), "inputs": {}, "artifacts": {}, "files": {},
                          "outputs": {"out": "seen.json"}, "log": str(tmp_path / "logs" / f"{name}.log"),
                          "device": device, "lane": lane})


def _run_all(tmp_path, names: dict[str, str], device) -> dict[str, dict]:
    from buildsys.runners.workers import WorkerPool

    pool = WorkerPool(1, 1, str(tmp_path))
    seen = {}
    try:
        for name, lane in names.items():
            job = _job(tmp_path, name, device)
            assert job.lane == lane
            pool.submit(job, 600)
            (done,) = pool.wait()
            assert done.answer.ok, done.answer.error
            seen[name] = json.loads((tmp_path / "tmp" / name / "seen.json").read_text())
    finally:
        pool.shutdown()
    return seen


@pytest.fixture
def steps(tmp_path, monkeypatch):
    (tmp_path / "gsteps.py").write_text(STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))  # the resolver reads each step's lane from its class
    return tmp_path


def test_every_lane_hides_the_gpu_from_cpu_steps_and_a_gpu_steps_child_gets_the_builds_back(steps, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5a1e")
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    seen = _run_all(steps, {**CPU_STEPS, **GPU_STEPS}, device=False)
    for name in CPU_STEPS:
        # hidden; torch asks NVML rather than start the driver; the build's values are not theirs
        assert seen[name] == {"visible": "", "nvml": "1", "saved": False}, name
    # The same GPU step classes, sent as the scheduler sends them (the class's DEVICE on the job).
    seen = _run_all(steps, GPU_STEPS, device="gpu")
    for name in GPU_STEPS:
        assert seen[name] == {"visible": "GPU-5a1e", "nvml": "<unset>", "saved": False}, name


def test_a_gpu_step_of_a_build_without_cuda_visible_devices_sees_it_unset(steps, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _run_all(steps, {"Seen": "ort"}, device=False)["Seen"]["visible"] == ""
    assert _run_all(steps, {"GpuSeen": "ort"}, device="gpu")["GpuSeen"]["visible"] == "<unset>"


def _serve_one(steps, capfd, lane: str, name: str):
    """Fork the template of `lane` from this process, as a worker does, and send it one job."""
    from buildsys.runners import worker

    with capfd.disabled():  # the child keeps stdout and stderr only: not pytest's capture files
        pid, conn = worker._start_lane(lane)
    try:
        conn.send({**_job(steps, name).to_wire(), "lane": lane, "threads": 1})
        return conn.recv()
    finally:
        conn.send(None)
        conn.close()
        os.waitpid(pid, 0)


def test_a_template_whose_warm_up_initialised_cuda_is_refused_with_its_lane(steps, monkeypatch, capfd):
    import shutil

    import torch

    first = _serve_one(steps, capfd, "torch", "TorchSeen")
    assert first["ok"], first["error"]  # a template that left CUDA alone serves
    shutil.rmtree(steps / "tmp")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    answer = _serve_one(steps, capfd, "torch", "TorchSeen")
    assert not answer["ok"]
    assert answer["error"].startswith("the worker's torch template initialised CUDA while it warmed up")
    assert "bug in buildsys" in answer["hint"]
    assert not (steps / "tmp" / "TorchSeen" / "seen.json").exists()  # the step never ran


def test_the_worker_process_itself_is_checked_as_the_ort_lane(monkeypatch):
    import torch

    from buildsys.runners.worker import cuda_refusal

    assert cuda_refusal("ort") is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert cuda_refusal("ort").startswith("the worker's ort template initialised CUDA")


CUDA_STEPS = '''
import json

from buildsys.steps.base import Step, StepResult


class Cuda(Step):
    """Initialises CUDA through torch, as the dynamo exporter's decomposition does on a GPU machine."""
    KIND = "cuda"
    TOOLS = ("torch",)

    def run(self):
        import torch

        self.ctx.output("out").write_text(json.dumps({"available": torch.cuda.is_available()}))
        if torch.cuda.is_available():
            torch.zeros(1, device="cuda")
        return StepResult()


class GpuCuda(Cuda):
    DEVICE = "gpu"
'''


@pytest.mark.gpu
def test_on_a_gpu_cpu_steps_see_none_and_every_gpu_step_initialises_cuda_in_its_own_child(tmp_path, monkeypatch):
    from buildsys.engine.answer import Job
    from buildsys.runners.workers import WorkerPool

    (tmp_path / "csteps.py").write_text(CUDA_STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = WorkerPool(1, 1, str(tmp_path))
    seen = []
    try:
        for i, (name, device) in enumerate((("Cuda", False), ("GpuCuda", "gpu"), ("GpuCuda", "gpu"), ("Cuda", False))):
            pool.submit(Job.from_wire({"id": f"r:{i}", "kind_path": f"csteps:{name}", "params": {},
                                       "workspace": str(tmp_path), "scratch": str(tmp_path / "tmp" / str(i)),
                                       "inputs": {}, "artifacts": {}, "files": {}, "outputs": {"out": "o.json"},
                                       "log": str(tmp_path / "logs" / f"{i}.log"), "device": device}), 600)
            (done,) = pool.wait()
            assert done.answer.ok, done.answer.error
            seen.append(json.loads((tmp_path / "tmp" / str(i) / "o.json").read_text())["available"])
    finally:
        pool.shutdown()
    assert seen == [False, True, True, False]
