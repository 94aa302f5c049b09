"""What starting a step costs: a forked child of a warm template against running in-process.

    .venv/bin/python benchmarks/bench_step_start.py [--runs 40]

A step that does nothing (its class lists torch among its tools, so it forks from
the worker's `torch` template, as a reference step does) is sent to a one-worker
pool --runs times; so is one that runs in the worker's resident process, as
simplify, parity and the ONNX Runtime engine do (RESIDENT). Its round trip (submit, fork, run, answer) is set beside the
same step run in this process by `run_job`, which is what the persistent workers
before the templates did per step. The difference is the price of a pristine
interpreter per step. Medians; the first, cold round trip (the torch template
starting and importing torch) is shown on its own.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP = '''
from buildsys.steps.base import Step, StepResult


class Noop(Step):
    KIND = "noop"
    TOOLS = ("torch", "onnx", "onnxruntime", "numpy")

    def run(self):
        (self.ctx.scratch / "out.txt").write_text("x")
        return StepResult()


class ResidentNoop(Noop):
    TOOLS = ("onnx", "onnxruntime", "numpy")
    RESIDENT = True
'''


def _job(root: Path, i: int, cls: str = "Noop") -> dict:
    return {"id": f"noop:{i}", "kind_path": f"bmstep:{cls}", "params": {}, "workspace": str(root),
            "scratch": str(root / "tmp" / str(i)), "inputs": {}, "artifacts": {}, "files": {},
            "outputs": {"out": "out.txt"},
            "log": str(root / "logs" / f"{i}.log")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()

    from buildsys.engine.answer import Job
    from buildsys.engine.stepjob import run_job
    from buildsys.runners.workers import WorkerPool

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bmstep.py").write_text(STEP)
        sys.path.insert(0, str(root))
        pool = WorkerPool(1, 1, str(root))
        try:
            t0 = time.perf_counter()
            pool.submit(Job.from_wire(_job(root, 0)), 600)
            assert pool.wait()[0].answer.ok
            cold = time.perf_counter() - t0
            forked, inline, resident = [], [], []
            for i in range(1, args.runs + 1):
                t0 = time.perf_counter()
                pool.submit(Job.from_wire(_job(root, i)), 600)
                answer = pool.wait()[0].answer
                forked.append(time.perf_counter() - t0)
                assert answer.ok, answer
                t0 = time.perf_counter()
                assert run_job(_job(root, 10_000 + i))["ok"]
                inline.append(time.perf_counter() - t0)
            # in a loop of their own: one right after a forked step waits for the torch
            # template to fork its next spare child (a few ms), which it then does not need
            for i in range(args.runs + 1):
                t0 = time.perf_counter()
                pool.submit(Job.from_wire(_job(root, 20_000 + i, "ResidentNoop")), 600)
                answer = pool.wait()[0].answer
                resident.append(time.perf_counter() - t0)
                assert answer.ok, answer
        finally:
            pool.shutdown()
    f, n = statistics.median(forked), statistics.median(inline)
    print(f"first step (the torch template starts): {cold * 1000:.0f} ms")
    print(f"step in a forked child, round trip: median {f * 1000:.1f} ms over {args.runs} "
          f"(min {min(forked) * 1000:.1f}, max {max(forked) * 1000:.1f})")
    print(f"same step in-process (run_job):      median {n * 1000:.1f} ms")
    print(f"cost of a pristine interpreter per step: {(f - n) * 1000:.1f} ms")
    print(f"step in the resident process, round trip: median {statistics.median(resident[1:]) * 1000:.1f} ms "
          f"(the first, which starts that process, excluded)")


if __name__ == "__main__":
    main()
