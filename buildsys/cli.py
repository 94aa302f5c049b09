"""The `buildsys` command line: parse, build the options, call the engine's session, print, exit.

Commands that do no model work (--help, validate, status, explain, graph and a
no-op build) must not import torch, onnx, onnxruntime or onnxsim; the heavy
libraries are only imported by step code running in worker processes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from buildsys.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARITY, EXIT_STEP, EXIT_USAGE


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

    sub.add_parser("doctor", help="the GPU, driver and CUDA, and whether torch, ONNX Runtime and TensorRT run on it")

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
    from buildsys.engine.status import status_word

    return status_word(step["state"], step["reason"], step if "passed" in step else None)


def _load(root: Path, selectors: list[str]):
    """The selected recipes and their graph, read without the build state (graph, bench, view)."""
    from buildsys.engine.session import BuildOptions, Session

    return Session(root, BuildOptions(recipes=tuple(selectors))).load()


def _options(args):
    """The options every building command shares: recipes, jobs, timeout, caches, executor."""
    from buildsys.engine.session import BuildOptions

    return BuildOptions(recipes=tuple(args.recipes), jobs=args.jobs, timeout=args.timeout, cache=args.cache,
                        cache_read_only=args.cache_read_only, executor=args.executor, scheduler=args.scheduler,
                        memory_limit=args.memory_limit)


def _reporter(verbose: bool, live: bool = True):
    from buildsys.progress import LiveReporter, PlainReporter

    stream = sys.stderr
    return (LiveReporter if live and stream.isatty() else PlainReporter)(stream, verbose)


def _print_problems(problems) -> None:
    for pr in problems:
        print(f"error: {pr.render()}", file=sys.stderr)


def cmd_build(root: Path, args) -> int:
    from dataclasses import replace

    options = replace(_options(args), keep_going=args.keep_going, only=tuple(args.only or ()),
                      dry_run=args.dry_run, require_all=args.require_all)
    return _build(root, options, args.json, args.verbose, args.cache_max_size)


def _build(root: Path, options, as_json: bool, verbose: bool, cache_max_size: int | None) -> int:
    from buildsys.engine.session import Session
    from buildsys.engine.status import exit_status

    session = Session(root, options)
    with session.opened():
        loaded = session.load()
        _print_problems(loaded.problems)
        selected = session.selection(loaded.graph)
        reporter = _reporter(verbose, live=not as_json)
        try:
            outcomes = session.build(loaded.graph, selected, reporter)
        finally:
            reporter.close()
        code = exit_status([(o.state, o.verdict) for o in outcomes], options.require_all, bool(loaded.problems))
        _print_build_result([o.as_json() for o in outcomes], code, [pr.render() for pr in loaded.problems], as_json)
        if not options.dry_run and not loaded.problems and code != EXIT_STEP:
            session.record_noop(outcomes, code)
        if cache_max_size is not None and not options.dry_run:
            note, plan = session.trim(cache_max_size)
            if note:
                print(note, file=sys.stderr)
            print(plan, file=sys.stderr)
    return code


def cmd_cache(root: Path, args) -> int:
    """`cache stats` and `cache gc`, on the local store or on a shared cache."""
    from buildsys.engine.session import Session
    from buildsys.errors import UsageError

    gc = args.cache_command == "gc"
    if gc and args.max_size is None and args.max_age is None:
        raise UsageError("cache gc needs --max-size SIZE or --max-age DAYS", hint="e.g. cache gc --max-size 10GiB")
    if gc and min(args.max_age or 0, args.grace) < 0:
        raise UsageError(f"--max-age and --grace take 0 or more, found {args.max_age} and {args.grace}")
    session = Session(root)
    if gc:
        note, result, render = session.collect(args.cache, args.max_size, args.max_age, args.grace, args.dry_run)
        if note:
            print(note, file=sys.stderr)
    else:
        result, render = session.cache_stats(args.cache)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return EXIT_OK


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


def cmd_status(root: Path, args) -> int:
    from buildsys.engine.session import BuildOptions, Session

    _print_status(Session(root, BuildOptions(recipes=tuple(args.recipes))).plan().rows, args.json)
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
    from buildsys.engine.session import BuildOptions, Session

    recipe, _, step_name = args.target.partition(":")
    plan = Session(root, BuildOptions(recipes=(recipe,))).plan()
    graph = plan.graph
    wanted = [r for r in plan.rows if not step_name or r[0] == f"{recipe}:{step_name}"
              or graph.steps[r[0]].family == step_name]
    if not wanted:
        from buildsys.errors import UsageError

        names = ", ".join(s.name for s in graph.steps.values() if s.recipe == recipe)
        raise UsageError(f"{args.target}: no such step", hint=f"steps of {recipe}: {names}")
    for sid, st, detail in wanted:
        o = plan.outcomes[sid]
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
    graph = _load(root, args.recipes).graph
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
    from dataclasses import replace

    from buildsys.engine.session import Session
    from buildsys.errors import UsageError
    from buildsys.reports import gate, gather_meta, with_export_warnings, write_reports

    options = replace(_options(args), keep_going=True)
    if args.max_regression <= 1:
        raise UsageError(f"--max-regression must be greater than 1, found {args.max_regression}")
    if args.baseline is not None and not args.baseline.is_file():
        raise UsageError(f"--baseline {args.baseline}: no such file",
                         hint="download main's out/reports/parity.json first (see .github/workflows/parity.yml)")
    session = Session(root, options)
    with session.opened():
        loaded = session.load()
        _print_problems(loaded.problems)
        graph = loaded.graph
        checks = gate.checks(graph)
        reporter = _reporter(args.verbose)
        try:
            built = session.build(graph, graph.closure({s.id for s in checks}), reporter)
        finally:
            reporter.close()
    outcomes = {o.step: o for o in built}
    out = session.ws.out
    entries = [gate.report_entry(out, graph, step, outcomes[step.id].state,
                                 outcomes[step.id].message or outcomes[step.id].reason, outcomes[step.id].verdict)
               for step in checks]
    entries = with_export_warnings(entries, outcomes)
    factors = {r.name: r.parity.max_regression for r in loaded.recipes if r.parity.max_regression}
    failed = any(o.state == "failed" for o in outcomes.values())
    besides = EXIT_STEP if failed else (EXIT_USAGE if loaded.problems else EXIT_OK)
    summary = write_reports(out / "reports", entries, gather_meta(), baseline=args.baseline,
                            max_regression=args.max_regression, markdown_path=args.markdown,
                            junit_path=args.junit, recipe_factors=factors, command_status=besides)
    print(summary.render(), file=sys.stderr)
    print(f"reports: {out / 'reports'}", file=sys.stderr)
    return summary.exit_status


def cmd_bench(root: Path, args) -> int:
    """Bring the recipe's artifacts up to date, then time each of them."""
    from buildsys import __version__, gpu, toolchain
    from buildsys.bench import bench_recipe, render, write_json

    if not args.no_build:
        from buildsys.engine.session import BuildOptions

        code = _build(root, BuildOptions(recipes=(args.recipe,)), as_json=False, verbose=False, cache_max_size=None)
        if code not in (EXIT_OK, EXIT_PARITY):
            return code
    recipe = _load(root, [args.recipe]).recipes[0]
    rows = bench_recipe(recipe, root, root / "out", args.threads)
    print(render(recipe.name, rows))
    target = root / "out" / recipe.name / "bench.json"
    write_json(target, recipe.name, rows, {"buildsys": __version__, "cpu": toolchain.cpu(), "gpu": gpu.gpu(),
                                           "threads": args.threads or os.cpu_count(),
                                           "tools": toolchain.versions(("torch", "onnxruntime", "numpy"))})
    print(f"written: {target}", file=sys.stderr)
    return EXIT_OK


def cmd_view(root: Path, args) -> int:
    """Serve one artifact in Netron until interrupted."""
    from buildsys import view
    from buildsys.errors import UsageError

    recipe, _, artifact = args.target.partition(":")
    loaded = _load(root, [recipe])
    recipes, graph = loaded.recipes, loaded.graph
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
    from buildsys.engine.session import BuildOptions, Session

    removed = Session(root, BuildOptions(recipes=tuple(args.recipes))).clean(args.cache)
    if removed:
        print(removed, file=sys.stderr)
    return EXIT_OK


def cmd_doctor(root: Path, args) -> int:
    from buildsys.doctor import doctor

    return doctor()


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
    "doctor": cmd_doctor,
}
