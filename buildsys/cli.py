"""The `buildsys` command line.

Commands that do no model work (--help, validate, status, explain, graph and a
no-op build) must not import torch, onnx, onnxruntime or onnxsim; the heavy
libraries are only imported by step code running in worker processes.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_PARITY, EXIT_USAGE, EXIT_STEP, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _parser():
    """The argparse parser of every command.

    argparse is imported here, not at the top: a no-op `build` or `status` answered
    from the stat manifest never builds the parser (see main).
    """
    import argparse

    from buildsys import __version__

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # usage errors exit 2 with our format, not argparse's traceback-free default
            self.print_usage(sys.stderr)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USAGE)

    p = _Parser(prog="buildsys", description="Declarative builds of verified deployment artifacts.")
    p.add_argument("--version", action="version", version=f"buildsys {__version__}")
    p.add_argument("-C", dest="directory", default=".", metavar="DIR",
                   help="workspace root (holds recipes/ and out/); default: the current directory")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    b = sub.add_parser("build", help="bring artifacts up to date")
    b.add_argument("recipes", nargs="*", help="recipe names or paths (default: every recipe)")
    b.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="steps to run in parallel (default 1)")
    b.add_argument("-k", "--keep-going", action="store_true", help="go on past failures; skip only what depends on them")
    b.add_argument("--only", action="append", metavar="STEP",
                   help="build only steps of this name (export, parity, parity[fp32], engine, ...) and what they need")
    b.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    b.add_argument("--require-all", action="store_true", help="treat unavailable backends as failures")
    b.add_argument("--json", action="store_true", help="print one JSON object describing every step")
    b.add_argument("-v", "--verbose", action="store_true", help="also list steps that were up to date")
    b.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="kill a step that runs longer than this (default: one hour per step)")
    b.add_argument("--cache-max-size", type=_cache_size, metavar="SIZE",
                   help="after the build, trim the local store to this size (as `cache gc --max-size`)")
    _cache_options(b)
    _executor_options(b)

    s = sub.add_parser("status", help="each step: up to date, stale (and why), failed or unavailable")
    s.add_argument("recipes", nargs="*")
    s.add_argument("--json", action="store_true")

    e = sub.add_parser("explain", help="why a step would re-run: what changed, old → new")
    e.add_argument("target", metavar="RECIPE[:STEP]")

    g = sub.add_parser("graph", help="print the dependency graph")
    g.add_argument("recipes", nargs="*")
    g.add_argument("--format", choices=("mermaid", "dot", "text"), default="text")

    k = sub.add_parser("check", help="the CI gate: build through parity, write reports, exit 1 on a tolerance "
                                     "failure or a regression against the baseline")
    k.add_argument("recipes", nargs="*")
    k.add_argument("-j", "--jobs", type=int, default=1, metavar="N")
    k.add_argument("--baseline", type=Path, metavar="FILE", help="main's out/reports/parity.json to compare with")
    k.add_argument("--max-regression", type=float, default=2.0, metavar="FACTOR",
                   help="an error figure that grows more than this over the baseline fails (default 2.0; "
                        "a recipe's parity.max_regression wins)")
    k.add_argument("--junit", type=Path, metavar="FILE", help="also write the JUnit XML here")
    k.add_argument("--markdown", type=Path, metavar="FILE", help="also write the Markdown summary here")
    k.add_argument("-v", "--verbose", action="store_true")
    k.add_argument("--timeout", type=float, metavar="SECONDS", help="kill a step that runs longer than this")
    _cache_options(k)
    _executor_options(k)

    n = sub.add_parser("bench", help="latency table of every built artifact next to PyTorch eager")
    n.add_argument("recipe")
    n.add_argument("--threads", type=int, metavar="N", help="threads per runtime (default: every core)")
    n.add_argument("--no-build", action="store_true", help="measure what is built; do not bring it up to date")

    w = sub.add_parser("view", help="serve a built ONNX or .ort artifact in Netron on 127.0.0.1")
    w.add_argument("target", metavar="RECIPE[:ARTIFACT]",
                   help="artifact: a path under out/<recipe>/ or the step that built it (default: the simplified model)")
    w.add_argument("--no-browser", action="store_true", help="print the URL only (headless machines)")
    w.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: any free port; default 8080)")
    w.add_argument("--node", metavar="NAME", help="a node to look for (the first diverging node of a parity report)")

    v = sub.add_parser("validate", help="check recipes against the schema and semantic rules; nothing is built")
    v.add_argument("recipes", nargs="*")

    c = sub.add_parser("clean", help="remove build outputs (the cache keeps artifacts unless --cache)")
    c.add_argument("recipes", nargs="*")
    c.add_argument("--cache", action="store_true", help="also remove the artifact store and build state")

    a = sub.add_parser("cache", help="what the cache holds (stats) and trimming it (gc)")
    acts = a.add_subparsers(dest="cache_command", metavar="stats|gc", parser_class=_Parser)
    acts.required = True
    st = acts.add_parser("stats", help="entries, blobs, total size, size the current recipes use, oldest and "
                                       "newest use")
    gc = acts.add_parser("gc", help="remove least recently used entries and the blobs no entry names, "
                                    "until the cache fits")
    gc.add_argument("--max-size", type=_cache_size, metavar="SIZE", help="trim to this size (e.g. 10GiB)")
    gc.add_argument("--max-age", type=float, metavar="DAYS", help="also remove entries unused for this many days")
    gc.add_argument("--grace", type=float, default=60.0, metavar="MINUTES",
                    help="shared cache: never remove a blob younger than this (a build may be publishing it; "
                         "default 60)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    for q in (st, gc):
        q.add_argument("--cache", metavar="DIR_OR_URL",
                       help="a shared cache (a folder or an fsspec URL) instead of this workspace's local store")
        q.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _executor_options(p) -> None:
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="where steps run: local worker processes, or a Dask distributed cluster")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="the Dask scheduler (with --executor dask)")
    p.add_argument("--memory-limit", metavar="SIZE", type=_size,
                   help="cap each local worker's memory (e.g. 6GiB): a step that needs more fails, naming it, "
                        "instead of driving the machine into swap or the kernel's OOM killer")


def _size(text: str) -> int:
    import argparse

    from buildsys.recipe import parse_size

    try:
        value = parse_size(text)
    except (StopIteration, ArithmeticError, ValueError):
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 6GiB or 512MiB, found {text!r}")
    return value


def _cache_size(text: str) -> int:
    """A cache size: a byte count or a size like 10GiB; 0 keeps only what is in use."""
    import argparse

    from buildsys.recipe import parse_size

    try:
        value = int(text) if text.strip().isdigit() else parse_size(text)
    except (StopIteration, ArithmeticError, ValueError):
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a size like 10GiB or 500MiB, found {text!r}")
    return value


def _runner(ws, args):
    """Local persistent workers, or a Dask cluster meeting at the shared cache."""
    from buildsys.errors import UsageError

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.executor == "dask":
        if not args.scheduler:
            raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT")
        if not args.cache or args.cache_read_only:
            raise UsageError("--executor dask needs a writable --cache DIR_OR_URL",
                             hint="the shared cache is where the cluster's workers and this machine exchange artifacts")
        try:
            from buildsys.cluster import DaskRunner
        except ImportError:
            raise UsageError("--executor dask needs Dask", hint="pip install '.[cluster]'") from None
        try:
            return DaskRunner(args.scheduler, _shared(args).url, threads)
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler {args.scheduler}: {exc}") from None
    from buildsys.workers import WorkerPool

    return WorkerPool(args.jobs, threads, str(ws.root), memory_limit=getattr(args, "memory_limit", None))


def _cache_options(p) -> None:
    p.add_argument("--cache", metavar="DIR_OR_URL",
                   help="a shared cache behind the local store: a folder or an fsspec URL (s3://bucket/prefix)")
    p.add_argument("--cache-read-only", action="store_true",
                   help="read from the shared cache but never write to it (pull-request CI)")


class _PlainArgs:
    """What the parser makes of `[-C DIR] build|status [--json]`: all _fast_noop reads."""

    recipes: tuple[str, ...] = ()
    only = None
    require_all = dry_run = verbose = False

    def __init__(self, directory: str, command: str, as_json: bool):
        self.directory, self.command, self.json = directory, command, as_json


def _plain(argv: list[str]) -> _PlainArgs | None:
    """`argv` when it is exactly `[-C DIR] build|status [--json]`, else None (argparse decides)."""
    directory = "."
    if len(argv) >= 2 and argv[0] == "-C" and not argv[1].startswith("-"):
        directory, argv = argv[1], argv[2:]
    if not argv or argv[0] not in ("build", "status") or argv[1:] not in ([], ["--json"]):
        return None
    return _PlainArgs(directory, argv[0], len(argv) == 2)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    plain = _plain(argv)
    if plain is not None:  # the common no-op is answered before the parser is even built
        root = Path(plain.directory)
        if root.is_dir():
            answered = _fast_noop(root.resolve(), plain)
            if answered is not None:
                return answered
    args = _parser().parse_args(argv)
    root = Path(args.directory)
    if not root.is_dir():
        print(f"error: workspace {root} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    root = root.resolve()
    if plain is None:  # a plain command that missed above would only miss again
        answered = _fast_noop(root, args)
        if answered is not None:
            return answered
    from buildsys.errors import BuildsysError, RecipeError, storage_error

    try:
        return _COMMANDS[args.command](root, args)
    except RecipeError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except BuildsysError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the disk refused a write (read-only, full, not permitted); anything else is a bug
        failure = storage_error(exc)
        if failure is None:
            raise
        print(failure.render(), file=sys.stderr)
        return failure.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fast_noop(root: Path, args) -> int | None:
    """Answer a no-op `build` or an all-up-to-date `status` from the recorded no-op answer."""
    from buildsys.engine import noop

    meta = str(root / "out" / ".buildsys")
    if args.command == "build" and not args.dry_run and not args.verbose and not getattr(args, "cache_max_size", None):
        entry = noop.check(meta, noop.signature(args.recipes, args.only, args.require_all))
        if entry is None:
            return None
        _print_build_result(entry["steps"], entry["exit"], [], args.json)
        return entry["exit"]
    if args.command == "status":
        entry = noop.check(meta, noop.signature(args.recipes, None, False))
        if entry is None:
            return None
        _print_status([(s["id"], *_status_of_json(s)) for s in entry["steps"]], args.json)
        return EXIT_OK
    return None


def _status_of_json(step: dict) -> tuple[str, str]:
    if step["state"] == "unavailable":
        return "unavailable", step["reason"]
    if step["state"] == "skipped":
        return "blocked", step["reason"]
    if step.get("passed") is False:
        return "failed", step.get("summary", "parity failed")
    return "up to date", ""


def _open(root: Path):
    from buildsys.build import Workspace
    from buildsys.state import State
    from buildsys.store import Store

    ws = Workspace(root)
    ws.refuse_links()
    state = State(ws.meta)
    return ws, state, Store(ws.meta / "store")


def _graph(root: Path, state, selectors: list[str], keep_going: bool = False):
    from buildsys import loading
    from buildsys.resolve import resolve

    recipes, problems = loading.load(root, state, selectors, keep_going)
    return recipes, problems, resolve(recipes, root, state.reads if state is not None else None)


def cmd_build(root: Path, args) -> int:
    from buildsys.errors import UsageError

    if args.jobs < 1:
        raise UsageError(f"-j takes a positive number of jobs, found {args.jobs}")
    with _building(root, args) as (ws, state, store, runner):
        graph, build, outcomes, problems = _run_build(ws, state, store, runner, args)
        code = _exit_code(outcomes, args.require_all)
        if problems:
            code = max(code, EXIT_USAGE) if code != EXIT_STEP else code
        _print_build_result([o.as_json() for o in outcomes], code, [pr.render() for pr in problems], args.json)
        if not args.dry_run and not problems and code != EXIT_STEP:
            # Under the lock: a build that starts once it is released (and forgets every
            # stored answer) must not find an answer recorded halfway through its own changes.
            _record_noop(ws, state.reads, outcomes, code, recipes=args.recipes, only=args.only,
                         require_all=args.require_all)
        if args.cache_max_size is not None and not args.dry_run:
            _trim_after_build(ws, state, store, args.cache_max_size)
    return code


def _trim_after_build(ws, state, store, max_size: int) -> None:
    """`build --cache-max-size`: the collection of `cache gc`, under the build's own lock.

    Every recipe's steps are current, not only the ones this build selected.
    """
    from buildsys import cachegc

    current, why = cachegc.current_steps(ws.root, state)
    if why:
        print(f"note: {why}; the last build of every step is kept", file=sys.stderr)
    done = cachegc.collect_local(state, store, current, max_size, None)
    print(cachegc.render_plan(done, str(ws.meta)), file=sys.stderr)


def cmd_cache(root: Path, args) -> int:
    """`cache stats` and `cache gc`, on the local store or on a shared cache."""
    from buildsys.build import Workspace
    from buildsys.errors import UsageError

    gc = args.cache_command == "gc"
    if gc and args.max_size is None and args.max_age is None:
        raise UsageError("cache gc needs --max-size SIZE or --max-age DAYS", hint="e.g. cache gc --max-size 10GiB")
    if gc and min(args.max_age or 0, args.grace) < 0:
        raise UsageError(f"--max-age and --grace take 0 or more, found {args.max_age} and {args.grace}")
    ws = Workspace(root)
    result, render = (_cache_shared if args.cache else _cache_local)(ws, args, gc)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return EXIT_OK


def _cache_shared(ws, args, gc: bool):
    from buildsys import cachegc
    from buildsys.state import State

    shared = _open_shared(args.cache)
    if gc:
        result = cachegc.collect_shared(shared, args.max_size, args.max_age, args.grace, args.dry_run)
        return result, lambda d: cachegc.render_plan(d, shared.url)
    digests = None  # what this workspace's current recipes use, when it has built them
    if (ws.meta / "state.sqlite").exists():
        state = State(ws.meta)
        digests = cachegc.current_digests(state, cachegc.current_steps(ws.root, state)[0])
        state.close()
    return cachegc.stats_json(cachegc.shared_inventory(shared), digests), cachegc.render_stats


def _cache_local(ws, args, gc: bool):
    from buildsys import cachegc
    from buildsys.state import State, WorkspaceLock
    from buildsys.store import Store

    render = (lambda d: cachegc.render_plan(d, str(ws.meta))) if gc else cachegc.render_stats
    if not (ws.meta / "state.sqlite").exists():  # nothing built here: nothing to create either
        empty = cachegc.Inventory(str(ws.meta), "local", {}, {})
        if gc:
            return cachegc.plan_json(cachegc.plan(empty, args.max_size, args.max_age, 0.0), args.dry_run), render
        return cachegc.stats_json(empty, set()), render
    if not gc:
        state = State(ws.meta)
        current, _ = cachegc.current_steps(ws.root, state)
        inv = cachegc.local_inventory(state, Store(ws.meta / "store"), current)
        result = cachegc.stats_json(inv, cachegc.current_digests(state, current))
        state.close()
        return result, render
    with WorkspaceLock(ws.meta):  # a build holds it for its whole run: neither sees the other half done
        state = State(ws.meta)
        current, why = cachegc.current_steps(ws.root, state)
        if why:
            print(f"note: {why}; the last build of every step is kept", file=sys.stderr)
        result = cachegc.collect_local(state, Store(ws.meta / "store"), current, args.max_size, args.max_age,
                                       args.dry_run)
        state.close()
    return result, render


def _open_shared(url: str):
    from buildsys.errors import UsageError
    from buildsys.sharedcache import open_cache

    if "://" not in url and not Path(url).is_dir():
        raise UsageError(f"--cache {url}: no such folder", hint="give the folder or URL that builds use as --cache")
    try:
        return open_cache(url, read_only=False)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"--cache {url}: {exc}", hint="install the fsspec backend for this URL (e.g. s3fs)") from None


@contextlib.contextmanager
def _building(root: Path, args):
    """A locked workspace with its state, store and runner for one build; cleaned up on any exit.

    On Ctrl-C or SIGTERM the running steps are killed and their scratch removed,
    so nothing half-written is recorded; the interrupt then reaches main (exit 130).
    """
    import shutil

    from buildsys.build import Workspace
    from buildsys.engine import noop
    from buildsys.state import State, WorkspaceLock
    from buildsys.store import Store

    ws = Workspace(root)
    ws.refuse_links()
    runner = _runner(ws, args)
    state = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with WorkspaceLock(ws.meta):
            # Only under the lock: the build we waited for may have been `clean --cache`,
            # which deletes the database a state opened earlier would keep writing to.
            state = State(ws.meta)
            if not getattr(args, "dry_run", False):
                noop.forget(str(ws.meta))
                runner.prestart()
            yield ws, state, Store(ws.meta / "store"), runner
    except KeyboardInterrupt:
        runner.shutdown()
        shutil.rmtree(ws.tmp, ignore_errors=True)
        print("interrupted: running steps were stopped; nothing they wrote was recorded", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        runner.shutdown()
        if state is not None:
            state.close(flush=sys.exc_info()[0] is None)  # after a failure, report that one, not a second


def _shared(args):
    from buildsys.sharedcache import open_cache

    return open_cache(args.cache, args.cache_read_only)


def _run_build(ws, state, store, runner, args):
    from buildsys.build import Build, select
    from buildsys.errors import UsageError
    from buildsys.progress import LiveReporter, PlainReporter

    recipes, problems, graph = _graph(ws.root, state, args.recipes, args.keep_going)
    for pr in problems:
        print(f"error: {pr.render()}", file=sys.stderr)
    selected = select(graph, args.only)
    if args.only and not selected:
        raise UsageError(f"--only {', '.join(args.only)} matches no step",
                         hint="step names: export, simplify, reference, parity, parity[fp32], engine, ...")
    stream = sys.stderr
    reporter = (LiveReporter if stream.isatty() and not args.json else PlainReporter)(stream, args.verbose)
    build = Build(ws, graph, state, store, runner, reporter, keep_going=args.keep_going, dry_run=args.dry_run,
                  timeout=args.timeout, shared=_shared(args))
    try:
        outcomes = build.run(selected)
    finally:
        reporter.close()
    return graph, build, outcomes, problems


def _print_build_result(steps: list[dict], code: int, problems: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"steps": steps, "exit": code, "problems": problems}, indent=1))
        return
    counts: dict[str, int] = {}
    for s in steps:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{len(steps)} steps: {summary or 'nothing to do'}", file=sys.stderr)
    parity_failed = [s["id"] for s in steps if s.get("passed") is False]
    if parity_failed:
        print(f"parity failed: {', '.join(parity_failed)}", file=sys.stderr)


def _record_noop(ws, reads, outcomes, code: int, recipes: list[str], only: list[str] | None,
                 require_all: bool) -> None:
    """Remember what a repeat of this build would print, stamped by everything the build read."""
    from buildsys.engine import noop

    noop.record_build(os.fspath(ws.meta), noop.signature(recipes, only, require_all), reads, outcomes, code)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _exit_code(outcomes, require_all: bool) -> int:
    if any(o.state == "failed" for o in outcomes):
        return EXIT_STEP
    if require_all and any(o.state == "unavailable" for o in outcomes):
        return EXIT_STEP
    if any(o.verdict is not None and not o.verdict.get("passed") for o in outcomes):
        return EXIT_PARITY
    return EXIT_OK


def _plan(root: Path, selectors: list[str]):
    """What a build would do now, without running or writing anything."""
    from buildsys.build import Build
    from buildsys.workers import InlineRunner

    ws, state, store = _open(root)
    recipes, _, graph = _graph(root, state, selectors)
    build = Build(ws, graph, state, store, InlineRunner(), _Silent(), dry_run=True)
    outcomes = build.run(set(graph.steps))
    failures = state.failures()
    rows = []
    for o in outcomes:
        state_name, detail = _status_of(o, failures.get(o.step))
        rows.append((o.step, state_name, detail))
    return rows, graph, build


def _status_of(o, failure) -> tuple[str, str]:
    if o.state in ("cached", "cutoff"):
        if o.verdict is not None and not o.verdict.get("passed"):
            return "failed", o.verdict.get("summary", "parity failed")
        return "up to date", ""
    if o.state == "unavailable":
        return "unavailable", o.reason
    if o.state == "skipped":
        return "blocked", o.reason
    if failure is not None and failure[0] == o.key:
        return "failed", failure[1].splitlines()[0] + f" (log: out/{failure[2]})"
    return "stale", o.reason


class _Silent:
    def started(self, step) -> None:
        pass

    def finished(self, outcome) -> None:
        pass


def cmd_status(root: Path, args) -> int:
    rows, _, _ = _plan(root, args.recipes)
    _print_status(rows, args.json)
    return EXIT_OK


def _print_status(rows: list[tuple[str, str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"steps": [{"id": s, "status": st, "reason": d} for s, st, d in rows]}, indent=1))
        return
    width = max((len(s) for s, _, _ in rows), default=10)
    lines = [f"{sid:<{width}}  {st:<11}  {detail}".rstrip() for sid, st, detail in rows]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")  # one write: hundreds of recipes print thousands of lines


def cmd_explain(root: Path, args) -> int:
    recipe, _, step_name = args.target.partition(":")
    rows, graph, build = _plan(root, [recipe])
    wanted = [r for r in rows if not step_name or r[0] == f"{recipe}:{step_name}"
              or graph.steps[r[0]].family == step_name]
    if not wanted:
        from buildsys.errors import UsageError

        names = ", ".join(s.name for s in graph.steps.values() if s.recipe == recipe)
        raise UsageError(f"{args.target}: no such step", hint=f"steps of {recipe}: {names}")
    for sid, st, detail in wanted:
        o = build.outcomes[sid]
        if st == "up to date":
            print(f"{sid}: up to date")
        elif st == "stale":
            print(f"{sid}: would re-run because")
            for reason in detail.split("; "):
                print(f"  - {reason}")
        else:
            print(f"{sid}: {st}: {detail}")
        if o.verdict is not None:
            print(f"  {o.verdict.get('summary', '')}")
    return EXIT_OK


def cmd_graph(root: Path, args) -> int:
    _, _, graph = _graph(root, None, args.recipes)
    steps = graph.steps.values()
    if args.format == "text":
        for s in steps:
            ups = ", ".join(sorted(s.upstream))
            print(f"{s.id}" + (f"  <- {ups}" if ups else ""))
    elif args.format == "mermaid":
        print("flowchart LR")
        ids = {s.id: f"s{i}" for i, s in enumerate(steps)}
        for s in steps:
            print(f'  {ids[s.id]}["{s.id}"]')
        for s in steps:
            for ref in s.inputs.values():
                print(f"  {ids[ref.partition('#')[0]]} --> {ids[s.id]}")
            for gate in s.gates:
                print(f"  {ids[gate]} -. gate .-> {ids[s.id]}")
    else:
        print("digraph buildsys {\n  rankdir=LR;")
        for s in steps:
            for ref in s.inputs.values():
                print(f'  "{ref.partition("#")[0]}" -> "{s.id}";')
            for gate in s.gates:
                print(f'  "{gate}" -> "{s.id}" [style=dashed, label=gate];')
        print("}")
    return EXIT_OK


def cmd_check(root: Path, args) -> int:
    """Build every parity check (engines are not needed to judge parity), then the reports."""
    from buildsys.build import Build
    from buildsys.errors import UsageError
    from buildsys.progress import LiveReporter, PlainReporter

    if args.jobs < 1:
        raise UsageError(f"-j takes a positive number of jobs, found {args.jobs}")
    if args.max_regression <= 1:
        raise UsageError(f"--max-regression must be greater than 1, found {args.max_regression}")
    if args.baseline is not None and not args.baseline.is_file():
        raise UsageError(f"--baseline {args.baseline}: no such file",
                         hint="download main's out/reports/parity.json first (see .github/workflows/parity.yml)")
    with _building(root, args) as (ws, state, store, runner):
        recipes, problems, graph = _graph(root, state, args.recipes, keep_going=True)
        for pr in problems:
            print(f"error: {pr.render()}", file=sys.stderr)
        checks = [s for s in graph.steps.values() if s.family == "parity" or "result" in s.outputs]
        stream = sys.stderr
        reporter = (LiveReporter if stream.isatty() else PlainReporter)(stream, args.verbose)
        build = Build(ws, graph, state, store, runner, reporter, keep_going=True, timeout=args.timeout,
                      shared=_shared(args))
        try:
            outcomes = {o.step: o for o in build.run(graph.closure({s.id for s in checks}))}
        finally:
            reporter.close()
    from buildsys.reports import gather_meta, with_export_warnings, write_reports

    entries = [_report_entry(ws, graph, step, outcomes[step.id]) for step in checks]
    entries = with_export_warnings(entries, outcomes)
    factors = {r.name: r.parity.max_regression for r in recipes if r.parity.max_regression}
    besides = EXIT_STEP if any(o.state == "failed" for o in outcomes.values()) else (EXIT_USAGE if problems else 0)
    summary = write_reports(ws.out / "reports", entries, gather_meta(), baseline=args.baseline,
                            max_regression=args.max_regression, markdown_path=args.markdown,
                            junit_path=args.junit, recipe_factors=factors, command_status=besides)
    print(summary.render(), file=sys.stderr)
    print(f"reports: {ws.out / 'reports'}", file=sys.stderr)
    return summary.exit_status


def _report_entry(ws, graph, step, outcome):
    from buildsys.reports import ReportInput, recipe_digest

    r = graph.recipes[step.recipe]
    check = step.name[step.name.index("[") + 1:-1] if "[" in step.name else step.name
    done = outcome.state in ("ran", "cached", "cutoff")
    result = ws.out / step.outputs["result"] if done else None
    calib = _calibration_record(ws, r) if check.endswith("int8") else {}
    divergence = None
    if done and check.endswith("int8") and outcome.verdict and not outcome.verdict.get("passed"):
        divergence = _divergence(ws, r, step, graph)
    return ReportInput(recipe=r.name, recipe_file=r.file, recipe_digest=recipe_digest(r), check=check,
                       result=result, state=outcome.state, reason=outcome.message or outcome.reason,
                       outputs=tuple(o.name for o in r.outputs), random_calibration=bool(calib.get("random_data")),
                       qat=bool(calib.get("qat")), divergence=divergence, description=r.description)


def _calibration_record(ws, r) -> dict:
    """calib.json as the calibrate step wrote it (QAT, random data or not): the reports say what it says."""
    try:
        return json.loads((ws.out / r.name / "calib.json").read_text())
    except (OSError, ValueError):
        return {}


def _divergence(ws, r, step, graph) -> dict:
    """Where the quantized model strays from the fp32 model, on the sample that failed."""
    from buildsys.diverge import diagnose

    fp32 = ws.out / r.name / ("model.sim.onnx" if r.simplify.enabled else "model.onnx")
    source, _, output = step.inputs["model"].partition("#")  # the model the check judged (fallback's, if any)
    candidate = ws.out / graph.steps[source].outputs[output]
    return diagnose(fp32, candidate, ws.out / step.outputs["result"], ws.out / r.name / "reference.npz")


def cmd_bench(root: Path, args) -> int:
    """Bring the recipe's artifacts up to date, then time each of them."""
    from buildsys import __version__, toolchain
    from buildsys.bench import bench_recipe, render, write_json

    if not args.no_build:
        build_args = _parser().parse_args(["-C", str(root), "build", args.recipe])
        code = cmd_build(root, build_args)
        if code not in (EXIT_OK, EXIT_PARITY):
            return code
    recipes, _, _ = _graph(root, None, [args.recipe])
    recipe = recipes[0]
    rows = bench_recipe(recipe, root, root / "out", args.threads)
    print(render(recipe.name, rows))
    target = root / "out" / recipe.name / "bench.json"
    write_json(target, recipe.name, rows, {"buildsys": __version__, "cpu": toolchain.cpu(),
                                           "threads": args.threads or os.cpu_count(),
                                           "tools": toolchain.versions(("torch", "onnxruntime", "numpy"))})
    print(f"written: {target}", file=sys.stderr)
    return EXIT_OK


