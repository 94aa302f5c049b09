"""The resident process: every step kind that runs there leaves the interpreter as it found it.

Steps that run no project code (Step.RESIDENT) run one after another in one
long-lived process per worker instead of a fresh child each. That is hermetic only
if none of them changes that process's state, so this test takes a fingerprint of
the process (modules, environment, RNGs, warning filters, numpy's error mode, cwd,
umask, logging, ...) just before and just after each such step of a real build
that runs every resident kind, and compares them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.resident_probe import changes, fingerprint
from tests.e2e.test_ingest import write_onnx

RECIPE = """\
version: 1
model: {onnx: models/mlp.onnx}
inputs:
  - name: x
    dtype: float32
    shape: [batch, 4]
    data: {kind: normal, mean: 0.0, std: 1.0}
outputs:
  - name: scores
dims:
  batch: {min: 1, opt: 4, max: 8}
export: {opset: 18}
calibration: {data: {kind: normal, mean: 0.0, std: 1.0}, samples: 8}
quantization: {fallback: auto, max_fp32_nodes: 1}
targets:
  - {backend: onnxruntime, precision: fp32}
  - {backend: onnxruntime, precision: int8}
  - {backend: tensorrt, precision: fp16}
tolerances:
  int8: {min_cosine: 0.9}
