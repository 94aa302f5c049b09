"""Runners: where a step's job runs. The engine drives a `Runner` (engine/runner.py) it is handed.

`workers` (persistent local worker processes, and inline in this process for tests), `worker`
(the child process side) and `cluster` (a Dask cluster meeting at the shared cache). `choose`
picks one from a command's options, outside the engine, which starts it when a build opens.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from buildsys.core.errors import UsageError

if TYPE_CHECKING:
    from buildsys.engine.runner import Runner, RunnerFactory
    from buildsys.engine.session import BuildOptions


def choose(options: BuildOptions, root: Path) -> RunnerFactory:
    """The runner a command's options ask for: local persistent workers, or a Dask cluster.

    What the options lack is said now, before the session locks anything; the runner itself
    starts when a build opens (`RunnerFactory`), where it learns each step's threads and the shared cache.
    """
    if options.executor != "dask":
        def local(threads: int, shared_url: str | None) -> Runner:
            from buildsys.runners.workers import WorkerPool

            return WorkerPool(options.jobs, threads, str(root), memory_limit=options.memory_limit)
        return local
    scheduler = options.scheduler
    if not scheduler:
        raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT")
    if not options.cache or options.cache_read_only:
        raise UsageError("--executor dask needs a writable --cache DIR_OR_URL",
                         hint="the shared cache is where the cluster's workers and this machine exchange artifacts")

    def dask(threads: int, shared_url: str | None) -> Runner:
        try:
            from buildsys.runners.cluster import DaskRunner
        except ImportError:
            raise UsageError("--executor dask needs Dask", hint="pip install '.[cluster]'") from None
        assert shared_url is not None  # a writable --cache was asked for above
        try:
            return DaskRunner(scheduler, shared_url)
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    return dask

