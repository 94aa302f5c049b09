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

    v = sub.add_parser("validate", help="check recipes against the schema and semantic rules; nothing is built")
    v.add_argument("recipes", nargs="*")

    c = sub.add_parser("clean", help="remove build outputs (the cache keeps artifacts unless --cache)")
    c.add_argument("recipes", nargs="*")
    c.add_argument("--cache", action="store_true", help="also remove the artifact store and build state")
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
    from buildsys.errors import BuildsysError, RecipeError

    try:
        return _COMMANDS[args.command](root, args)
    except RecipeError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except BuildsysError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _signature(recipes: list[str], only: list[str] | None, require_all: bool) -> str:
    return json.dumps([sorted(recipes), sorted(only or []), require_all])


def _fast_noop(root: Path, args) -> int | None:
    """Answer a no-op `build` or an all-up-to-date `status` from the stat manifest."""
    from buildsys import fastpath

    meta = str(root / "out" / ".buildsys")
    if args.command == "build" and not args.dry_run and not args.verbose:
        entry = fastpath.check(meta, _signature(args.recipes, args.only, args.require_all))
        if entry is None:
            return None
        _print_build_result(entry["steps"], entry["exit"], [], args.json)
        return entry["exit"]
    if args.command == "status":
        entry = fastpath.check(meta, _signature(args.recipes, None, False))
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
    state = State(ws.meta)
    return ws, state, Store(ws.meta / "store")


def _graph(root: Path, state, selectors: list[str], keep_going: bool = False):
    from buildsys import loading
    from buildsys.resolve import resolve

    recipes, problems = loading.load(root, state, selectors, keep_going)
    return recipes, problems, resolve(recipes, root)


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
            _record_noop(ws, graph, outcomes, _final_traces(build, state, outcomes),
                         _signature(args.recipes, args.only, args.require_all), code)
    return code


@contextlib.contextmanager
def _building(root: Path, args):
    """A locked workspace with its state, store and runner for one build; cleaned up on any exit.

    On Ctrl-C or SIGTERM the running steps are killed and their scratch removed,
    so nothing half-written is recorded; the interrupt then reaches main (exit 130).
    """
    import shutil

    from buildsys import fastpath
    from buildsys.build import Workspace
    from buildsys.state import State, WorkspaceLock
    from buildsys.store import Store

    ws = Workspace(root)
    runner = _runner(ws, args)
    state = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with WorkspaceLock(ws.meta):
            # Only under the lock: the build we waited for may have been `clean --cache`,
            # which deletes the database a state opened earlier would keep writing to.
            state = State(ws.meta)
            if not getattr(args, "dry_run", False):
                fastpath.forget(str(ws.meta))
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
            state.close()


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


def _final_traces(build, state, outcomes) -> dict:
    """The trace each up-to-date step has now, by step id.

    A step decided "cached" from the trace the rebuilder read at the start (its
    outcome carries that trace's very outputs) still has it; only the steps that
    ran or were restored are read back from the state.
    """
    before = build.rebuilder.traces
    traces, changed = {}, []
    for o in outcomes:
        if o.state not in ("ran", "cached", "cutoff"):
            continue
        trace = before.get(o.step) if o.state != "ran" else None
        if trace is not None and o.outputs is not None and trace.outputs is o.outputs:
            traces[o.step] = trace
        else:
            changed.append(o.step)
    if changed:
        traces.update(state.traces(changed))
    return traces


def _record_noop(ws, graph, outcomes, traces, signature: str, code: int) -> None:
    """Remember what a repeat of this build would print, keyed by the stats of all it reads."""
    from buildsys import fastpath
    from buildsys.loading import SCHEMA

    join, dirname = os.path.join, os.path.dirname
    root, out, meta = os.fspath(ws.root), os.fspath(ws.out), os.fspath(ws.meta)
    store = join(meta, "store")
    files = {join(root, "recipes"), str(SCHEMA)}
    for r in graph.recipes.values():
        files.update(join(root, src) for src in r.sources)
        files.update(_data_folders(root, r))
    steps = []
    for o in outcomes:
        step = graph.steps[o.step]
        for rel in step.files.values():
            # the folder too: a file added beside calibration data changes what the glob finds
            path = join(root, rel)
            files.add(path)
            files.add(dirname(path))
        if o.state in ("ran", "cached", "cutoff"):
            trace = traces.get(o.step)
            if trace is None:
                return
            files.update(join(root, rel) for rel in trace.deps.get("files", {}))
            for name, entries in trace.outputs.items():
                folder = dirname(join(out, step.outputs[name]))
                for rel, digest, _ in entries:
                    files.add(join(folder, rel))
                    files.add(f"{store}/{digest[:2]}/{digest}")
            noop = {"id": o.step, "state": "cached", "reason": "up to date", "seconds": 0.0}
            if o.verdict is not None:
                noop["passed"] = bool(o.verdict.get("passed"))
                noop["summary"] = o.verdict.get("summary", "")
            steps.append(noop)
        elif o.state in ("unavailable", "skipped"):
            steps.append(o.as_json())
        else:
            return
    fastpath.record(meta, signature, files, {"steps": steps, "exit": code})


