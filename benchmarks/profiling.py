"""--profile: where buildsys spends the time of a no-op at the largest recipe count.

importtime and cProfile of the fast-path no-op build and status, and cProfile of
the full path (one recipe touched, the manifest deleted, explain). Profiles are
kept under benchmarks/.work/profile-<N>/ (open them with `python -m pstats` or
snakeviz).
"""
from __future__ import annotations

import os
import pstats
import re
from collections.abc import Callable

from benchmarks.harness import Harness
from benchmarks.timing import fmt
from benchmarks.tools import Buildsys
from benchmarks.workspace import REPO, WORK, age


def profile(h: Harness, n: int, jobs: int, reuse: bool, top: int, log: Callable[[str], None]) -> str:
    t = Buildsys(WORK / f"n{n}" / "buildsys", n, jobs, h)
    if not (reuse and t.built()):
        log(f"[profile] building {n} recipes from scratch")
        t.create()
        t.mark([t.clean_build()])
        age(t.ws)
    t.settle()
    folder = WORK / f"profile-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    out = [f"profiles of buildsys at {n} recipes (kept in {folder.relative_to(REPO)})", ""]

    # import time of the fast path: most of what a fast no-op costs
    _, p = h.must(t.cmd("build"), env={**h.env, "PYTHONPROFILEIMPORTTIME": "1"})
    rows = []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4)))
    total = sum(r[0] for r in rows)
    out.append(f"fast-path no-op build, -X importtime: {len(rows)} modules, {total / 1000:.0f} ms of imports; "
               "heaviest (self / cumulative, ms):")
    for self_us, cum_us, _, mod in sorted(rows, reverse=True)[:top]:
        out.append(f"    {self_us / 1000:7.1f} {cum_us / 1000:7.1f}  {mod}")
    top_level = sorted((r for r in rows if r[2] == 1), key=lambda r: -r[1])[:8]
    out.append("  top-level imports by cumulative time: " + ", ".join(f"{r[3]} {r[1] / 1000:.0f} ms" for r in top_level))
    out.append("")

    def run_profiled(label: str, args: list[str], before: Callable[[], None] | None = None) -> None:
        if before is not None:
            before()
        path = folder / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".prof")
        # cwd: `-m` puts the current directory first on sys.path, and the repository root
        # would shadow the snapshot on PYTHONPATH
        s, _ = h.must([h.buildsys_python, "-m", "cProfile", "-o", str(path), "-m", "buildsys", "-C", str(t.ws), *args],
                      cwd=t.ws, what=label)
        st = pstats.Stats(str(path))
        out.append(f"{label}: {fmt(s.wall)} under cProfile ({st.total_tt * 1000:.0f} ms profiled)")
        out.append(_top(st, "tottime", top))
        out.append(_top(st, "cumulative", top, skip_imports=True))
        out.append("")

    run_profiled("fast path: no-op build", ["build"])
    run_profiled("fast path: status", ["status"])
    run_profiled("full path: no-op build after touching one recipe", ["build"],
                 before=lambda: os.utime(t.ws / "recipes/m0001.yaml"))
    t.settle()
    run_profiled("full path: no-op build without a manifest (recipes from the cache)", ["build"],
                 before=lambda: t.manifest.unlink(missing_ok=True))
    t.settle()
    run_profiled("full path: status after touching one recipe", ["status"],
                 before=lambda: os.utime(t.ws / "recipes/m0001.yaml"))
    t.settle()
    run_profiled("explain m0000:parity", ["explain", "m0000:parity"])
    return "\n".join(out)


def _short(filename: str) -> str:
    filename = re.sub(r".*/benchmarks/\.work/snapshot-[0-9a-f]+/", "", filename)
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return filename


def _top(st: pstats.Stats, key: str, top: int, skip_imports: bool = False) -> str:
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _) in st.stats.items():
        if skip_imports and ("<frozen importlib" in filename or func in ("<module>", "exec")):
            continue
        where = f"{_short(filename)}:{line}:{func}" if line else func
        rows.append((tt if key == "tottime" else ct, tt, ct, nc, where))
    rows.sort(reverse=True)
    lines = [f"  by {'own time' if key == 'tottime' else 'cumulative time (imports left out)'}:"
             "      own    cum    calls"]
    for _, tt, ct, nc, where in rows[:top]:
        lines.append(f"    {tt * 1000:8.1f} {ct * 1000:8.1f} {nc:8d}  {where}")
    return "\n".join(lines)
