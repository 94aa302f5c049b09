"""Cache collection: `buildsys cache gc` on caches of 10,000 entries, and the no-op build beside it.

    .venv/bin/python benchmarks/bench_cache_gc.py                    # gc and stats, 10,000 entries
    .venv/bin/python benchmarks/bench_cache_gc.py --entries 50000 --runs 3
    .venv/bin/python benchmarks/bench_cache_gc.py --noop BEFORE       # no-op build, BEFORE's code vs this tree's

gc. A synthetic cache of --entries step keys is generated once under
benchmarks/.work/gc-<N>/: each key names one blob of its own (1 KiB) and every
tenth also a blob shared by ten keys, like export, simplify and parity outputs
that repeat; last uses spread over 60 days; 500 keys are the current recipes'
last build. Three caches hold the same entries: the local store
(out/.buildsys: state.sqlite and store/), a shared cache in a folder, and
fsspec's memory:// filesystem. Each run copies the template (hard links for the
blobs) and times, in a fresh process, `buildsys cache stats` and `buildsys
cache gc --max-size` half the cache (so about half the entries and their blobs
go), through the real command line; memory:// is timed in-process (the
filesystem lives in the process). Figures are medians of --runs, wall time.

no-op. Last use is recorded when a step's trace changes (a run or a restore),
never by a no-op build; this measures that claim. --noop BEFORE names a folder
holding the buildsys/ and schemas/ of the code before (for example
`git archive $(git merge-base main HEAD) buildsys schemas | tar -x -C /tmp/before`).
One workspace of --recipes synthetic recipes (the build-overhead benchmark's
tiny model, benchmarks/workspace.py) is built, then copied, and each copy is
settled under one version of the code. The no-op build (answered from the stat manifest) and the full no-op
(the manifest deleted first: every step decided, nothing run) are then timed
alternately, BEFORE and this tree run by run (each first every other time), so
that load on the machine hits both alike; so is State.record (what a run or a
restore writes, which now also stamps last use), in-process on 2,000 steps.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
sys.path.insert(0, str(REPO))

# State.record timed under one version of the code; a script, so that its folder, not the
# current directory, comes first on sys.path
RECORD = Path(__file__).resolve().parent / "probes" / "record_state.py"
BLOB = 1024
CURRENT = 500


def _env(code: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    env["PYTHONPATH"] = str(code)
    return env


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    # cwd: `-m` puts the current directory first on sys.path, and the repository root would
    # shadow the code on PYTHONPATH
    p = subprocess.run(argv, env=env, cwd=WORK, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return took, p


def _median(xs: list[float]) -> str:
    m = statistics.median(xs)
    spread = (statistics.quantiles(xs, n=4)[2] - statistics.quantiles(xs, n=4)[0]) / 2 / m if len(xs) >= 4 else 0
    return f"{m * 1000:8.0f} ms  ±{spread * 100:3.0f}%"


# -- the synthetic caches ---------------------------------------------------------------------


def _entries(n: int) -> list[tuple[str, list[str], float]]:
    """(key, blob digests, last use) for n keys, deterministic."""
    rng = random.Random(0)
    now = time.time()
    out = []
    for i in range(n):
        key = f"{i:064x}"
        own = f"{i + (1 << 200):064x}"[-64:]
        blobs = [own] + ([f"{(i // 100) + (1 << 201):064x}"[-64:]] if i % 10 == 0 else [])
        out.append((key, blobs, now - rng.uniform(0, 60 * 86400)))
    return out


def _blob_bytes(digest: str) -> bytes:
    return (digest.encode() * (BLOB // 64 + 1))[:BLOB]


def _make_local(root: Path, entries) -> None:
    from buildsys.storage.state import State

    meta = root / "out" / ".buildsys"
    state = State(meta)
    rows, traces, uses = [], [], []
    for i, (key, blobs, used) in enumerate(entries):
        outputs = json.dumps({"out": [[f"f{j}", d, BLOB] for j, d in enumerate(blobs)]})
        rows.append((key, "0" * 64, "{}", outputs, None, used))
        uses.append((key, used))
        if i < CURRENT:
            traces.append((f"m{i:05d}:export", key, "{}", "{}", outputs, None, 0.0, used))
    with state.transaction():
        state.db.executemany("INSERT INTO actions VALUES (?, ?, ?, ?, ?, ?)", rows)
        state.db.executemany("INSERT INTO action_uses VALUES (?, ?)", uses)
        state.db.executemany("INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)", traces)
    state.close()
    for d in {d for _, blobs, _ in entries for d in blobs}:
        p = meta / "store" / d[:2] / d
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_blob_bytes(d))


def _make_shared(root: Path, entries) -> None:
    for key, blobs, used in entries:
        a = root / "actions" / f"{key}.json"
        a.parent.mkdir(parents=True, exist_ok=True)
        a.write_text(json.dumps([{"deps": {}, "outputs": {"out": [[f"f{j}", d, BLOB] for j, d in enumerate(blobs)]},
                                  "verdict": None}]))
        os.utime(a, (used, used))
    old = time.time() - 86400
    for d in {d for _, blobs, _ in entries for d in blobs}:
        p = root / "blobs" / d[:2] / d
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_blob_bytes(d))
        os.utime(p, (old, old))


def _copy(src: Path, dst: Path) -> None:
    """A writable copy whose blobs are hard links (unlinking one leaves the template whole)."""
    shutil.rmtree(dst, ignore_errors=True)

    def link_or_copy(a: str, b: str) -> None:
        if a.endswith((".sqlite", ".json")):
            shutil.copy2(a, b)  # rewritten by gc: a link would change the template
        else:
            os.link(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)


def bench_gc(n: int, runs: int) -> list[str]:
    base = WORK / f"gc-{n}"
    entries = _entries(n)
    if not (base / "ready").exists():
        shutil.rmtree(base, ignore_errors=True)
        _make_local(base / "local", entries)
        _make_shared(base / "shared", entries)
        (base / "ready").write_text("")
    total = len({d for _, b, _ in entries for d in b}) * BLOB
    half = str(total // 2)
    env = _env(REPO)
    py = [sys.executable, "-m", "buildsys"]
    times: dict[str, list[float]] = {k: [] for k in ("local stats", "local gc", "folder stats", "folder gc",
                                                     "memory gc")}
    removed = {}
    for _ in range(runs):
        ws, folder = WORK / "gc-run-local", WORK / "gc-run-shared"
        _copy(base / "local", ws)
        _copy(base / "shared", folder)
        t, _ = _run([*py, "-C", str(ws), "cache", "stats", "--json"], env)
        times["local stats"].append(t)
        t, p = _run([*py, "-C", str(ws), "cache", "gc", "--max-size", half, "--json"], env)
        times["local gc"].append(t)
        removed["local gc"] = json.loads(p.stdout)["removed"]
        t, _ = _run([*py, "-C", str(ws), "cache", "stats", "--cache", str(folder), "--json"], env)
        times["folder stats"].append(t)
        t, p = _run([*py, "-C", str(ws), "cache", "gc", "--cache", str(folder), "--max-size", half,
                     "--grace", "0", "--json"], env)
        times["folder gc"].append(t)
        removed["folder gc"] = json.loads(p.stdout)["removed"]
        t, removed["memory gc"] = _memory_gc(base / "shared", half)
        times["memory gc"].append(t)
    lines = [f"cache of {n} entries, {total / 2**20:.1f} MiB of blobs; gc --max-size {int(half) / 2**20:.1f} MiB; "
             f"median of {runs} runs"]
    for what, xs in times.items():
        r = removed.get(what)
        tail = f"  removed {r['entries']} entries, {r['blobs']} blobs" if r else ""
        lines.append(f"  {what:<13} {_median(xs)}{tail}")
    return lines


def _memory_gc(template: Path, half: str) -> tuple[float, dict]:
    import fsspec

    from buildsys.storage import cachegc
    from buildsys.storage.sharedcache import open_cache

    url = f"memory://bench-gc-{time.time_ns()}"
    fs, root = fsspec.core.url_to_fs(url)
    for p in template.rglob("*"):
        if p.is_file():
            fs.pipe_file(f"{root}/{p.relative_to(template).as_posix()}", p.read_bytes())
    cache = open_cache(url, False)
    t0 = time.perf_counter()
    done = cachegc.collect_shared(cache, int(half), None, grace_minutes=0)
    took = time.perf_counter() - t0
    fs.rm(root, recursive=True)
    return took, done["removed"]


# -- the no-op build, before and after ------------------------------------------------------


def bench_noop(before: Path, n: int, runs: int) -> list[str]:
    from benchmarks.workspace import write_sources

    base = WORK / f"gc-noop-{n}"
    built = base / "after"
    if not (base / "ready").exists():
        shutil.rmtree(base, ignore_errors=True)
        write_sources(built, n)
        _run([sys.executable, "-m", "buildsys", "-C", str(built), "build", "-j", "2"], _env(REPO))
        (base / "ready").write_text("")
    trees = {"before": before.resolve(), "after": REPO}
    spaces = {"after": built, "before": base / "before"}
    shutil.rmtree(spaces["before"], ignore_errors=True)
    shutil.copytree(built, spaces["before"], symlinks=True)
    for name, ws in spaces.items():
        _settle(ws, _env(trees[name]))
    cmd = {name: [sys.executable, "-m", "buildsys", "-C", str(ws), "build"] for name, ws in spaces.items()}
    fast: dict[str, list[float]] = {"before": [], "after": []}
    full: dict[str, list[float]] = {"before": [], "after": []}
    orders = [("before", "after"), ("after", "before")]  # neither always runs first
    for r in range(runs):
        for name in orders[r % 2]:
            t, _ = _run(cmd[name], _env(trees[name]))
            fast[name].append(t)
    for r in range(max(3, runs // 3)):
        for name in orders[r % 2]:
            (spaces[name] / "out/.buildsys/noop.json").unlink()
            t, p = _run(cmd[name], _env(trees[name]))
            if " ran " in p.stderr or p.stderr.startswith("ran "):
                raise SystemExit(f"the full no-op of {name} ran steps:\n{p.stderr[-2000:]}")
            full[name].append(t)
            time.sleep(2.1)  # the manifest is recorded only for files 2 s old
    record = {name: [] for name in ("before", "after")}
    for r in range(max(3, runs // 3)):
        for name in orders[r % 2]:
            _, p = _run([sys.executable, str(RECORD)], _env(trees[name]))
            record[name].append(float(p.stdout))
    lines = [f"no-op build of {n} recipes ({n * 5} steps), median of {runs} (full path: "
             f"{max(3, runs // 3)}) runs, before ({before}) and after, alternating"]
    for name in ("before", "after"):
        lines.append(f"  {name:<6} no-op (stat manifest) {_median(fast[name])}   "
                     f"full no-op (every step decided) {_median(full[name])}   "
                     f"recording a restored step {statistics.median(record[name]) * 1e6:5.0f} µs")
    return lines


def _settle(ws: Path, env: dict[str, str]) -> None:
    """Full no-op builds until one records the stat manifest (files must be 2 s old)."""
    for _ in range(6):
        _run([sys.executable, "-m", "buildsys", "-C", str(ws), "build"], env)
        probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildsys", "-C", str(ws), "build"],
                               env=env, cwd=WORK, capture_output=True, text=True)
        if "buildsys.engine.workspace" not in probe.stderr:
            return
        time.sleep(2.1)
    raise SystemExit(f"no-op builds in {ws} never took the stat manifest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--noop", type=Path, metavar="BEFORE", help="time the no-op build with BEFORE's code and this tree's")
    ap.add_argument("--recipes", type=int, default=20, help="recipes of the no-op workspace (default 20)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    lines = bench_noop(args.noop, args.recipes, args.runs) if args.noop else bench_gc(args.entries, args.runs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
