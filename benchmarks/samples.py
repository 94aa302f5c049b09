"""--samples: the no-op, status and a tolerance change on the sample recipes of recipes/.

The recipes, models, data and weights are copied to benchmarks/.work/samples/,
built once (or restored from the cache), aged and settled (a no-op build and
status answered from the stat manifest, as in every series of the synthetic
recipes), and then measured.
"""
from __future__ import annotations

import shutil

from benchmarks.harness import Harness
from benchmarks.timing import Cell, fmt
from benchmarks.tools import Buildsys
from benchmarks.workspace import REPO, WORK, age


def bench_samples(h: Harness, runs: int) -> str:
    ws = WORK / "samples"
    ws.mkdir(parents=True, exist_ok=True)
    for d in ("recipes", "models", "data", "weights"):  # what the recipes name: factories, calibration data
        shutil.rmtree(ws / d, ignore_errors=True)
        if (REPO / d).is_dir():
            shutil.copytree(REPO / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))

    def cmd(*a: str) -> list[str]:
        return [h.buildsys, "-C", str(ws), *a]

    n = len(list((ws / "recipes").glob("[!_]*.yaml")))
    first = h.must(cmd("build"))[0]
    age(ws)
    Buildsys(ws, n, 1, h).settle()
    rows = {"build (first, or from cache)": Cell([first])}
    for op, argv in (("no-op build", cmd("build")), ("status", cmd("status"))):
        rows[op] = Cell([h.must(argv)[0] for _ in range(runs)])
    recipe = ws / "recipes/resnet18.yaml"
    original = recipe.read_text()
    assert "tolerances:" not in original, "edit the benchmark: resnet18.yaml sets its own tolerances"
    samples = []
    try:
        for k in range(runs):
            recipe.write_text(original + f"\ntolerances:\n  fp32: {{atol: {1.0e-3 * (1 + k):.1e}, rtol: 1.0e-3}}\n")
            samples.append(h.must(cmd("build", "resnet18"))[0])
    finally:
        recipe.write_text(original)
    rows["resnet18 tolerance change"] = Cell(samples)
    lines = [f"{n} sample recipes, medians of {runs} runs", "", "| operation | wall | CPU |", "|---|---:|---:|"]
    lines += [f"| {op} | {fmt(c.wall)} | {fmt(c.cpu)} |" for op, c in rows.items()]
    return "\n".join(lines)
