"""Entry point of a worker process: templates that fork one child per step.

The worker is a zygote (Android's name for the same trick; `multiprocessing`'s
forkserver with preload does it too). For each step it forks a child, which runs
the step and exits. So every step starts from the same pristine interpreter
state, whatever an earlier step of another recipe did to its own (torch's default
dtype, `sys.modules`, the global RNG, `torch.backends` flags, `os.environ`, a
monkeypatched library), and still finds its libraries imported.

A step forks from the template of its *lane* (`Step.lane`): what that template
holds is fixed by the lane and the installed toolchain alone, never by the steps
that ran before, so a child's starting state is the same in a build of one recipe
and in a build of a hundred. The worker process itself is the `ort` lane; a lane's
template is forked from its parent lane's (PARENTS) the first time a step needs
it, and then imports what its parent lacks and runs its fixed warm-up.

The `resident` lane is not a template: it is one long-lived process per worker,
forked from the `torch` template, in which steps that never run project code
(`Step.lane` says which: simplify, parity, the ONNX Runtime CPU engine, check,
calibrate, quantize, ...) run one after another, the way a persistent worker ran
every step before templates. Those steps import nothing of the workspace and
change no interpreter state (tests/e2e/test_resident.py checks every one of them),
so what one of them did cannot reach the next; they save the fork, the copy-on-
write faults and the first-use set-up of onnxsim and ONNX Runtime a child pays.
It is never forked, so it may start threads; if it dies, the step it ran is
reported like a crashed child and the next such step starts a new one.

The GPU: the worker starts with it hidden (buildsys.core.gpu.hidden), so no template
and no CPU step can reach it, and a template that initialised CUDA all the same
is refused after its warm-up (cuda_refusal). The child of a GPU step (DEVICE
"gpu") gets the build's CUDA_VISIBLE_DEVICES back before the step runs and so
initialises CUDA itself.
"""
from __future__ import annotations

import gc
import importlib
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

# What each lane's template imports. None of these modules starts a thread that could
# hold a lock across fork(2) (onnxruntime's one idle thread waits on a condition
# variable without a lock held) or touches a GPU: TensorRT and CUDA are left to the
# child, because a CUDA context does not survive fork.
LANES: dict[str, tuple[str, ...]] = {
    # parity and the ONNX Runtime engines
    "ort": ("numpy", "onnxruntime"),
    # steps that read and write ONNX: simplify, calibrate, quantize, check, TensorRT
    "onnx": ("numpy", "onnxruntime", "onnx", "onnx.shape_inference", "onnxsim", "onnxoptimizer",
             "onnxruntime.quantization"),
    # steps that run PyTorch: reference, the TorchScript exporter and engine
    "torch": ("numpy", "onnxruntime", "onnx", "onnx.shape_inference", "torch", "torch.onnx"),
    # the dynamo exporter: its modules, and one export of a fixed model (see _warm_dynamo)
    "dynamo": ("numpy", "onnxruntime", "onnx", "onnx.shape_inference", "torch", "torch.onnx", "torch.export",
               "onnxscript"),
    # the long-lived processes of the steps that run no project code (not templates): everything
    # those steps import, so that none of them changes `sys.modules` when it runs. Parity and the
    # ONNX Runtime engine need ONNX Runtime alone: their process holds no torch, so a build that
    # re-runs only them (a tolerance changed) does not wait for torch to be imported.
    "resident-ort": ("numpy", "numpy.ma", "numpy.random", "onnxruntime", "encodings.cp437", "zipfile"),
    "resident": ("numpy", "numpy.ma", "numpy.random", "onnxruntime", "onnx", "onnx.shape_inference", "onnxsim",
                 "onnxoptimizer", "onnxruntime.quantization", "onnxruntime.quantization.calibrate",
                 "onnxruntime.quantization.registry", "onnxruntime.transformers.float16",
                 "onnxruntime.transformers.onnx_model", "encodings.cp437", "zipfile", "PIL.Image"),
}
# The lane each template is forked from: a template never runs a step, so what it hands
# down is fixed. Only the torch template imports torch (~1 s of CPU): onnxsim imports it
# too, so the onnx template and the resident process start from the torch template as
# the dynamo one does, rather than importing torch again.
PARENTS: dict[str, str] = {"torch": "ort", "onnx": "torch", "dynamo": "torch", "resident": "torch",
                           "resident-ort": "ort"}
