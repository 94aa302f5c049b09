"""Entry point of a worker process: receive a step, run it, answer; until told to stop."""
from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection


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
        # the whole machine swapping or the OOM killer picking a process.
        resource.setrlimit(resource.RLIMIT_DATA, (int(limit), int(limit)))
    sys.path.insert(0, os.getcwd())
    from buildsys.steps.base import run_job

    # Most builds need these; importing them while the orchestrator still plans
    # takes their cost off the critical path. Torch is left to the steps that use it.
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401

    while True:
        try:
            job = conn.recv()
        except EOFError:
            return 0
        if job is None:
            return 0
        conn.send(run_job(job))


def _guard(lifeline: int) -> None:
    """Fork a sentinel that kills this worker's process group once the build is gone.

    The build holds the only write end of `lifeline`; the kernel closes it however
    the build ends, and the sentinel's read returns. Killing the group takes the
    step's own children (a child interpreter, a tool it runs) with the worker. A
    process rather than a thread, forked before anything heavy is imported: a step
    stuck in native code that holds the GIL would stall a thread, and a parent-death
    signal (prctl) would kill the worker alone and orphan its children.
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