def cmd_view(root: Path, args) -> int:
    """Serve one artifact in Netron until interrupted."""
    from buildsys import view
    from buildsys.errors import UsageError

    recipe, _, artifact = args.target.partition(":")
    recipes, _, graph = _graph(root, None, [recipe])
    rel = view.choose(graph, recipes[0].name, artifact or None)
    path = root / "out" / rel
    if not path.is_file():
        raise UsageError(f"out/{rel} is not built", hint=f"run buildsys build {recipes[0].name}")
    if args.node and path.suffix == ".onnx":
        view.check_node(path, args.node)
    url = view.serve(path, args.port, not args.no_browser)
    print(f"serving out/{rel} at {url}", flush=True)
    if args.node:
        print(f"node {args.node}: find it with Ctrl+F in the view", flush=True)
    print("press Ctrl+C to stop", flush=True)
    view.wait()
    return EXIT_OK


def cmd_validate(root: Path, args) -> int:
    from buildsys import loading

    from buildsys.errors import RecipeError

    recipes, problems = loading.load(root, None, args.recipes, keep_going=True)
    from buildsys.resolve import resolve_recipe

    for r in recipes:  # what only the workspace can tell: the files a data glob finds today
        try:
            resolve_recipe(r, root)
        except RecipeError as exc:
            problems += exc.problems
    if problems:
        raise RecipeError(problems)
    for r in recipes:
        print(f"ok  {r.file}  ({r.name}: {len(r.inputs)} inputs, {len(r.targets)} targets)")
    return EXIT_OK


