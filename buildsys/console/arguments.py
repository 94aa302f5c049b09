"""The `buildsys` command line's arguments: the argparse parser of every command, and the plain no-op form.

argparse is imported inside `parser`, not at the top: a no-op `build` or `status`
answered from the recorded no-op answer never builds the parser (`plain` reads
its argv by hand). A command is added with a `sub.add_parser` here and an entry
in cli.py's COMMANDS.
"""
from __future__ import annotations

import sys
from pathlib import Path

from buildsys.core.exitcodes import EXIT_USAGE


def parser():
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


class PlainArgs:
    """What the parser makes of `[-C DIR] build|status [--json]`: all the no-op answer reads."""

    recipes: tuple[str, ...] = ()
    only = None
    cache_max_size = None
    require_all = dry_run = verbose = False

    def __init__(self, directory: str, command: str, as_json: bool):
        self.directory, self.command, self.json = directory, command, as_json


def plain(argv: list[str]) -> PlainArgs | None:
    """`argv` when it is exactly `[-C DIR] build|status [--json]`, else None (argparse decides)."""
    directory = "."
    if len(argv) >= 2 and argv[0] == "-C" and not argv[1].startswith("-"):
        directory, argv = argv[1], argv[2:]
    if not argv or argv[0] not in ("build", "status") or argv[1:] not in ([], ["--json"]):
        return None
    return PlainArgs(directory, argv[0], len(argv) == 2)


def executor_options(args) -> dict:
    """The options every building command shares (jobs, timeout, shared cache, executor), as BuildOptions fields."""
    return dict(jobs=args.jobs, timeout=args.timeout, cache=args.cache, cache_read_only=args.cache_read_only,
                executor=args.executor, scheduler=args.scheduler, memory_limit=args.memory_limit)
