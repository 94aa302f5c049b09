"""Entry point of a worker process: a template that forks one child per step.

The worker is a zygote (Android's name for the same trick; `multiprocessing`'s
forkserver with preload does it too). It imports the heavy libraries a step
declares among its tools (torch, onnx, onnxruntime, ...) and nothing else: it
never runs a step, never loads a model and never starts a thread of its own.
For each step it forks a child, which runs the step and exits. So every step
starts from the same pristine interpreter state, whatever an earlier step of
another recipe did to its own (torch's default dtype, `sys.modules`, the global
RNG, `torch.backends` flags, `os.environ`, a monkeypatched library), and still
finds torch already imported.
"""
from __future__ import annotations

import gc
import importlib
import os
import pickle
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

# Tools (distribution names, as steps list them in TOOLS) whose modules are safe to
# import in the template ahead of the fork: they start no thread that could hold a
# lock across fork(2) (onnxruntime's one idle thread waits on a condition variable
# without a lock held) and touch no GPU. TensorRT and CUDA are left to the child:
# a CUDA context does not survive fork.
WARM_MODULES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "onnxsim": ("onnxsim",),
    "torch": ("torch",),
}


def warm_modules(tools: tuple[str, ...]) -> list[str]:
    """The modules a template may import before forking a step that uses `tools`."""
    return [m for tool in tools for m in WARM_MODULES.get(tool, ())]


_learnable: frozenset[str] | None = None


def learnable() -> frozenset[str]:
    """Top-level packages whose modules a child imported the template may import for later children.

    The standard library, buildsys, and the distributions buildsys requires, with
    theirs, transitively: the pinned toolchain, whose modules import the same way
    in any process. Never the workspace's modules nor a library only a model uses:
    importing those may run code that changes the interpreter for every later step.
    """
    global _learnable
    if _learnable is None:
        import re
        from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

        def norm(name: str) -> str:
            return re.sub(r"[-_.]+", "-", name).lower()

        seen, todo = set(), ["buildsys"]
        while todo:
            name = norm(todo.pop())
            if name in seen:
                continue
            seen.add(name)
            try:
                requires = distribution(name).requires or []
            except PackageNotFoundError:
                continue
            todo += [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in requires if "extra ==" not in r]
        tops = {top for top, dists in packages_distributions().items() if any(norm(d) in seen for d in dists)}
        _learnable = frozenset(tops | set(sys.stdlib_module_names) | {"buildsys"})
    return _learnable


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
    import buildsys.steps.base  # noqa: F401  (what every child runs)

    # Most builds need these; importing them while the orchestrator still plans
    # takes their cost off the critical path. Torch waits for a step that uses it.
    _preload(("numpy", "onnxruntime"))
    _warm_onnxruntime()
    _serve(conn, torch_lane=True)
    return 0


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


def _serve(conn: Connection, torch_lane: bool) -> None:
    """Answer jobs from `conn`, each in a fresh child, until told to stop.

    Steps that use torch go to a second template, forked from this one before
    torch is imported there: forking a process that holds torch costs ~15 ms
    and tearing the child down ~25 ms more, which the steps that never touch
    torch (simplify, parity, engines) need not pay.
    """
    children = _Children()
    lane: tuple[int, Connection] | None = None
    while True:
        children.prepare()  # fork the next child while the orchestrator commits
        children.reap()
        try:
            job = conn.recv()
        except EOFError:
            job = None
        if job is None:
            children.close()
            if lane is not None:
                lane[1].close()
            return
        if torch_lane and "torch" in job.get("preload", ()):
            if lane is None:
                # What the step needs besides torch is imported here first, so that this
                # template and the torch one share it rather than import it twice.
                _preload(m for m in job["preload"] if m.partition(".")[0] != "torch")
                lane = _start_torch_lane()
            answer = _forward(lane, job)
            if answer is None:
                lane = None
                answer = {"ok": False, "seconds": 0.0,
                          "error": "the worker's torch template died; the step did not run",
                          "hint": "run the build again; if it recurs, the log of the step before may say why"}
        else:
            answer = children.run(job)
        imported = answer.pop("imported", ())
        conn.send(answer)
        # Ready for the next child, off the step's critical path.
        _preload(m for m in imported if m.partition(".")[0] in learnable())


