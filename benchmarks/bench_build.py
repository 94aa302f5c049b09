"""Build-system overhead: no-op build, status, explain and one-field changes, as medians.

    .venv/bin/python benchmarks/bench_build.py                 # 20 synthetic recipes
    .venv/bin/python benchmarks/bench_build.py --recipes 20 100 500 --runs 7
    .venv/bin/python benchmarks/bench_build.py --samples       # the sample recipes of recipes/

Synthetic recipes are tiny Linear models (tests/fixtures/models/tiny.py), each a
full pipeline of five steps (export, reference, simplify, parity, engine). The
clean build runs them for real once; every figure after that is the median of
`--runs` invocations of the installed `buildsys` command in a fresh process,
as a user would type it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
BUILDSYS = [str(Path(sys.executable).with_name("buildsys"))]

RECIPE = """\
version: 1
model: {{factory: "bm.tiny:tiny", kwargs: {{features: {features}}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, {features}]}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
export: {{opset: 18, exporter: torchscript}}
tolerances: {{fp32: {{atol: {atol}, rtol: 1.0e-3}}}}
"""


def run(ws: Path, *args: str, check: bool = True) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*BUILDSYS, "-C", str(ws), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise SystemExit(f"buildsys {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def median(ws: Path, runs: int, *args: str) -> float:
    return statistics.median(run(ws, *args) for _ in range(runs))


def synthetic(n: int) -> Path:
    ws = WORK / f"synthetic-{n}"
    if ws.exists():
        shutil.rmtree(ws)
    (ws / "recipes").mkdir(parents=True)
    (ws / "bm").mkdir()
    shutil.copy(REPO / "tests/fixtures/models/tiny.py", ws / "bm/tiny.py")
    (ws / "bm/__init__.py").write_text("")
    for i in range(n):
        (ws / f"recipes/m{i:04d}.yaml").write_text(RECIPE.format(features=4 + i % 7, atol="1.0e-4"))
    return ws


def bench_synthetic(n: int, runs: int, jobs: int) -> dict[str, float]:
    ws = synthetic(n)
    fig = {"recipes": n, "steps": 5 * n}
    fig["clean build"] = run(ws, "build", "-j", str(jobs))
    fig["no-op build"] = median(ws, runs, "build")
    fig["status"] = median(ws, runs, "status")
    fig["explain"] = median(ws, runs, "explain", "m0000:parity")
    times = []
    for k in range(runs):
        recipe = ws / "recipes/m0000.yaml"
        recipe.write_text(RECIPE.format(features=4, atol=f"{1.0e-4 * (2 + k):.1e}"))
        times.append(run(ws, "build"))
    fig["tolerance change"] = statistics.median(times)
    return fig


def bench_samples(runs: int) -> dict[str, float]:
    ws = WORK / "samples"
    ws.mkdir(parents=True, exist_ok=True)
    for d in ("recipes", "models"):
        shutil.rmtree(ws / d, ignore_errors=True)
        shutil.copytree(REPO / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))
    fig: dict[str, float] = {"recipes": len(list((ws / "recipes").glob("[!_]*.yaml")))}
    fig["build (first, or from cache)"] = run(ws, "build")
    fig["no-op build"] = median(ws, runs, "build")
    fig["status"] = median(ws, runs, "status")
    recipe = ws / "recipes/resnet18.yaml"
    original = recipe.read_text()
    times = []
    try:
        for k in range(runs):
            recipe.write_text(original + f"\n# bench {k}\n" + _atol_override(original, k))
            times.append(run(ws, "build", "resnet18"))
    finally:
        recipe.write_text(original)
    fig["resnet18 tolerance change"] = statistics.median(times)
    return fig


def _atol_override(text: str, k: int) -> str:
    # the sample recipes extend a base; a recipe-level tolerances block overrides it
    assert "tolerances:" not in text, "edit the benchmark: resnet18.yaml sets its own tolerances"
    return f"tolerances:\n  fp32: {{atol: {1.0e-3 * (1 + k):.1e}, rtol: 1.0e-3}}\n"


def table(rows: list[dict[str, float]]) -> str:
    keys = [k for k in rows[0] if k not in ("recipes", "steps")]
    lines = ["| recipes | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for r in rows:
        cells = [f"{r[k] * 1000:.0f} ms" if r[k] < 10 else f"{r[k]:.1f} s" for k in keys]
        lines.append(f"| {int(r['recipes'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", type=int, nargs="*", default=[20])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--samples", action="store_true", help="measure the sample recipes instead")
    args = ap.parse_args()
    if args.samples:
        print(table([bench_samples(args.runs)]))
        return 0
    rows = [bench_synthetic(n, args.runs, args.jobs) for n in args.recipes]
    print(f"medians of {args.runs} runs; clean build with -j {args.jobs}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