RESIDENT_LANES = ("resident", "resident-ort")


def main() -> int:
    conn = Connection(int(os.environ.pop("BUILDSYS_WORKER_FD")))
    # The orchestrator handles Ctrl-C for the whole build and kills workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _guard(int(os.environ.pop("BUILDSYS_LIFELINE_FD")))
    limit = os.environ.pop("BUILDSYS_MEMORY_LIMIT", None)
    if limit:
        import resource

        # RLIMIT_DATA counts heap and private anonymous mappings (Linux >= 4.7): an
        # allocation beyond it fails inside the step, which reports it, rather than
        # the whole machine swapping or the OOM killer picking a process. Children inherit it.
        resource.setrlimit(resource.RLIMIT_DATA, (int(limit), int(limit)))
    sys.path.insert(0, os.getcwd())
    _import(_own_modules())  # what every child runs
    # Imported while the orchestrator still plans: its cost is off the critical path.
    _import(LANES["ort"])
    _warm_onnxruntime()
    refusal = cuda_refusal("ort")
    if refusal:
        _refuse(conn, refusal)
    else:
        _serve(conn, "ort")
    return 0


def _serve(conn: Connection, lane: str) -> None:
    """Answer jobs from `conn` until told to stop: a job of this lane in a fresh child of
    this template, any other one through the lane below this one on its way (PARENTS)."""
    children = _Children()
    lanes: dict[str, tuple[int, Connection]] = {}
    while True:
        children.prepare()  # fork the next child while the orchestrator commits
        children.reap()
        try:
            job = conn.recv()
        except EOFError:
            job = None
        if job is None:
            children.close()
            for _, lane_conn in lanes.values():
                lane_conn.close()
            return
        wanted = job.get("lane", "ort")
        if wanted == lane:
            conn.send(children.run(job))
            continue
        below = _lane_below(lane, wanted)
        started = time.monotonic()
        if below not in lanes:
            lanes[below] = _start_lane(below)
        answer, code = _forward(lanes[below], job)
        if answer is None:
            del lanes[below]
            answer = _lane_death(wanted, below, code, job, started)
        conn.send(answer)


def _lane_below(lane: str, wanted: str) -> str:
    """The lane forked from `lane` whose descendants include `wanted` (or `wanted` itself)."""
    below = wanted
    while PARENTS.get(below, lane) != lane:
        below = PARENTS[below]
    return below


def _lane_death(wanted: str, below: str, code: int, job: dict[str, Any], started: float) -> dict[str, Any]:
    from buildsys.engine.answer import StepAnswer
    from buildsys.runners.workers import death_answer

    if below == wanted and wanted in RESIDENT_LANES:  # the step itself ran there and took the process with it
        return death_answer(code, job.get("log"), started).to_wire()
    return StepAnswer.failed(f"the worker's {below} template died; the step did not run",
                             hint="run the build again; if it recurs, the log of the step before may say why").to_wire()


def _start_lane(lane: str) -> tuple[int, Connection]:
    """Fork the template of `lane` (or the resident process) from this template."""
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            _close_except({theirs.fileno()})
            lane_conn = Connection(theirs.detach())
            _import(LANES[lane])
            if lane == "torch":
                _warm_torch()
            elif lane == "dynamo":
                _warm_dynamo()
            refusal = cuda_refusal(lane)
            if refusal:
                _refuse(lane_conn, refusal)
            elif lane in RESIDENT_LANES:
                _reside(lane_conn)
            else:
                _serve(lane_conn, lane)
        finally:
            os._exit(0)
    theirs.close()
    return pid, Connection(mine.detach())


