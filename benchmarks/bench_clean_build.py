"""Clean builds by two checkouts of buildsys, alternated: wall time and the CPU of every process.

    .venv/bin/python benchmarks/bench_clean_build.py --old ../base/.venv/bin/buildsys [--pairs 3]
        [--what samples tiny20] [--samples-from DIR] [-j 2] [--new-random-shapes N]

Each pair runs the old checkout's `buildsys build -j J` and then the new one's (the
order swaps from pair to pair) on the same workspace after removing its out/, so
load on a shared machine hits both alike. Two workspaces, under benchmarks/.work/clean/:

    samples   recipes/, models/ and data/ copied from --samples-from (default: this
              repository; give the old checkout when the recipes grew fields it cannot read)
    tiny20    the 20 tiny recipes of the build-overhead benchmark (benchmarks/workspace.py) (a Linear model, TorchScript exporter,
              five steps each)

CPU is user+sys of the whole process tree: this script makes itself the child
subreaper (prctl PR_SET_CHILD_SUBREAPER), so the worker templates and the steps'
children, which are reparented when their worker is killed, are reaped here and
counted in RUSAGE_CHILDREN. Per step kind it also prints the median of the seconds
`build --json` reports. Each command runs from a folder that is no checkout, so
each imports its own buildsys.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work" / "clean"
sys.path.insert(0, str(REPO))

PR_SET_CHILD_SUBREAPER = 36


def subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_all() -> None:
    """Wait for every descendant left over (reparented to this process)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def workspace(what: str, samples_from: Path) -> Path:
    ws = WORK / what
    if ws.exists():
        shutil.rmtree(ws)
    if what == "samples":
        for part in ("recipes", "models", "data"):
            shutil.copytree(samples_from / part, ws / part, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        from benchmarks.workspace import write_sources

        write_sources(ws, int(what.removeprefix("tiny")))
    return ws


def with_random_shapes(ws: Path, n: int) -> Path:
    """A copy of `ws` whose recipes each say `parity: {random_shapes: n}`."""
    import yaml

    copy = ws.with_name(ws.name + f"-random{n}")
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("out"))
    for path in sorted((copy / "recipes").glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        recipe.setdefault("parity", {})["random_shapes"] = n
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return copy


def clean_build(exe: str, ws: Path, jobs: int) -> dict:
    shutil.rmtree(ws / "out", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "-C", str(ws), "build", "-j", str(jobs), "--json"], cwd="/",
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    reap_all()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{exe} build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    steps = json.loads(proc.stdout)["steps"]
    kinds: dict[str, list[float]] = {}
    for s in steps:
        if s["state"] == "ran":
            kinds.setdefault(s["id"].split(":", 1)[1].split("[")[0], []).append(s["seconds"])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "kinds": kinds, "ran": sum(s["state"] == "ran" for s in steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the old checkout's buildsys command")
    ap.add_argument("--new", default=str(REPO / ".venv/bin/buildsys"), help="the new one's (default: this checkout's)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--what", nargs="+", default=["samples", "tiny20"])
    ap.add_argument("--samples-from", type=Path, default=REPO)
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--new-random-shapes", type=int, metavar="N",
                    help="the new checkout builds a copy of the workspace whose recipes say parity.random_shapes: N "
                         "(0 gives it the old checkout's parity points, min, opt and max: the same work)")
    args = ap.parse_args()
    subreaper()
    for what in args.what:
        ws = workspace(what, args.samples_from)
        spaces = {"old": ws, "new": ws}
        if args.new_random_shapes is not None:
            spaces["new"] = with_random_shapes(ws, args.new_random_shapes)
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for i in range(args.pairs):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for who in order:
                r = clean_build(getattr(args, who), spaces[who], args.jobs)
                runs[who].append(r)
                print(f"{what} pair {i + 1} {who}: wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s, "
                      f"{r['ran']} steps ran, load {os.getloadavg()[0]:.2f}", flush=True)
        med = {who: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for who, rs in runs.items()}
        print(f"{what}: median of {args.pairs} (-j {args.jobs}): "
              f"wall old {med['old']['wall']:.2f} s, new {med['new']['wall']:.2f} s, "
              f"ratio {med['new']['wall'] / med['old']['wall']:.3f}; "
              f"cpu old {med['old']['cpu']:.2f} s, new {med['new']['cpu']:.2f} s, "
              f"ratio {med['new']['cpu'] / med['old']['cpu']:.3f}")
        for kind in sorted(runs["new"][0]["kinds"]):
            row = []
            for who in ("old", "new"):
                xs = [x for r in runs[who] for x in r["kinds"].get(kind, [])]
                row.append(f"{who} {statistics.median(xs) * 1000:.0f} ms" if xs else f"{who} -")
            print(f"  {kind:22s} median reported seconds: {', '.join(row)}")


if __name__ == "__main__":
    main()
