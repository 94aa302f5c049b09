"""The protocols the engine drives: a runner that executes jobs, a reporter that shows progress.

buildsys.runners.workers (local worker processes, and inline for tests) and buildsys.runners.cluster
(a Dask cluster) implement `Runner`; the command line chooses one (buildsys.runners.choose) and
hands the session its `RunnerFactory`. buildsys.console.progress implements `Reporter`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from buildsys.core.errors import Problem
from buildsys.engine.answer import Finished, Job, Outcome
from buildsys.recipe.resolve import StepSpec


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


# Starts the chosen runner when a build opens: (threads per running step, the shared cache's URL or None).
RunnerFactory = Callable[[int, "str | None"], Runner]


class Idle:
    """The runner of a dry run (`status`, `explain`): settling decides every step there, so it is never handed a job."""

    gpu_slots = 1
    free = 1

    def prestart(self) -> None:
        pass

    def submit(self, job: Job, timeout: float) -> None:
        raise AssertionError(f"a dry run was asked to run {job.id}")

    def wait(self) -> list[Finished]:
        return []

    def shutdown(self) -> None:
        pass


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
