"""Build-system overhead: buildsys beside GNU make and DVC on the same synthetic pipeline.

    make bench-build                                  # = .venv/bin/python -m benchmarks (and installs DVC)
    .venv/bin/python -m benchmarks --recipes 20 100 500 --runs 7 --with-dvc
    .venv/bin/python -m benchmarks --recipes 500 --reuse --profile   # where the time goes
    .venv/bin/python -m benchmarks --samples          # the sample recipes of recipes/ instead

What is measured. For each recipe count N the benchmark generates N synthetic
recipes of a tiny Linear model (tests/fixtures/models/tiny.py, `exporter:
torchscript`), five steps each: export, reference, simplify, parity[fp32],
engine[onnxruntime-fp32]. buildsys runs them for real; GNU make and DVC run the
same pipeline with a cheap stand-in command per step (benchmarks/standins/step.py)
and the same files and field-level dependencies, so in all three a tolerance edit
re-runs parity only, and the benchmark checks that it does (benchmarks/tools.py).

Operations (benchmarks/run.py): no-op build, status, explain, touch 1 + build,
touch 1 + status, no-op without the stat manifest (buildsys only), tolerance
change, clean build (buildsys: real exports etc., -j --jobs; make -j --jobs; dvc
repro is serial; buildsys once unless --clean-runs, make and DVC 3 times unless
the first took over a minute). Each cell shows the median wall time of --runs
fresh processes (--fast-runs where one takes under a second), tools interleaved
run by run, and the spread (half the interquartile range, relative to the
median); the JSON written to benchmarks/.work/results.json also holds every
sample, the CPU time (user+sys of the child processes, which load on a shared
machine distorts less than wall time) and the load average around each series.

buildsys's no-op build and status are answered from the stat manifest, which a
full no-op build records only once every file it stamps is 2 s old; the
benchmark waits for that and checks, before each series, that the fast path is
taken (no `buildsys.engine.workspace` import) and, after it, that the manifest was not
rewritten.

DVC is measured with --with-dvc. It is the `bench` extra of pyproject.toml,
installed into .venv by `make bench-build`; the benchmark installs nothing, and
where DVC is missing it says so and leaves its column out. --dvc PATH (default:
$BENCH_DVC, else .venv/bin/dvc) uses another installation. Above
--dvc-clean-max recipes DVC's clean build is not measured (it runs ~1.5 s per
stage, serially): its workspace is built by running each stage's command and
`dvc commit -f`, and the other operations are measured as usual (3 runs when a
run takes longer than --slow seconds).

The code measured is a snapshot of the working tree's buildsys/ and schemas/
taken at the start (benchmarks/.work/snapshot-<digest>/, first on PYTHONPATH),
because people edit the tree while benchmarks run; --live measures the tree as
it is. Bytecode is cached under benchmarks/.work/pycache even where
PYTHONDONTWRITEBYTECODE=1 is set, as Python does by default; --keep-env
measures the environment as it is. The floor line shows `buildsys --version`
both ways (benchmarks/harness.py).

Workspaces live under benchmarks/.work/n<N>/<tool>/. --reuse keeps those that
were built before (the 500-recipe clean build of buildsys takes many minutes)
and reports the clean-build time recorded when they were made.

--profile profiles buildsys at the largest N (benchmarks/profiling.py).
"""
from __future__ import annotations

import argparse
import cProfile  # noqa: F401  (checked here so --profile fails early when missing)
import os
import shutil
import sys
import time

from benchmarks.harness import open_harness
from benchmarks.profiling import profile
from benchmarks.report import report, save
from benchmarks.run import Run
from benchmarks.samples import bench_samples
from benchmarks.timing import BenchError
from benchmarks.tools import Buildsys, Dvc, Make, Tool, find_dvc
from benchmarks.workspace import REPO, WORK


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", type=int, nargs="+", default=[20], metavar="N", help="recipe counts (default 20)")
    ap.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="jobs of the clean builds")
    ap.add_argument("--clean-runs", type=int, default=1,
                    help="clean builds of buildsys per count (make and DVC: 3 unless the first takes over a minute)")
    ap.add_argument("--fast-runs", type=int, default=15, metavar="R",
                    help="runs for a tool whose first run of a series takes under a second (default 15)")
    ap.add_argument("--slow", type=float, default=15.0, metavar="S",
                    help="a tool whose first run of a series takes longer gets 3 runs (default 15 s)")
    ap.add_argument("--tools", nargs="+", default=["buildsys", "make"], choices=["buildsys", "make", "dvc"])
    ap.add_argument("--with-dvc", action="store_true", help="also DVC (the bench extra, see above)")
    ap.add_argument("--dvc", default=os.environ.get("BENCH_DVC"), metavar="PATH",
                    help="the dvc executable (default: $BENCH_DVC, else the venv's)")
    ap.add_argument("--reuse", action="store_true", help="keep workspaces built by an earlier run")
    ap.add_argument("--profile", action="store_true", help="profile buildsys at the largest count instead")
    ap.add_argument("--top", type=int, default=15, help="rows per profile table")
    ap.add_argument("--samples", action="store_true", help="measure the sample recipes instead")
    ap.add_argument("--live", action="store_true",
                    help="measure the installed working tree as it is, not a snapshot taken at the start")
    ap.add_argument("--dvc-clean-max", type=int, default=100, metavar="N",
                    help="above N recipes DVC's clean build is not measured (it runs ~1.5 s per stage, serially); "
                         "the workspace is built by running each stage's command and `dvc commit -f` (default 100)")
    ap.add_argument("--keep-env", action="store_true",
                    help="measure with the environment as it is (by default PYTHONDONTWRITEBYTECODE is dropped "
                         "and bytecode cached under benchmarks/.work/pycache)")
    return ap


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        h = open_harness(args.keep_env, args.live)
        log(h.what)
        h.warm_up()
        if args.samples:
            print(bench_samples(h, args.runs))
            return 0
        if args.profile:
            print(profile(h, max(args.recipes), args.jobs, args.reuse, args.top, log))
            return 0
        names = list(dict.fromkeys(args.tools + (["dvc"] if args.with_dvc else [])))
        if "make" in names and shutil.which("make") is None:
            print("skipping make: no `make` on PATH", file=sys.stderr)
            names.remove("make")
        dvc = None
        if "dvc" in names:
            dvc, why = find_dvc(args.dvc, h.venv_bin)
            if dvc is None:
                print(f"{why}; its column is left out", file=sys.stderr)
                names.remove("dvc")
        runs = []
        for n in sorted(args.recipes):
            tools: list[Tool] = []
            for tn in names:
                ws = WORK / f"n{n}" / tn
                if tn == "dvc":
                    tools.append(Dvc(ws, n, args.jobs, h, exe=dvc, clean_max=args.dvc_clean_max))
                else:
                    tools.append({"buildsys": Buildsys, "make": Make}[tn](ws, n, args.jobs, h))
            r = Run(n, tools, h, args.runs, args.slow, args.clean_runs, args.reuse, log, args.fast_runs)
            r.measure()
            runs.append(r)
            save(runs, sys.argv, args.jobs, args.runs)
        print(h.what)
        print(report(runs, names, args.runs, args.fast_runs, args.jobs))
        print(f"\nevery sample: {save(runs, sys.argv, args.jobs, args.runs).relative_to(REPO)}")
        return 1 if any(r.problems for r in runs) else 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
