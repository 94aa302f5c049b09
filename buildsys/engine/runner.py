"""The protocols the engine drives: a runner that executes jobs, a reporter that shows progress.

buildsys.workers (local worker processes, and inline for tests) and buildsys.cluster
(a Dask cluster) implement `Runner`; buildsys.progress implements `Reporter`.
"""
from __future__ import annotations

from typing import Protocol

from buildsys.engine.answer import Finished, Job, Outcome
from buildsys.errors import Problem
from buildsys.resolve import StepSpec


class Runner(Protocol):
    # How many GPU-bound steps may run at once through this runner. Local runners: one
    # (two engine builds on one GPU share its memory and skew each other's kernel timings);
    # a cluster schedules GPUs itself (Dask resources) and says so with a large number.
    gpu_slots: int

    @property
    def free(self) -> int: ...
    def prestart(self) -> None: ...
    def submit(self, job: Job, timeout: float) -> None: ...
    def wait(self) -> list[Finished]: ...
    def shutdown(self) -> None: ...


class Reporter(Protocol):
    def problems(self, found: list[Problem]) -> None: ...  # recipes that could not be read; the build goes on
    def started(self, step: StepSpec) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...


class Silent:
    """A reporter that shows nothing (planning, tests)."""

    def problems(self, found: list[Problem]) -> None:
        pass

    def started(self, step: StepSpec) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass
