"""Worker processes that run steps, and the in-process runner for tests.

A worker is a template process (see buildsys.runners.worker): it imports torch and ONNX
Runtime once and forks a fresh child for every step, so steps start warm (re-
importing torch per step costs more than most steps take) and yet hermetic (no
step sees what another one did to its interpreter). Each worker is its own
process group, so a step that hangs or outlives its timeout is killed together
with anything it started. Each worker also holds the read end of a lifeline pipe
whose only write end is the build's: however the build ends (SIGKILL included),
the pipe closes and the worker's group is killed, so no step outlives its build.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from buildsys.engine.answer import Finished, Job, StepAnswer


@dataclass
class Worker:
    proc: subprocess.Popen
    conn: Connection
    lifeline: int
    job: Job | None = None
    started: float = 0.0
    deadline: float = float("inf")
    served: int = 0


class WorkerPool:
    """Up to `size` worker processes, started on first use and kept for the build (a Runner)."""

    gpu_slots = 1

    def __init__(self, size: int, threads: int, workspace: str, memory_limit: int | None = None):
        self.size = size
        self.threads = threads
        self.workspace = workspace
        self.memory_limit = memory_limit  # bytes of data segment per worker (RLIMIT_DATA), or None
        self.idle: list[Worker] = []
        self.busy: list[Worker] = []

    def _spawn(self) -> Worker:
        parent, child = socket.socketpair()
        lifeline, keep = os.pipe()
        from buildsys.core import gpu

        env = dict(os.environ)
        env.update({
            # No template may see the GPU (a CUDA context does not survive fork) and no CPU step
            # either (its key holds no GPU); a GPU step's child gives it back (buildsys.runners.worker).
            **gpu.hidden(os.environ),
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            "BUILDSYS_WORKER_FD": str(child.fileno()),
            "BUILDSYS_LIFELINE_FD": str(lifeline),
            **({"BUILDSYS_MEMORY_LIMIT": str(self.memory_limit)} if self.memory_limit else {}),
            "PYTHONUNBUFFERED": "1",
        })
        proc = subprocess.Popen(
            [sys.executable, "-m", "buildsys.runners.worker"],
            cwd=self.workspace, env=env, pass_fds=(child.fileno(), lifeline),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        child.close()
        os.close(lifeline)
        return Worker(proc, Connection(parent.detach()), keep)

    @property
    def free(self) -> int:
        return self.size - len(self.busy)

    def prestart(self) -> None:
        """Start one worker now, so its start-up overlaps the orchestrator's planning."""
        if not self.idle and not self.busy:
            self.idle.append(self._spawn())

    def submit(self, job: Job, timeout: float) -> None:
        worker = self.idle.pop() if self.idle else self._spawn()
        worker.conn.send(job.to_wire())
        worker.job, worker.started, worker.deadline = job, time.monotonic(), time.monotonic() + timeout
        self.busy.append(worker)

    def wait(self) -> list[Finished]:
        """Block until at least one running step finishes, dies or times out."""
        if not self.busy:
            return []
        now = time.monotonic()
        timeout = max(0.0, min(w.deadline for w in self.busy) - now)
        handles: dict[Connection | int, Worker] = {}  # by pipe and by process id
        for w in self.busy:
            handles[w.conn] = w
            handles[w.proc.pid] = w
        ready = wait([w.conn for w in self.busy], timeout=timeout)
        done: list[Finished] = []
        for w in list(self.busy):
            assert w.job is not None  # a busy worker holds its job
            if w.conn in ready:
                try:
                    answer = StepAnswer.from_wire(w.conn.recv())
                except (EOFError, OSError):
                    answer = self._death(w)
                    self._discard(w)
                else:
                    w.served += 1
                    self.busy.remove(w)
                    self.idle.append(w)
                done.append(Finished(w.job, answer))
            elif time.monotonic() >= w.deadline:
                self._discard(w)
                seconds = time.monotonic() - w.started
                done.append(Finished(w.job, StepAnswer.failed(
                    f"timed out after {seconds:.0f}s; the step's process group was killed{_tail(w.job.log)}",
                    seconds, hint="raise the step's timeout if the model is legitimately slow")))
        return done

    def _death(self, w: Worker) -> StepAnswer:
        assert w.job is not None  # it died running its job
        return death_answer(w.proc.wait(timeout=10), w.job.log, w.started)

    def _discard(self, w: Worker) -> None:
        if w in self.busy:
            self.busy.remove(w)
        _kill_group(w.proc)
        w.conn.close()
        os.close(w.lifeline)

    def shutdown(self) -> None:
        """Stop every worker. Idle ones hold no state worth a graceful exit: kill them."""
        for w in self.idle + list(self.busy):
            _kill_group(w.proc)
            w.conn.close()
            os.close(w.lifeline)
        self.idle.clear()
        self.busy.clear()


def death_answer(code: int, log: str | None, started: float) -> StepAnswer:
    """The answer for a step whose process died without answering (exit code as subprocess gives it)."""
    what = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    hint = "a crash in native code (an exporter, onnxsim, a runtime); the log has everything it printed"
    if code == -signal.SIGKILL:
        hint = ("nothing in buildsys sends SIGKILL to a running step: most often the kernel's OOM killer "
                "ended it because the machine ran out of memory (see `dmesg`); --memory-limit SIZE makes "
                "such a step fail with an out-of-memory message instead")
    return StepAnswer.failed(f"the worker process running the step {what}{_tail(log)}",
                             time.monotonic() - started, hint=hint)


def _tail(log: str | None, lines: int = 5) -> str:
    """The last lines a step logged (to the file `log`), to show beside its crash."""
    if log is None:
        return ""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace").strip().splitlines()[-lines:]
    except (OSError, TypeError):
        return ""
    return ("; last lines of its log:\n    " + "\n    ".join(text)) if text else ""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


_pools = threading.local()


def run_isolated(job: Job, threads: int, timeout: float) -> StepAnswer:
    """Run one step in a forked child of a template worker kept for this thread; wait for its answer.

    For hosts that receive steps one at a time from elsewhere (a Dask worker): the
    step is as hermetic as on a local build, and the host's own interpreter, with
    its threads and event loop, is never forked.
    """
    pools = _pools.__dict__.setdefault("by_workspace", {})
    pool = pools.get((job.workspace, threads))
    if pool is None:
        pool = pools[(job.workspace, threads)] = WorkerPool(1, threads, job.workspace)
    pool.submit(job, timeout)
    while True:
        for done in pool.wait():
            return done.answer


class InlineRunner:
    """Runs steps in this process, one at a time: for tests and light steps (a Runner)."""

    size = 1
    gpu_slots = 1

    def __init__(self) -> None:
        self.pending: list[Job] = []

    @property
    def free(self) -> int:
        return 1 - len(self.pending)

    def prestart(self) -> None:
        pass

    def submit(self, job: Job, timeout: float) -> None:
        self.pending.append(job)

    def wait(self) -> list[Finished]:
        from buildsys.engine.stepjob import run_job

        done = [Finished(job, StepAnswer.from_wire(run_job(job.to_wire()))) for job in self.pending]
        self.pending.clear()
        return done

    def shutdown(self) -> None:
        self.pending.clear()
