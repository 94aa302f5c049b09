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

from buildsys.core.errors import Problem, UsageError
from buildsys.engine.answer import Outcome
from buildsys.engine.rebuilder import Rebuilder, open_shared
from buildsys.engine.runner import Idle, Reporter, Runner, RunnerFactory, Silent
from buildsys.engine.scheduler import Scheduler
from buildsys.engine.status import DONE, check_status, exit_status, status_word
from buildsys.engine.workspace import Workspace, select
from buildsys.recipe.model import Recipe
from buildsys.recipe.resolve import Graph
from buildsys.storage.state import State, WorkspaceLock
from buildsys.storage.store import Store


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
    cache_max_size: int | None = None  # after the build, trim the local store to this size

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
class BuildResult:
    """What a build came to: each step's outcome, the exit status, the broken recipes, the trim of the store."""

    outcomes: list[Outcome]
    code: int
    problems: list[Problem]
    trim_note: str | None = None  # why the trim kept every step's last build, when it did
    trim_plan: str | None = None  # what `--cache-max-size` removed, rendered

    def steps(self) -> list[dict]:
        return [o.as_json() for o in self.outcomes]


@dataclass(frozen=True)
class Plan:
    """What a build would do now: each step's outcome and its status word."""

    graph: Graph
    outcomes: dict[str, Outcome]
    rows: list[tuple[str, str, str]]  # (step id, status word, detail), in the graph's order