def cmd_clean(root: Path, args) -> int:
    from buildsys.build import Workspace
    from buildsys.safepath import remove
    from buildsys.state import State, WorkspaceLock

    ws = Workspace(root)
    if not ws.out.exists():
        return EXIT_OK
    ws.refuse_links()
    with WorkspaceLock(ws.meta):
        if args.cache and not args.recipes:
            # A link under out/ is removed itself; what it points to is never touched.
            for child in ws.out.iterdir():
                if child.name != ".buildsys":
                    remove(child)
            for child in ws.meta.iterdir():
                if child.name != "lock":
                    remove(child)
            print(f"removed {ws.out} and the build cache", file=sys.stderr)
            return EXIT_OK
        state = State(ws.meta)
        from buildsys import loading

        recipes, _ = loading.load(root, state, args.recipes, keep_going=True)
        names = [r.name for r in recipes]
        for name in names:
            remove(ws.out / name)
        steps = [s for (s,) in state.db.execute("SELECT step FROM traces")]
        state.forget_traces([s for s in steps if s.partition(":")[0] in names])
        state.close()
        print(f"removed outputs of {', '.join(names) or 'nothing'} (the cache keeps their artifacts)",
              file=sys.stderr)
    return EXIT_OK


_COMMANDS = {
    "build": cmd_build,
    "status": cmd_status,
    "explain": cmd_explain,
    "graph": cmd_graph,
    "check": cmd_check,
    "bench": cmd_bench,
    "validate": cmd_validate,
    "view": cmd_view,
    "clean": cmd_clean,
    "cache": cmd_cache,
}
