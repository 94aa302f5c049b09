"""The `buildsys` command line: parse (buildsys.console.arguments), call the engine's session once, print, exit.

Commands that do no model work (--help, validate, status, explain, graph, a no-op build) import no
torch, onnx, onnxruntime or onnxsim: only step code in worker processes does. A command is a `cmd_*`
function here and an entry in COMMANDS; its arguments are in buildsys.console.arguments.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from buildsys.console import show
from buildsys.core.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    from buildsys.console import arguments

    argv = sys.argv[1:] if argv is None else argv
    plain = arguments.plain(argv)
    if plain is not None:  # the common no-op is answered before the parser is even built
        root = Path(plain.directory)
        if root.is_dir():
            answered = _replay(root.resolve(), plain)
            if answered is not None:
                return answered
    args = arguments.parser().parse_args(argv)
    root = Path(args.directory)
    if not root.is_dir():
        print(f"error: workspace {root} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    root = root.resolve()
    if plain is None:  # a plain command that missed above would only miss again
        answered = _replay(root, args)
        if answered is not None:
            return answered
    from buildsys.core.errors import BuildsysError, storage_error

    try:
        return COMMANDS[args.command](root, args)
    except BuildsysError as exc:  # RecipeError included
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


def _replay(root: Path, args) -> int | None:
    """Answer a no-op `build` or an all-up-to-date `status` from the recorded no-op answer, or None."""
    from buildsys.engine import noop

    meta = str(root / "out" / ".buildsys")
    if args.command == "build":
        entry = noop.replay_build(meta, args.recipes, args.only, args.require_all, args.dry_run, args.verbose,
                                  args.cache_max_size is not None)
        if entry is not None:
            show.build_result(entry["steps"], entry["exit"], [], args.json)
            return entry["exit"]
    elif args.command == "status":
        rows = noop.replay_status(meta, args.recipes)
        if rows is not None:
            show.status(rows, args.json)
            return EXIT_OK
    return None


def _session(root: Path, args=None, **options):
    """The session of one command; `args` of a building command give every option it shares."""
    from buildsys import runners
    from buildsys.console.arguments import executor_options
    from buildsys.engine.session import BuildOptions, Session

    options = {**executor_options(args), **options} if args is not None else options
    return Session(root, chosen := BuildOptions(**options), runners.choose(chosen, root))


def _build(session, as_json: bool = False, verbose: bool = False) -> int:
    from buildsys.console.progress import reporter as make_reporter

    reporter = make_reporter(sys.stderr, verbose, live=not as_json)
    try:
        result = session.run_build(reporter)
    finally:
        reporter.close()
    show.build(result, as_json)
    return result.code


def cmd_build(root: Path, args) -> int:
    session = _session(root, args, recipes=tuple(args.recipes), keep_going=args.keep_going,
                       only=tuple(args.only or ()), dry_run=args.dry_run, require_all=args.require_all,
                       cache_max_size=args.cache_max_size)
    return _build(session, args.json, args.verbose)


def cmd_check(root: Path, args) -> int:
    from buildsys.console.progress import reporter as make_reporter

    reporter = make_reporter(sys.stderr, args.verbose)
    try:
        summary = _session(root, args, recipes=tuple(args.recipes), keep_going=True).run_check(
            reporter, args.baseline, args.max_regression, args.junit, args.markdown)
    finally:
        reporter.close()
    print(summary.render(), file=sys.stderr)
    print(f"reports: {root / 'out' / 'reports'}", file=sys.stderr)
    return summary.exit_status


def cmd_status(root: Path, args) -> int:
    show.status(_session(root, recipes=tuple(args.recipes)).plan().rows, args.json)
    return EXIT_OK


def cmd_explain(root: Path, args) -> int:
    show.explanation(_session(root).explain(args.target))
    return EXIT_OK


def cmd_graph(root: Path, args) -> int:
    show.graph(_session(root, recipes=tuple(args.recipes)).load().graph, args.format)
    return EXIT_OK


def cmd_bench(root: Path, args) -> int:
    """Bring the recipe's artifacts up to date, then time each of them."""
    from buildsys.engine.status import artifacts_built
    from buildsys.tools import bench

    session = _session(root, recipes=(args.recipe,))
    if not args.no_build:
        code = _build(session)
        if not artifacts_built(code):
            return code
    bench.run(session.load().recipes[0], root, args.threads)
    return EXIT_OK


def cmd_view(root: Path, args) -> int:
    """Serve one artifact in Netron until interrupted."""
    from buildsys.tools import view

    loaded = _session(root, recipes=(args.target.partition(":")[0],)).load()
    view.show(loaded, root, args.target, args.port, not args.no_browser, args.node)
    return EXIT_OK


def cmd_validate(root: Path, args) -> int:
    for r in _session(root, recipes=tuple(args.recipes)).validate():
        print(f"ok  {r.file}  ({r.name}: {len(r.inputs)} inputs, {len(r.targets)} targets)")
    return EXIT_OK


def cmd_clean(root: Path, args) -> int:
    removed = _session(root, recipes=tuple(args.recipes)).clean(args.cache)
    if removed:
        print(removed, file=sys.stderr)
    return EXIT_OK


def cmd_cache(root: Path, args) -> int:
    """`cache stats` and `cache gc`, on the local store or on a shared cache."""
    session = _session(root)
    if args.cache_command == "gc":
        note, result, render = session.collect(args.cache, args.max_size, args.max_age, args.grace, args.dry_run)
        if note:
            print(note, file=sys.stderr)
    else:
        result, render = session.cache_stats(args.cache)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return EXIT_OK


def cmd_doctor(root: Path, args) -> int:
    from buildsys.tools.doctor import doctor
    return doctor()


COMMANDS = {
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
