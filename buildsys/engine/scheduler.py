"""The scheduler: walks the step graph in topological order and hands what must run to a runner.

Ordering is graphlib's; whether a step runs, is restored or is settled otherwise
is the rebuilder's to say, and committing what ran is the rebuilder's too. This
module decides only when: parallelism up to the runner's free slots, one
GPU-bound step at a time, what a failure blocks, and whether the build goes on
past it (keep-going). It never touches the state database, the store or the
shared cache.
"""
from __future__ import annotations

import contextlib
from collections import deque
from graphlib import TopologicalSorter
from typing import Protocol

from buildsys.core.errors import BuildsysError
from buildsys.engine.answer import Finished, Job, Outcome
from buildsys.engine.runner import Reporter, Runner
from buildsys.recipe.resolve import Graph, StepSpec


class Rebuilder(Protocol):
    """What the scheduler asks of buildsys.engine.rebuilder.Rebuilder."""

    def begin(self) -> None: ...
    def settle(self, step: StepSpec, outcomes: dict[str, Outcome]) -> Outcome | None: ...
    def job(self, step: StepSpec, outcomes: dict[str, Outcome]) -> Job: ...
    def commit(self, done: Finished) -> Outcome: ...
    def flush(self) -> None: ...


class Scheduler:
    def __init__(self, graph: Graph, rebuilder: Rebuilder, runner: Runner, reporter: Reporter,
                 keep_going: bool = False, timeout: float | None = None):
        self.graph = graph
        self.rebuilder = rebuilder
        self.runner = runner
        self.reporter = reporter
        self.keep_going = keep_going
        self.timeout = timeout  # per step, overriding each step's own limit
        self.outcomes: dict[str, Outcome] = {}
        self.stopped_by: str | None = None  # the failed step that stopped the build (without keep-going)
        self.gpu_slots = getattr(runner, "gpu_slots", 1)

    def run(self, selected: set[str]) -> list[Outcome]:
        """Bring the `selected` steps up to date; their outcomes in the graph's order."""
        self.rebuilder.begin()
        sorter = TopologicalSorter({s: self.graph.steps[s].upstream & selected for s in selected})
        sorter.prepare()
        ready: deque[str] = deque()
        to_run: deque[str] = deque()
        running = gpu_busy = 0
        try:
            while sorter.is_active():
                ready.extend(sorted(sorter.get_ready()))
                while ready:
                    sid = ready.popleft()
                    outcome = self._settle(self.graph.steps[sid])
                    if outcome is None:
                        to_run.append(sid)
                    else:
                        self._finish(sorter, outcome)
                while to_run and self.runner.free > 0:
                    picked = self._next(to_run, gpu_busy)
                    if picked is None:
                        break  # only GPU steps wait, and the GPU is taken
                    sid = picked
                    if self.stopped_by:
                        self._finish(sorter, Outcome(sid, "skipped", f"build stopped after {self.stopped_by} failed"))
                        continue
                    step = self.graph.steps[sid]
                    job = self.rebuilder.job(step, self.outcomes)
                    self.reporter.started(step)
                    self.runner.submit(job, self.timeout or step.timeout)
                    running += 1
                    gpu_busy += self._on_gpu(sid)
                if running:
                    for done in self.runner.wait():
                        running -= 1
                        gpu_busy -= self._on_gpu(done.job.id)
                        self._finish(sorter, self.rebuilder.commit(done))
        except BaseException:
            with contextlib.suppress(BuildsysError):  # the failure in flight is the one to report
                self.rebuilder.flush()
            raise
        self.rebuilder.flush()
        position = {sid: i for i, sid in enumerate(self.graph.steps)}
        return sorted(self.outcomes.values(), key=lambda o: position[o.step])

    def _settle(self, step: StepSpec) -> Outcome | None:
        """The step's outcome when an upstream step blocks it, else the rebuilder's settlement."""
        for up in sorted(step.upstream):
            o = self.outcomes[up]
            if o.state == "would-run" and up in step.data_upstream:
                return Outcome(step.id, "would-run", f"upstream {up} would run")
            if o.blocks:
                what = "failed parity" if o.state not in ("failed", "skipped", "unavailable") else o.state
                return Outcome(step.id, "skipped", f"blocked: {up} {what}")
        if self.stopped_by:
            return Outcome(step.id, "skipped", f"build stopped after {self.stopped_by} failed")
        return self.rebuilder.settle(step, self.outcomes)

    def _on_gpu(self, sid: str) -> int:
        """1 for a step that holds the GPU while it runs (its class says DEVICE = "gpu")."""
        return int(self.graph.steps[sid].device == "gpu")

    def _next(self, to_run: deque[str], gpu_busy: int) -> str | None:
        """The first step that may start now: one GPU step at a time, CPU steps beside it."""
        for i, sid in enumerate(to_run):
            if gpu_busy < self.gpu_slots or not self._on_gpu(sid):
                del to_run[i]
                return sid
        return None

    def _finish(self, sorter: TopologicalSorter, outcome: Outcome) -> None:
        if outcome.state == "failed" and not self.keep_going and not self.stopped_by:
            self.stopped_by = outcome.step
        self.outcomes[outcome.step] = outcome
        sorter.done(outcome.step)
        self.reporter.finished(outcome)
