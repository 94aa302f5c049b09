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
    "onnx": ("onnx", "onnx.shape_inference"),
    "onnxruntime": ("onnxruntime",),
    "onnxsim": ("onnxsim",),
    "onnxscript": ("onnxscript",),
    "torch": ("torch", "torch.onnx"),
}


def warm_modules(tools: tuple[str, ...]) -> list[str]:
    """The modules a template may import before forking a step that uses `tools`."""
    return [m for tool in tools for m in WARM_MODULES.get(tool, ())]


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

    while True:
        try:
            job = conn.recv()
        except EOFError:
            return 0
        if job is None:
            return 0
        _preload(job.get("preload", ()))
        conn.send(run_forked(job, conn.fileno()))


def _preload(modules) -> None:
    for name in modules:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the child imports it again and reports the failure as the step's
                pass


def run_forked(job: dict[str, Any], *close_in_child: int) -> dict[str, Any]:
    """Run `job` in a forked child of this process and return its answer.

    The child sends its answer through a pipe and leaves with os._exit, so no
    atexit handler or finaliser of the step's code runs in, or writes from, the
    template. A child that dies without answering (a segfault, the OOM killer)
    is reported with its signal and the last lines of its log.
    """
    from buildsys.workers import death_answer

    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the step, answer, leave
        code = 0
        try:
            os.close(read_end)
            for fd in close_in_child:
                os.close(fd)
            from buildsys.steps.base import run_job

            data = pickle.dumps(run_job(job))
        except BaseException:  # noqa: BLE001 - anything here is reported as the step's failure
            text = traceback.format_exc()
            data = pickle.dumps({"ok": False, "error": text.strip().splitlines()[-1], "traceback": text,
                                 "seconds": time.monotonic() - started})
            code = 1
        try:
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as answers:
        while chunk := answers.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if chunks:
        try:
            return pickle.loads(b"".join(chunks))
        except (pickle.UnpicklingError, EOFError, ValueError):
            pass  # cut short by the child's death: reported below
    return death_answer(os.waitstatus_to_exitcode(status), job, started)


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