def _data_folders(root: str, recipe) -> set[str]:
    """Every folder whose new files a recipe's data would take in: npy and calibration globs, images folders.

    A glob's are all the folders it can reach, also those that hold no match yet:
    a file added to one of them moves that folder's stamp, not its parent's.
    """
    from buildsys import fastpath

    found: set[str] = set()
    for inp in recipe.inputs:
        if inp.data is not None and inp.data.kind == "npy" and inp.data.path:
            found.update(fastpath.glob_folders(root, inp.data.path))
    data = recipe.calibration.data if recipe.calibration is not None else None
    if data is not None and data.path:
        if data.kind == "npy":
            found.update(fastpath.glob_folders(root, data.path))
        elif data.kind == "images":  # the folder's own files, no sub-folders
            found.add(os.path.join(root, data.path))
    return found


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
    from buildsys.reports import gather_meta, write_reports

    entries = [_report_entry(ws, graph, step, outcomes[step.id]) for step in checks]
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
    random_data = check.endswith("int8") and r.calibration is not None and \
        r.calibration.data.kind in ("uniform", "normal", "randint")
    divergence = None
    if done and check.endswith("int8") and outcome.verdict and not outcome.verdict.get("passed"):
        divergence = _divergence(ws, r, step)
    return ReportInput(recipe=r.name, recipe_file=r.file, recipe_digest=recipe_digest(r), check=check,
                       result=result, state=outcome.state, reason=outcome.message or outcome.reason,
                       outputs=tuple(o.name for o in r.outputs), random_calibration=random_data,
                       divergence=divergence, description=r.description)


def _divergence(ws, r, step) -> dict:
    """The first node of the quantized model that strays from the fp32 model."""
    from buildsys.diverge import DivergenceError, first_divergence
    from buildsys.steps.reference import read_reference

    fp32 = ws.out / r.name / ("model.sim.onnx" if r.simplify.enabled else "model.onnx")
    candidate = ws.out / r.name / ("model.int8.tensorrt.onnx" if "tensorrt" in step.name else "model.int8.onnx")
    manifest, arrays = read_reference(ws.out / r.name / "reference.npz")
    entry = next((e for e in manifest if e["point"] == "opt"), manifest[0])
    feeds = {name: arrays[key] for name, key in entry["inputs"].items()}
    tol = r.tolerances["int8"]
    try:
        return first_divergence(fp32, candidate, feeds, tol.atol or 0.0, tol.rtol or 0.0, tol.min_cosine)
    except DivergenceError as exc:
        return {"error": exc.message}


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


def cmd_validate(root: Path, args) -> int:
    from buildsys import loading

    from buildsys.errors import RecipeError

    recipes, problems = loading.load(root, None, args.recipes, keep_going=True)
    if problems:
        raise RecipeError(problems)
    for r in recipes:
        print(f"ok  {r.file}  ({r.name}: {len(r.inputs)} inputs, {len(r.targets)} targets)")
    return EXIT_OK


def cmd_clean(root: Path, args) -> int:
    import shutil

    from buildsys.build import Workspace
    from buildsys.state import State, WorkspaceLock

    ws = Workspace(root)
    if not ws.out.exists():
        return EXIT_OK
    with WorkspaceLock(ws.meta):
        if args.cache and not args.recipes:
            for child in ws.out.iterdir():
                if child.name != ".buildsys":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            for child in ws.meta.iterdir():
                if child.name != "lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            print(f"removed {ws.out} and the build cache", file=sys.stderr)
            return EXIT_OK
        state = State(ws.meta)
        from buildsys import loading

        recipes, _ = loading.load(root, state, args.recipes, keep_going=True)
        names = [r.name for r in recipes]
        for name in names:
            shutil.rmtree(ws.out / name, ignore_errors=True)
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
    "clean": cmd_clean,
}
