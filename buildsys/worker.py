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


if __name__ == "__main__":
    sys.exit(main())
