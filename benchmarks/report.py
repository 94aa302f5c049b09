"""The tables the build-overhead benchmark prints, and the JSON of every sample."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from benchmarks.run import OPS, Run
from benchmarks.timing import fmt
from benchmarks.workspace import WORK, write


def report(runs: list[Run], tool_names: list[str], n_runs: int, fast_runs: int, jobs: int) -> str:
    out = []
    out.append(f"median wall time of {n_runs} runs, {fast_runs} where a run takes under 1 s "
               f"(± half the interquartile range); CPU = user+sys of the "
               f"child processes; clean builds with -j {jobs} (DVC is serial)")
    out.append("")
    header = "| operation | recipes | " + " | ".join(tool_names) + " |"
    out += [header, "|---|---:|" + "---:|" * len(tool_names)]
    for op in OPS:
        for r in runs:
            cells = []
            for tn in tool_names:
                c = r.cells.get((tn, op))
                if c is None or not c.samples:
                    cells.append(f"({c.note})" if c is not None and c.note else "—")
                    continue
                text = f"{fmt(c.wall)} ±{c.spread * 100:.0f}%"
                if c.note:
                    text += f" ({c.note})"
                cells.append(text)
            if any(x != "—" for x in cells):
                out.append(f"| {op} | {r.n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("CPU time, median (user+sys), same runs:")
    out.append("")
    out += ["| operation | recipes | " + " | ".join(tool_names) + " |", "|---|---:|" + "---:|" * len(tool_names)]
    for op in OPS:
        for r in runs:
            cells = [(fmt(r.cells[(tn, op)].cpu) if (tn, op) in r.cells and r.cells[(tn, op)].samples else "—")
                     for tn in tool_names]
            if any(x != "—" for x in cells):
                out.append(f"| {op} | {r.n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("floor (same runs as the no-op series): " + "; ".join(
        f"{r.n} recipes: " + ", ".join(f"{k} {fmt(c.wall)}" for k, c in r.baseline.items()) for r in runs))
    out.append("load average (1 min) before → after each series: " + "; ".join(
        f"{r.n}: " + ", ".join(f"{op} {a:.1f}→{b:.1f}" for op, (a, b) in r.load.items()) for r in runs))
    out.append("")
    if len(runs) >= 2:
        out += _slopes(runs, tool_names)
    targets = _targets(runs)
    if targets:
        out.append("targets: " + "; ".join(targets))
    problems = [p for r in runs for p in r.problems]
    if problems:
        out.append("")
        out.append("PROBLEMS:")
        out += [f"  - {p}" for p in problems]
    return "\n".join(out)


def _slopes(runs: list[Run], tool_names: list[str]) -> list[str]:
    out = ["cost per recipe (least-squares slope of the median over the recipe counts; "
           "segments show whether it stays linear):", ""]
    out += ["| tool | operation | slope | intercept | " + " | ".join(
        f"{a.n}→{b.n}" for a, b in zip(runs, runs[1:])) + " |", "|---|---|---:|---:|" + "---:|" * (len(runs) - 1)]
    for tn in tool_names:
        for op in ("no-op build", "status", "touch 1 + build", "no-op, no manifest"):
            pts = [(r.n, r.cells[(tn, op)].wall) for r in runs if (tn, op) in r.cells]
            if len(pts) < 2:
                continue
            slope, icpt = _fit(pts)
            segs = [f"{(b[1] - a[1]) / (b[0] - a[0]) * 1000:.2f} ms" for a, b in zip(pts, pts[1:])]
            out.append(f"| {tn} | {op} | {slope * 1000:.2f} ms | {fmt(icpt)} | " + " | ".join(segs) + " |")
    out.append("")
    return out


def _targets(runs: list[Run]) -> list[str]:
    targets = []
    for r in runs:
        c = r.cells.get(("buildsys", "no-op build"))
        if c is None:
            continue
        limit = 0.100 if r.n <= 20 else 0.400 if r.n >= 500 else None
        if limit is not None:
            targets.append(f"no-op build at {r.n} recipes {fmt(c.wall)} "
                           f"{'≤' if c.wall <= limit else '>'} target {fmt(limit)}")
        s = r.cells.get(("buildsys", "status"))
        if s is not None:
            ratio = s.wall / c.wall
            targets.append(f"status/no-op at {r.n} recipes {ratio:.2f}× ({'within' if ratio <= 1.5 else 'beyond'} 1.5×)")
    return targets


def _fit(pts: list[tuple[int, float]]) -> tuple[float, float]:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def save(runs: list[Run], argv: list[str], jobs: int, n_runs: int) -> Path:
    """Write benchmarks/.work/results.json: every sample, the load around each series, the problems."""
    data = {"argv": argv, "jobs": jobs, "runs": n_runs, "cpus": os.cpu_count(),
            "results": [{"recipes": r.n, "load": r.load, "problems": r.problems,
                         "baseline": {k: [s.__dict__ for s in c.samples] for k, c in r.baseline.items()},
                         "cells": [{"tool": t, "op": op, "note": c.note, "median_wall": c.wall, "median_cpu": c.cpu,
                                    "samples": [s.__dict__ for s in c.samples]}
                                   for (t, op), c in r.cells.items() if c.samples]} for r in runs]}
    path = WORK / "results.json"
    write(path, json.dumps(data, indent=1))
    return path