class Session:
    def __init__(self, root: Path, options: BuildOptions = BuildOptions(), runner: RunnerFactory | None = None):
        """`runner` starts the runner a build hands its jobs to (buildsys.runners.choose); a session
        that only plans, validates, cleans or collects needs none."""
        self.ws = Workspace(root)
        self.options = options
        self._make_runner = runner
        self.state: State | None = None
        self.store: Store | None = None
        self.runner: Runner | None = None
        self._shared = None
        self._shared_open = False
        self.threads = max(1, (os.cpu_count() or 1) // options.jobs)  # each running step's share of the cores

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
        if self._make_runner is None:
            raise TypeError("a build needs a runner: Session(root, options, runners.choose(options, root))")
        shared = self.shared()
        runner = self.runner = self._make_runner(self.threads, shared.url if shared is not None else None)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with WorkspaceLock(ws.meta), self._state() as self.state:  # flushed and closed under the lock
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
            self.state = None  # closed: a later `load` (bench's, after its build) reads the recipes afresh

    @contextlib.contextmanager
    def _state(self, read_only: bool = False) -> Iterator[State]:
        """The workspace's state database, closed on any exit: the one place a session opens it.

        After a failure it is closed without a flush, which would only repeat the failure.
        """
        state = State(self.ws.meta, read_only=read_only)
        try:
            yield state
        finally:
            state.close(flush=sys.exc_info()[0] is None)

    def shared(self):
        """The shared cache of `--cache`, opened once, or None."""
        if not self._shared_open:
            self._shared = open_shared(self.options.cache, self.options.cache_read_only)
            self._shared_open = True
        return self._shared

    # -- the commands -----------------------------------------------------------------

    def run_build(self, reporter: Reporter) -> BuildResult:
        """`build`: load, select, build, decide the exit status, record the no-op answer, trim the store."""
        from buildsys.engine import noop

        o = self.options
        with self.opened():
            loaded = self.load()
            reporter.problems(loaded.problems)
            outcomes = self.build(loaded.graph, self.selection(loaded.graph), reporter)
            code = exit_status([(x.state, x.verdict) for x in outcomes], o.require_all, bool(loaded.problems))
            if noop.worth_recording(o.dry_run, bool(loaded.problems), code):
                self.record_noop(outcomes, code)
            note = plan = None
            if o.cache_max_size is not None and not o.dry_run:
                note, plan = self.trim(o.cache_max_size)
        return BuildResult(outcomes, code, loaded.problems, note, plan)

    def run_check(self, reporter: Reporter, baseline: Path | None, max_regression: float, junit: Path | None,
                  markdown: Path | None):
        """`check`: build every parity check (engines are not needed to judge parity), then write the reports.

        Returns the reports' summary, whose exit status is the command's.
        """
        from buildsys.reports import gate, gather_meta, with_export_warnings, write_reports

        if max_regression <= 1:
            raise UsageError(f"--max-regression must be greater than 1, found {max_regression}")
        if baseline is not None and not baseline.is_file():
            raise UsageError(f"--baseline {baseline}: no such file",
                             hint="download main's out/reports/parity.json first (see .github/workflows/parity.yml)")
        with self.opened():
            loaded = self.load()
            reporter.problems(loaded.problems)
            graph = loaded.graph
            checks = gate.checks(graph)
            built = self.build(graph, graph.closure({s.id for s in checks}), reporter)
        outcomes = {o.step: o for o in built}
        out = self.ws.out
        entries = [gate.report_entry(out, graph, step, outcomes[step.id].state, outcomes[step.id].state in DONE,
                                     outcomes[step.id].message or outcomes[step.id].reason, outcomes[step.id].verdict)
                   for step in checks]
        entries = with_export_warnings(entries, outcomes)
        factors = {r.name: r.parity.max_regression for r in loaded.recipes if r.parity.max_regression}
        return write_reports(out / "reports", entries, gather_meta(), baseline=baseline,
                             max_regression=max_regression, markdown_path=markdown, junit_path=junit,
                             recipe_factors=factors,
                             exit_status=lambda failed: check_status(built, bool(loaded.problems), failed))

    def explain(self, target: str) -> list[tuple[str, str, str, Outcome]]:
        """`explain RECIPE[:STEP]`: (step id, status word, detail, outcome) of each step the target names."""
        recipe, _, step_name = target.partition(":")
        plan = Session(self.ws.root, BuildOptions(recipes=(recipe,))).plan()
        graph = plan.graph
        wanted = [(sid, word, detail, plan.outcomes[sid]) for sid, word, detail in plan.rows
                  if not step_name or sid == f"{recipe}:{step_name}" or graph.steps[sid].family == step_name]
        if not wanted:
            names = ", ".join(s.name for s in graph.steps.values() if s.recipe == recipe)
            raise UsageError(f"{target}: no such step", hint=f"steps of {recipe}: {names}")
        return wanted

    def validate(self) -> list[Recipe]:
        """`validate`: the selected recipes, read and resolved against the workspace; RecipeError lists every problem."""
        from buildsys.core.errors import RecipeError
        from buildsys.recipe import loading
        from buildsys.recipe.resolve import resolve_recipe

        recipes, problems = loading.load(self.ws.root, None, list(self.options.recipes), keep_going=True)
        for r in recipes:  # what only the workspace can tell: the files a data glob finds today
            try:
                resolve_recipe(r, self.ws.root)
            except RecipeError as exc:
                problems += exc.problems
        if problems:
            raise RecipeError(problems)
        return recipes

    # -- building -------------------------------------------------------------------

    def load(self) -> Loaded:
        """The selected recipes and their graph; broken ones are problems with keep-going, else RecipeError."""
        from buildsys.recipe import loading
        from buildsys.recipe.resolve import resolve

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
        rebuilder = Rebuilder(self.ws, graph, self.state, self.store, self.shared(), dry_run=self.options.dry_run,
                              threads=self.threads)
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
        from buildsys.storage import cachegc

        assert self.state is not None and self.store is not None  # `opened` set them
        current, note = self._current_steps(self.state)
        done = cachegc.collect_local(self.state, self.store, current, max_size, None)
        return note, cachegc.render_plan(done, str(self.ws.meta))

    def _current_steps(self, state: State) -> tuple[set[str] | None, str | None]:
        """The step ids of every recipe as they stand, for a collection, and the note to print when
        the recipes cannot all be read (then the last build of every step is kept), or None."""
        from buildsys.core.errors import BuildsysError
        from buildsys.recipe import loading
        from buildsys.recipe.resolve import resolve

        try:
            recipes, problems = loading.load(self.ws.root, state, [], keep_going=True)
            if problems:
                why = f"{len(problems)} recipes could not be read"
            else:
                return set(resolve(recipes, self.ws.root).steps), None
        except BuildsysError as exc:
            why = exc.message
        return None, f"note: {why}; the last build of every step is kept"

    # -- planning and cleaning -------------------------------------------------------

    def plan(self) -> Plan:
        """What a build of the selected recipes would do now; nothing runs, nothing is written.

        The state is opened read-only and without the lock, and closed again.
        """
        self.ws.refuse_links()
        try:
            with self._state(read_only=True) as self.state:
                self.store = Store(self.ws.meta / "store")
                self.runner = Idle()
                graph = self.load().graph
                rebuilder = Rebuilder(self.ws, graph, self.state, self.store, dry_run=True)  # the shared cache unasked
                outcomes = Scheduler(graph, rebuilder, self.runner, Silent()).run(set(graph.steps))
                failures = self.state.failures()
        finally:
            self.state = None
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
        from buildsys.recipe import loading
        from buildsys.storage.safepath import remove

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
            with self._state() as state:
                recipes, _ = loading.load(ws.root, state, list(self.options.recipes), keep_going=True)
                names = [r.name for r in recipes]
                for name in names:
                    remove(ws.out / name)
                state.forget_recipes(names)
            return f"removed outputs of {', '.join(names) or 'nothing'} (the cache keeps their artifacts)"

    # -- the cache commands ---------------------------------------------------------

    def cache_stats(self, url: str | None):
        """`cache stats` of the local store, or of the shared cache `url`: (figures, their rendering)."""
        from buildsys.storage import cachegc

        ws = self.ws
        built = (ws.meta / "state.sqlite").exists()
        if url:
            digests = None  # what this workspace's current recipes use, when it has built them
            if built:
                with self._state() as state:
                    digests = cachegc.current_digests(state, self._current_steps(state)[0])
            return cachegc.stats_json(cachegc.shared_inventory(_existing_shared(url)), digests), cachegc.render_stats
        if not built:  # nothing built here: nothing to create either
            return cachegc.stats_json(cachegc.Inventory(str(ws.meta), "local", {}, {}), set()), cachegc.render_stats
        with self._state() as state:
            current, _ = self._current_steps(state)
            inv = cachegc.local_inventory(state, Store(ws.meta / "store"), current)
            result = cachegc.stats_json(inv, cachegc.current_digests(state, current))
        return result, cachegc.render_stats

    def collect(self, url: str | None, max_size: int | None, max_age: float | None, grace: float, dry_run: bool):
        """`cache gc` of the local store, or of the shared cache `url`: (a note or None, figures, their rendering)."""
        from buildsys.storage import cachegc

        if max_size is None and max_age is None:
            raise UsageError("cache gc needs --max-size SIZE or --max-age DAYS", hint="e.g. cache gc --max-size 10GiB")
        if min(max_age or 0, grace) < 0:
            raise UsageError(f"--max-age and --grace take 0 or more, found {max_age} and {grace}")
        ws = self.ws
        if url:
            shared = _existing_shared(url)
            result = cachegc.collect_shared(shared, max_size, max_age, grace, dry_run)
            return None, result, lambda d: cachegc.render_plan(d, shared.url)
        render = lambda d: cachegc.render_plan(d, str(ws.meta))  # noqa: E731
        if not (ws.meta / "state.sqlite").exists():  # nothing built here: nothing to create either
            empty = cachegc.Inventory(str(ws.meta), "local", {}, {})
            return None, cachegc.plan_json(cachegc.plan(empty, max_size, max_age, 0.0), dry_run), render
        # a build holds the lock for its whole run: neither sees the other half done
        with WorkspaceLock(ws.meta), self._state() as state:
            current, note = self._current_steps(state)
            result = cachegc.collect_local(state, Store(ws.meta / "store"), current, max_size, max_age, dry_run)
        return note, result, render


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
