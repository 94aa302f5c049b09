"""A session: one command's workspace, opened from one frozen `BuildOptions`.

It opens what a build needs, in the order that keeps builds apart: the
executor (started early, so its start-up overlaps planning), the workspace lock,
the state database (only under the lock: the build waited for may have been
`clean --cache`), the store and the shared cache. It hands these to a rebuilder
and a scheduler (`build`), plans without running or writing (`plan`), and removes
outputs (`clean`). It prints nothing but the word that a build was interrupted;
what to show is the command line's.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from buildsys.build import Workspace, select
from buildsys.engine.answer import Outcome
from buildsys.engine.rebuilder import Rebuilder, open_shared
from buildsys.engine.runner import Reporter, Runner, Silent
from buildsys.engine.scheduler import Scheduler
from buildsys.engine.status import status_word
from buildsys.errors import Problem, UsageError
from buildsys.recipe.model import Recipe
from buildsys.resolve import Graph
from buildsys.state import State, WorkspaceLock
from buildsys.store import Store


@dataclass(frozen=True)
class BuildOptions:
    """What a command asks of a build: the selection, the executor, the caches."""

    recipes: tuple[str, ...] = ()  # names or paths; empty: every recipe
    jobs: int = 1
    keep_going: bool = False
    only: tuple[str, ...] = ()  # step names or families; empty: every step
    dry_run: bool = False
    require_all: bool = False  # an unavailable backend fails the build
    timeout: float | None = None  # seconds per step, overriding each step's own limit
    cache: str | None = None  # a shared cache: folder or fsspec URL
    cache_read_only: bool = False
    executor: str = "local"  # "local" worker processes or "dask"
    scheduler: str | None = None  # the Dask scheduler's address
    memory_limit: int | None = None  # bytes per local worker

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise UsageError(f"-j takes a positive number of jobs, found {self.jobs}")


@dataclass(frozen=True)
class Loaded:
    """The recipes of a command, the problems of the broken ones, and their resolved graph."""

    recipes: list[Recipe]
    problems: list[Problem]
    graph: Graph


@dataclass(frozen=True)
class Plan:
    """What a build would do now: each step's outcome and its status word."""

    graph: Graph
    outcomes: dict[str, Outcome]
    rows: list[tuple[str, str, str]]  # (step id, status word, detail), in the graph's order