def _start_torch_lane() -> tuple[int, Connection]:
    import socket

    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            _close_except({theirs.fileno()})
            lane = Connection(theirs.detach())
            _preload(WARM_MODULES["torch"])
            _serve(lane, torch_lane=False)
        finally:
            os._exit(0)
    theirs.close()
    return pid, Connection(mine.detach())


def _forward(lane: tuple[int, Connection], job: dict[str, Any]) -> dict[str, Any] | None:
    pid, conn = lane
    try:
        conn.send(job)
        return conn.recv()
    except (EOFError, OSError):
        conn.close()
        os.waitpid(pid, 0)
        return None


def _preload(modules) -> None:
    for name in modules:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the child imports it again and reports the failure as the step's
                pass


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
        self.spare: tuple[int, int, int, frozenset[str]] | None = None  # pid, job pipe, answer pipe, modules
        self.done: list[int] = []

    def prepare(self) -> None:
        if self.spare is None:
            self.spare = self._fork()

    def _fork(self) -> tuple[int, int, int, frozenset[str]]:
        # The template's objects go to the collector's permanent generation: a collection
        # in the child then leaves their pages alone instead of copying them.
        gc.freeze()
        job_r, job_w = os.pipe()
        ans_r, ans_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _close_except({job_r, ans_w})
            _child(job_r, ans_w, set(sys.modules))
        os.close(job_r)
        os.close(ans_w)
        return pid, job_w, ans_r, frozenset(sys.modules)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from buildsys.workers import death_answer

        started = time.monotonic()
        wanted = job.get("preload", ())
        if self.spare is not None and not set(wanted) <= self.spare[3]:
            self._discard()  # forked before these modules were imported here
        _preload(wanted)
        self.prepare()
        pid, job_w, ans_r, _ = self.spare
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
        return death_answer(os.waitstatus_to_exitcode(status), job, started)

    def reap(self, block: bool = False) -> None:
        """Collect the exit of children that answered (without waiting, unless `block`)."""
        for pid in list(self.done):
            if os.waitpid(pid, 0 if block else os.WNOHANG)[0]:
                self.done.remove(pid)

    def _discard(self) -> None:
        pid, job_w, ans_r, _ = self.spare
        self.spare = None
        os.close(job_w)  # the waiting child reads an empty job and leaves
        os.close(ans_r)
        os.waitpid(pid, 0)

    def close(self) -> None:
        if self.spare is not None:
            self._discard()
        self.reap(block=True)


def _child(job_r: int, ans_w: int, had: set[str]) -> None:
    """A forked child: wait for one job, run it, answer with the modules it imported, leave."""
    code = 0
    try:
        with os.fdopen(job_r, "rb") as jobs:
            data = jobs.read()
        if not data:
            os._exit(0)  # discarded unused
        started = time.monotonic()
        job = pickle.loads(data)
        try:
            from buildsys.steps.base import run_job

            answer = run_job(job)
            workspace = os.path.join(os.path.abspath(job["workspace"]), "")
            answer["imported"] = [m for m, mod in list(sys.modules.items()) if m not in had
                                  and not os.path.abspath(getattr(mod, "__file__", None) or "/").startswith(workspace)]
            answer = pickle.dumps(answer)
        except BaseException:  # noqa: BLE001 - anything here is reported as the step's failure
            text = traceback.format_exc()
            answer = pickle.dumps({"ok": False, "error": text.strip().splitlines()[-1], "traceback": text,
                                   "seconds": time.monotonic() - started})
            code = 1
        with os.fdopen(ans_w, "wb") as out:
            out.write(answer)
    finally:
        os._exit(code)


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
    step's child and its own children (a child interpreter, a tool it runs) with
    the worker. A process rather than a thread, forked before anything heavy is
    imported: a step stuck in native code that holds the GIL would stall a thread,
    and a parent-death signal (prctl) would kill the worker alone and orphan its children.
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