"""

# A step that writes the fingerprint of the process it runs in; resident like the steps it watches.
PROBE = (Path(__file__).with_name("resident_probe.py")).read_text()

# Builds the workspace with one worker whose pool probes the resident process around each resident step.
DRIVER = '''
import json, sys, uuid
from pathlib import Path

import buildsys.runners.workers as workers
from buildsys.engine.answer import Job

ws = Path(sys.argv[1])
probes = []


class Probing(workers.WorkerPool):
    PROBES = {"resident-ort": "probe:Fingerprint", "resident": "probe:FingerprintOnnx"}

    def _probe(self, lane):
        scratch = ws / "probes" / uuid.uuid4().hex
        job = Job.from_wire({"id": "probe", "kind_path": self.PROBES[lane], "lane": lane, "params": {}, "workspace": str(ws),
                             "scratch": str(scratch), "inputs": {}, "artifacts": {}, "files": {},
                             "outputs": {"state": "state.json"}, "log": str(scratch) + ".log"})
        super().submit(job, 600)
        done = []
        while not done:
            done = super().wait()
        assert done[0].answer.ok and done[0].job.lane == lane, done[0].answer
        return json.loads((scratch / "state.json").read_text())

    def submit(self, job, timeout):
        lane = job.lane
        self.before = self._probe(lane) if lane in self.PROBES else None
        super().submit(job, timeout)

    def wait(self):
        done = super().wait()
        for f in done:
            lane = f.job.lane
            if lane in self.PROBES and f.answer.ok:
                probes.append({"id": f.job.id, "kind": f.job.kind_path, "lane": lane, "before": self.before,
                               "after": self._probe(lane)})
        return done


workers.WorkerPool = Probing
from buildsys.cli import main

code = main(["-C", str(ws), "build", "-j", "1"])
(ws / "probes.json").write_text(json.dumps(probes))
sys.exit(code)
'''


def _resident_kinds() -> set[str]:
    from buildsys.steps import KINDS, step_class

    return {path for path in KINDS.values() if step_class(path).RESIDENT}


def test_every_resident_step_kind_leaves_the_process_as_it_found_it(workspace):
    write_onnx(workspace.root / "models/mlp.onnx")
    workspace.write("recipes/mlp.yaml", RECIPE)
    workspace.write("probe.py", PROBE)
    workspace.write("driver.py", DRIVER)
    proc = subprocess.run([sys.executable, str(workspace.root / "driver.py"), str(workspace.root)],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    probes = json.loads((workspace.root / "probes.json").read_text())

    assert {p["kind"] for p in probes} == _resident_kinds()
    assert {p["lane"] for p in probes} == {"resident", "resident-ort"}
    assert all("onnxruntime" in p["before"]["sys.modules"] for p in probes)
    # the process of parity and the ONNX Runtime engine holds no torch; the other one does (onnxsim needs it)
    assert not any("torch" in p["before"]["sys.modules"] for p in probes if p["lane"] == "resident-ort")
    changed = {p["id"]: changes(p["before"], p["after"]) for p in probes}
    assert not {k: v for k, v in changed.items() if v}, "steps changed the resident process"


def test_the_fingerprint_sees_a_replaced_library_function_and_each_backend_flag(monkeypatch):
    import numpy as np
    import torch

    fingerprint()  # the first one imports what it reads (numpy.random)
    before = fingerprint()
    assert changes(before, fingerprint()) == {}
    monkeypatch.setattr(np, "mean", lambda *args, **kwargs: 0.0)  # a parity step that "fixes" np.mean
    monkeypatch.setattr(torch.nn.functional, "relu", lambda x, inplace=False: x)
    monkeypatch.setattr(torch.Tensor, "softmax", lambda self, dim: self)
    assert changes(before, fingerprint())["attributes"] == [
        "numpy.mean", "torch.Tensor.softmax", "torch.nn.functional.relu"]
    monkeypatch.undo()
    assert changes(before, fingerprint()) == {}
    flags = {("mkldnn", "enabled"): False, ("cudnn", "deterministic"): True, ("cudnn", "benchmark"): True,
             ("opt_einsum", "enabled"): False}
    for (where, name), value in flags.items():
        monkeypatch.setattr(getattr(torch.backends, where), name, value)
        assert list(changes(before, fingerprint())) == ["torch.backends"], (where, name)
        monkeypatch.undo()
    torch.set_float32_matmul_precision("medium")  # TF32 matmuls (torch.backends.cuda.matmul.allow_tf32 = True)
    try:
        assert list(changes(before, fingerprint())) == ["torch.backends"]
    finally:
        torch.set_float32_matmul_precision("highest")
    assert changes(before, fingerprint()) == {}


STEPS = '''
import os

from buildsys.steps.base import Step, StepResult


class Aborts(Step):
    KIND = "aborts"
    TOOLS = ("numpy",)
    RESIDENT = True

    def run(self):
        print("about to abort", flush=True)
        os.abort()


class Writes(Aborts):
    def run(self):
        (self.ctx.scratch / "out.txt").write_text(str(os.getpid()))
        return StepResult()
'''


def test_a_step_that_kills_the_resident_process_fails_with_its_signal_and_the_next_gets_a_new_one(tmp_path, monkeypatch):
    from buildsys.engine.answer import Job
    from buildsys.runners.workers import WorkerPool

    (tmp_path / "rsteps.py").write_text(STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))

    def job(i: int, cls: str) -> Job:
        return Job.from_wire({"id": f"r:{i}", "kind_path": f"rsteps:{cls}", "lane": "resident-ort", "params": {},
                              "workspace": str(tmp_path),
                              "scratch": str(tmp_path / "tmp" / str(i)), "inputs": {}, "artifacts": {}, "files": {},
                              "outputs": {"out": "out.txt"}, "log": str(tmp_path / "logs" / f"{i}.log")})

    pool = WorkerPool(1, 1, str(tmp_path))
    try:
        answers = []
        for i, cls in enumerate(("Writes", "Aborts", "Writes")):
            pool.submit(job(i, cls), 600)
            (done,) = pool.wait()
            assert done.job.lane == "resident-ort"
            answers.append(done.answer.to_wire())
    finally:
        pool.shutdown()
    first, crashed, after = answers
    assert first["ok"] and after["ok"], (first, after)
    assert not crashed["ok"]
    assert "killed by signal SIGABRT" in crashed["error"] and "about to abort" in crashed["error"]
    pids = [(tmp_path / "tmp" / str(i) / "out.txt").read_text() for i in (0, 2)]
    assert pids[0] != pids[1]  # a new resident process served the step after the crash