def cuda_refusal(lane: str) -> str | None:
    """Why the process of `lane` may serve no step: it initialised CUDA (checked after its warm-up), or None.

    A CUDA context does not survive fork: every child of such a template would
    fail at its first CUDA call ("Cannot re-initialize CUDA in forked subprocess"),
    and on a GPU machine only. Only torch keeps a flag that says so; ONNX Runtime
    and TensorRT create a context only for a session or builder on the GPU, which
    no template makes.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_initialized():
        return None
    return (f"the worker's {lane} template initialised CUDA while it warmed up; a CUDA context does not survive "
            "fork, so no step is run from it")


def _jobs(conn: Connection) -> Iterator[dict[str, Any]]:
    """The jobs sent on `conn`, until it closes or sends None (stop)."""
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        yield job


def _refuse(conn: Connection, refusal: str) -> None:
    """Answer every job with `refusal` until told to stop: the process is not fit to run steps."""
    from buildsys.engine.answer import StepAnswer

    for _ in _jobs(conn):
        conn.send(StepAnswer.failed(refusal, hint="this is a bug in buildsys (no template may touch the GPU); "
                                                  "report it with the versions of torch and onnxruntime").to_wire())


def _reside(conn: Connection) -> None:
    """The resident process: run each job here, one after another, until told to stop.

    A job that ends in anything but an answer from `run_job` (which reports the
    step's own failures) may have left this process in a state nobody checked:
    the process answers with the failure and leaves, and the next job starts a new one.
    """
    import logging

    from buildsys.core import gpu

    gpu.reveal(False)  # no GPU step runs here
    # ONNX Runtime's quantization tools log through the root logger's module functions,
    # which give the root logger a stderr handler the first time: given here, before any
    # step, so that no step leaves it behind. stderr is the running step's log.
    logging.basicConfig()
    for job in _jobs(conn):
        started = time.monotonic()
        try:
            from buildsys.engine.stepjob import run_job

            answer = run_job(job)
        except BaseException:  # noqa: BLE001 - reported as the step's failure, then this process ends
            conn.send(_crash_answer(started))
            return
        conn.send(answer)


def _forward(lane: tuple[int, Connection], job: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """Send `job` down to a lane's process; (its answer, 0), or (None, exit code) if that process died."""
    pid, conn = lane
    try:
        conn.send(job)
        return conn.recv(), 0
    except (EOFError, OSError):
        conn.close()
        _, status = os.waitpid(pid, 0)
        return None, os.waitstatus_to_exitcode(status)


def _own_modules() -> list[str]:
    """buildsys's step modules and the helpers they import: standard library only at their top."""
    from buildsys.steps import KINDS

    helpers = ["buildsys.core.canonical", "buildsys.core.errors", "buildsys.core.gpu", "buildsys.steps.inputs", "buildsys.core.numerics", "buildsys.core.toolchain",
               "buildsys.steps.diagnose", "buildsys.steps.modelload", "buildsys.steps.qat", "buildsys.steps.sessions"]
    return ["buildsys.steps.base", "buildsys.engine.answer", "buildsys.engine.stepjob", *helpers, *sorted({path.partition(":")[0] for path in KINDS.values()})]


def _import(modules) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a step that needs it imports it again and reports the failure
            pass


# A one-node model (Identity on a float[1], opset 13), serialised.
_IDENTITY_ONNX = (b'\x08\x08\x12\x00::\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x04warmZ\x0f\n\x01x\x12\n\n\x08'
                  b'\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r')


def _warm_onnxruntime() -> None:
    """Create ONNX Runtime's environment once, here, rather than in every child (~15 ms each).

    One single-threaded session on a one-node model: the environment it leaves
    behind is the same for every child, and no thread pool is started.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    ort.InferenceSession(_IDENTITY_ONNX, options, providers=["CPUExecutionProvider"])


def _warm_model():
    """A fixed small network touching the common layers (convolution, batch norm, pooling,
    embedding, layer norm, attention, the usual activations, matmul, reshape/cat): its run
    and its export fill the lazy per-operator set-up that a model's first step pays."""
    import torch
    from torch import nn

    class WarmUp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.embed = nn.Embedding(16, 8)
            self.norm = nn.LayerNorm(8)
            self.qkv = nn.Linear(8, 24)
            self.fc = nn.Linear(8, 4)

        def forward(self, image, tokens):
            x = torch.relu(self.bn(self.conv(image)))
            x = nn.functional.adaptive_avg_pool2d(self.pool(x), 1).flatten(1)
            q, k, v = self.qkv(self.norm(self.embed(tokens))).chunk(3, dim=-1)
            t = nn.functional.gelu(nn.functional.scaled_dot_product_attention(q, k, v)).mean(1)
            t = t + nn.functional.silu(x)
            y = torch.cat([self.fc(t), torch.matmul(t.unsqueeze(1), t.unsqueeze(2)).reshape(-1, 1)], dim=1)
            return torch.softmax(y.transpose(0, 1), dim=0)

    return WarmUp().eval(), (torch.zeros(2, 3, 8, 8), torch.zeros(2, 5, dtype=torch.long))


def _warm_torch() -> None:
    """Run the fixed model and export it once with the TorchScript exporter, on one thread.

    What this leaves behind (the exporter's symbolic registry, numpy.random, the
    operators' first-call set-up, the map of installed distributions the steps'
    keys name) depends on nothing but the toolchain. The model is
    built under a forked RNG, so the template's generator state is left as it was,
    and the exporter's global settings are reset by every export that follows.
    """
    import copy
    import io

    import numpy.random  # noqa: F401  (the seeded inputs of reference and export use it)
    import torch

    from buildsys.steps.modelload import provided_by

    provided_by()  # which installed distribution provides which module: read once, here

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            model, args = _warm_model()
            with torch.inference_mode():
                copy.deepcopy(model)(*args)
            with torch.no_grad():
                # the TorchScript exporter writes to a file object too, which torch's stubs leave out
                torch.onnx.export(model, args, io.BytesIO(), dynamo=False, opset_version=18,  # type: ignore[arg-type]
                                  input_names=["image", "tokens"],
                                  dynamic_axes={"image": {0: "batch"}, "tokens": {0: "batch"}})
    except Exception:  # noqa: BLE001 - a cold start for the children, nothing worse
        pass
    finally:
        torch.set_num_threads(threads)


def _warm_dynamo() -> None:
    """One dynamo export of a fixed one-layer model, so that children find its lazy set-up done.

    The exporter imports most of what it needs and builds its operator registry on
    its first call in a process, seconds that every child would otherwise repeat.
    The model is built under a forked RNG (the template's generator state is left
    as it was) on one thread; the progress monitor thread the exporter may start is
    stopped again. Exports in the children give the same bytes as in a fresh process
    (tests/e2e/test_hermetic.py compares them).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(), torch.no_grad():
            model = torch.nn.Sequential(torch.nn.Linear(3, 3)).eval()
            torch.onnx.export(model, (torch.zeros(2, 3),), dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception:  # noqa: BLE001 - a cold start for the children, nothing worse
        pass
    finally:
        torch.set_num_threads(threads)
    tqdm = sys.modules.get("tqdm")
    monitor = getattr(getattr(tqdm, "tqdm", None), "monitor", None)
    if monitor is not None:
        monitor.exit()


class _Children:
    """Pristine children of this process, forked one ahead of need.

    A child is forked while the template is idle and waits for its job on a pipe;
    it runs the step, answers through a second pipe and leaves with os._exit, so no
    atexit handler or finaliser of the step's code runs in, or writes from, the
    template. A child that dies without answering (a segfault, the OOM killer) is
    reported with its signal and the last lines of its log. Children are reaped
    after the answer went out: tearing down a copy of torch takes tens of milliseconds.
    """

    def __init__(self) -> None:
        self.spare: tuple[int, int, int] | None = None  # pid, job pipe, answer pipe
        self.done: list[int] = []

    def prepare(self) -> None:
        if self.spare is not None:
            return
        # The template's objects go to the collector's permanent generation: a collection
        # in the child then leaves their pages alone instead of copying them.
        gc.freeze()
        job_r, job_w = os.pipe()
        ans_r, ans_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _close_except({job_r, ans_w})
            _child(job_r, ans_w)
        os.close(job_r)
        os.close(ans_w)
        self.spare = pid, job_w, ans_r

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from buildsys.runners.workers import death_answer

        started = time.monotonic()
        self.prepare()
        assert self.spare is not None  # prepare() forked one
        pid, job_w, ans_r = self.spare
        self.spare = None
        try:
            with os.fdopen(job_w, "wb") as jobs:
                jobs.write(pickle.dumps(job))
        except BrokenPipeError:
            pass  # the child is gone: reported below
        chunks = []
        with os.fdopen(ans_r, "rb") as answers:
            while chunk := answers.read(1 << 16):
                chunks.append(chunk)
        if chunks:
            try:
                answer = pickle.loads(b"".join(chunks))
            except (pickle.UnpicklingError, EOFError, ValueError):
                pass  # cut short by the child's death: reported below
            else:
                self.done.append(pid)
                return answer
        _, status = os.waitpid(pid, 0)
        return death_answer(os.waitstatus_to_exitcode(status), job.get("log"), started).to_wire()

    def reap(self, block: bool = False) -> None:
        """Collect the exit of children that answered (without waiting, unless `block`)."""
        for pid in list(self.done):
            if os.waitpid(pid, 0 if block else os.WNOHANG)[0]:
                self.done.remove(pid)

    def close(self) -> None:
        if self.spare is not None:
            pid, job_w, ans_r = self.spare
            self.spare = None
            os.close(job_w)  # the waiting child reads an empty job and leaves
            os.close(ans_r)
            os.waitpid(pid, 0)
        self.reap(block=True)


def _crash_answer(started: float) -> dict[str, Any]:
    """The answer for a job that ended in an exception `run_job` let through: its last line, with the traceback."""
    from buildsys.engine.answer import StepAnswer

    text = traceback.format_exc()
    return StepAnswer.failed(text.strip().splitlines()[-1], time.monotonic() - started, traceback=text).to_wire()


def _child(job_r: int, ans_w: int) -> None:
    """A forked child: wait for one job, run it, answer, leave."""
    code = 0
    try:
        with os.fdopen(job_r, "rb") as jobs:
            data = jobs.read()
        if not data:
            os._exit(0)  # not needed after all
        started = time.monotonic()
        job = pickle.loads(data)
        fresh_generators()
        try:
            from buildsys.core import gpu
            from buildsys.engine.stepjob import run_job

            gpu.reveal(job.get("device") == "gpu")  # before the step, and so before anything touches CUDA

            answer = pickle.dumps(run_job(job))
        except BaseException:  # noqa: BLE001 - anything here is reported as the step's failure
            answer = pickle.dumps(_crash_answer(started))
            code = 1
        with os.fdopen(ans_w, "wb") as out:
            out.write(answer)
    finally:
        os._exit(code)


def fresh_generators() -> None:
    """Seed the global random generators a step's code could draw from without seeding them.

    Templates draw from them while they warm up, each lane differently, so module-level
    code that draws when it is imported (a fixed random projection) would get one value
    in export and another in reference, and parity would fail on a sound model. Every
    step starts from the same state instead, whichever lane and template runs it; the
    model factory is seeded again right before it is called (modelload).
    """
    import random

    random.seed(0)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(0)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(0)


def _close_except(keep: set[int]) -> None:
    """Close every descriptor above stderr but `keep` (a child needs only its own pipes)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _guard(lifeline: int) -> None:
    """Fork a sentinel that kills this worker's process group once the build is gone.

    The build holds the only write end of `lifeline`; the kernel closes it however
    the build ends, and the sentinel's read returns. Killing the group takes the
    templates, the step's child and its own children (a child interpreter, a tool it
    runs) with the worker. A process rather than a thread, forked before anything
    heavy is imported: a step stuck in native code that holds the GIL would stall a
    thread, and a parent-death signal (prctl) would kill the worker alone and orphan its children.
    """
    if os.fork():
        os.close(lifeline)
        return
    try:
        # The sentinel must not keep the worker's end of its connection open: the
        # build learns of a worker's death from that connection closing.
        os.closerange(0, lifeline)
        os.closerange(lifeline + 1, os.sysconf("SC_OPEN_MAX"))
        while os.read(lifeline, 512):
            pass
    finally:
        os.killpg(0, signal.SIGKILL)
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