class Session:
    def __init__(self, root: Path, options: BuildOptions = BuildOptions()):
        self.ws = Workspace(root)
        self.options = options
        self.state: State | None = None
        self.store: Store | None = None
        self.runner: Runner | None = None
        self._shared = None
        self._shared_open = False

    # -- opening ------------------------------------------------------------------

    @contextlib.contextmanager
    def opened(self) -> Iterator[Session]:
        """The workspace locked, with its state, store and runner, for one build; closed on any exit.

        On Ctrl-C or SIGTERM the running steps are killed and their scratch removed,
        so nothing half-written is recorded; the interrupt then goes on (exit 130).
        """
        import shutil

        from buildsys.engine import noop

        ws = self.ws
        ws.refuse_links()
        runner = self.runner = self._make_runner()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with WorkspaceLock(ws.meta):
                self.state = State(ws.meta)
                self.store = Store(ws.meta / "store")
                if not self.options.dry_run:
                    noop.forget(str(ws.meta))
                    runner.prestart()
                yield self
        except KeyboardInterrupt:
            runner.shutdown()
            shutil.rmtree(ws.tmp, ignore_errors=True)
            print("interrupted: running steps were stopped; nothing they wrote was recorded", file=sys.stderr)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            runner.shutdown()
            if self.state is not None:
                self.state.close(flush=sys.exc_info()[0] is None)  # after a failure, report that one, not a second

    def shared(self):
        """The shared cache of `--cache`, opened once, or None."""
        if not self._shared_open:
            self._shared = open_shared(self.options.cache, self.options.cache_read_only)
            self._shared_open = True
        return self._shared

    def _make_runner(self) -> Runner:
        """Local persistent workers, or a Dask cluster meeting at the shared cache."""
        o = self.options
        threads = max(1, (os.cpu_count() or 1) // o.jobs)
        if o.executor == "dask":
            if not o.scheduler:
                raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT")
            if not o.cache or o.cache_read_only:
                raise UsageError("--executor dask needs a writable --cache DIR_OR_URL",
                                 hint="the shared cache is where the cluster's workers and this machine exchange "
                                      "artifacts")
            try:
                from buildsys.cluster import DaskRunner
            except ImportError:
                raise UsageError("--executor dask needs Dask", hint="pip install '.[cluster]'") from None
            try:
                return DaskRunner(o.scheduler, self.shared().url, threads)
            except OSError as exc:
                raise UsageError(f"cannot reach the Dask scheduler {o.scheduler}: {exc}") from None
        from buildsys.workers import WorkerPool

        return WorkerPool(o.jobs, threads, str(self.ws.root), memory_limit=o.memory_limit)

    # -- building -------------------------------------------------------------------

    def load(self) -> Loaded:
        """The selected recipes and their graph; broken ones are problems with keep-going, else RecipeError."""
        from buildsys import loading
        from buildsys.resolve import resolve

        recipes, problems = loading.load(self.ws.root, self.state, list(self.options.recipes),
                                         self.options.keep_going)
        reads = self.state.reads if self.state is not None else None  # what the no-op answer is stamped by
        return Loaded(recipes, problems, resolve(recipes, self.ws.root, reads))

    def selection(self, graph: Graph) -> set[str]:
        """The steps `--only` asks for and what they need (every step without it)."""
        selected = select(graph, list(self.options.only))
        if self.options.only and not selected:
            raise UsageError(f"--only {', '.join(self.options.only)} matches no step",
                             hint="step names: export, simplify, reference, parity, parity[fp32], engine, ...")
        return selected

    def build(self, graph: Graph, selected: set[str], reporter: Reporter) -> list[Outcome]:
        """Bring the `selected` steps up to date (inside `opened`); their outcomes in the graph's order."""
        assert self.state is not None and self.store is not None and self.runner is not None  # `opened` set them
        rebuilder = Rebuilder(self.ws, graph, self.state, self.store, self.shared(), dry_run=self.options.dry_run)
        scheduler = Scheduler(graph, rebuilder, self.runner, reporter, keep_going=self.options.keep_going,
                              timeout=self.options.timeout)
        return scheduler.run(selected)

    def record_noop(self, outcomes: list[Outcome], code: int) -> None:
        """Remember what a repeat of this build would print, stamped by everything the build read.

        Inside `opened`, under the lock: a build that starts once it is released (and
        forgets every recorded answer) must not find one recorded halfway through its own changes.
        """
        from buildsys.engine import noop

        assert self.state is not None  # `opened` set it
        o = self.options
        noop.record_build(str(self.ws.meta), noop.signature(list(o.recipes), list(o.only), o.require_all),
                          self.state.reads, outcomes, code)

    def trim(self, max_size: int) -> tuple[str | None, str]:
        """`build --cache-max-size`: the collection of `cache gc` under the build's own lock.

        Every recipe's steps are current, not only the ones this build selected.
        Returns a note (or None) and the rendered plan.
        """
        from buildsys import cachegc

        assert self.state is not None and self.store is not None  # `opened` set them
        current, note = _current_steps(self.ws.root, self.state)
        done = cachegc.collect_local(self.state, self.store, current, max_size, None)
        return note, cachegc.render_plan(done, str(self.ws.meta))

    # -- planning and cleaning -------------------------------------------------------

    def plan(self) -> Plan:
        """What a build of the selected recipes would do now; nothing runs, nothing is written but the state."""
        from buildsys.workers import InlineRunner

        self.ws.refuse_links()
        self.state = State(self.ws.meta)
        self.store = Store(self.ws.meta / "store")
        self.runner = InlineRunner()
        graph = self.load().graph
        rebuilder = Rebuilder(self.ws, graph, self.state, self.store, dry_run=True)  # the shared cache unasked
        outcomes = Scheduler(graph, rebuilder, self.runner, Silent()).run(set(graph.steps))
        failures = self.state.failures()
        rows = []
        for o in outcomes:
            failure = failures.get(o.step)
            recorded = None
            if failure is not None and failure[0] == o.key:
                recorded = failure[1].splitlines()[0] + f" (log: out/{failure[2]})"
            rows.append((o.step, *status_word(o.state, o.reason, o.verdict, recorded)))
        return Plan(graph, {o.step: o for o in outcomes}, rows)

    def clean(self, cache: bool) -> str | None:
        """Remove the selected recipes' outputs (their artifacts stay in the store), or with `cache`
        and no selection everything under out/; what was removed, or None when out/ is not there."""
        from buildsys import loading
        from buildsys.safepath import remove

        ws = self.ws
        if not ws.out.exists():
            return None
        ws.refuse_links()
        with WorkspaceLock(ws.meta):
            if cache and not self.options.recipes:
                # A link under out/ is removed itself; what it points to is never touched.
                for child in ws.out.iterdir():
                    if child.name != ".buildsys":
                        remove(child)
                for child in ws.meta.iterdir():
                    if child.name != "lock":
                        remove(child)
                return f"removed {ws.out} and the build cache"
            state = State(ws.meta)
            recipes, _ = loading.load(ws.root, state, list(self.options.recipes), keep_going=True)
            names = [r.name for r in recipes]
            for name in names:
                remove(ws.out / name)
            state.forget_recipes(names)
            state.close()
            return f"removed outputs of {', '.join(names) or 'nothing'} (the cache keeps their artifacts)"

    # -- the cache commands ---------------------------------------------------------

    def cache_stats(self, url: str | None):
        """`cache stats` of the local store, or of the shared cache `url`: (figures, their rendering)."""
        from buildsys import cachegc

        ws = self.ws
        built = (ws.meta / "state.sqlite").exists()
        if url:
            digests = None  # what this workspace's current recipes use, when it has built them
            if built:
                state = State(ws.meta)
                digests = cachegc.current_digests(state, cachegc.current_steps(ws.root, state)[0])
                state.close()
            return cachegc.stats_json(cachegc.shared_inventory(_existing_shared(url)), digests), cachegc.render_stats
        if not built:  # nothing built here: nothing to create either
            return cachegc.stats_json(cachegc.Inventory(str(ws.meta), "local", {}, {}), set()), cachegc.render_stats
        state = State(ws.meta)
        current, _ = cachegc.current_steps(ws.root, state)
        inv = cachegc.local_inventory(state, Store(ws.meta / "store"), current)
        result = cachegc.stats_json(inv, cachegc.current_digests(state, current))
        state.close()
        return result, cachegc.render_stats

    def collect(self, url: str | None, max_size: int | None, max_age: float | None, grace: float, dry_run: bool):
        """`cache gc` of the local store, or of the shared cache `url`: (a note or None, figures, their rendering)."""
        from buildsys import cachegc

        ws = self.ws
        if url:
            shared = _existing_shared(url)
            result = cachegc.collect_shared(shared, max_size, max_age, grace, dry_run)
            return None, result, lambda d: cachegc.render_plan(d, shared.url)
        render = lambda d: cachegc.render_plan(d, str(ws.meta))  # noqa: E731
        if not (ws.meta / "state.sqlite").exists():  # nothing built here: nothing to create either
            empty = cachegc.Inventory(str(ws.meta), "local", {}, {})
            return None, cachegc.plan_json(cachegc.plan(empty, max_size, max_age, 0.0), dry_run), render
        with WorkspaceLock(ws.meta):  # a build holds it for its whole run: neither sees the other half done
            state = State(ws.meta)
            current, note = _current_steps(ws.root, state)
            result = cachegc.collect_local(state, Store(ws.meta / "store"), current, max_size, max_age, dry_run)
            state.close()
        return note, result, render


def _current_steps(root: Path, state: State):
    """The steps of every recipe as they stand, for a collection, and the note to print when
    the recipes cannot be read (then the last build of every step is kept), or None."""
    from buildsys import cachegc

    current, why = cachegc.current_steps(root, state)
    return current, (f"note: {why}; the last build of every step is kept" if why else None)


def _existing_shared(url: str):
    """The shared cache at `url` for `cache stats`/`gc`: it must exist already."""
    if "://" not in url and not Path(url).is_dir():
        raise UsageError(f"--cache {url}: no such folder", hint="give the folder or URL that builds use as --cache")
    try:
        return open_shared(url, read_only=False)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"--cache {url}: {exc}", hint="install the fsspec backend for this URL (e.g. s3fs)") from None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
