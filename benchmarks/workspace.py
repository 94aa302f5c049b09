"""The synthetic workspaces: N recipes of a tiny model, and the files the other tools' pipelines run.

A workspace holds recipes/m0000.yaml ... (each a different model, so that no two
recipes share keys, store blobs or DVC cache entries), bm/tiny.py (the model and
its factory, tests/fixtures/models/tiny.py) and tools/step.py and tools/split.py
(the stand-in steps of make and DVC, copied from benchmarks/standins/).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
MODEL = REPO / "tests" / "fixtures" / "models" / "tiny.py"
STANDINS = Path(__file__).resolve().parent / "standins"

RECIPE = """\
version: 1
model: {{factory: "bm.tiny:tiny", kwargs: {{features: {features}}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, {features}]}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
export: {{opset: 18, exporter: torchscript}}
tolerances: {{fp32: {{atol: {atol}, rtol: 1.0e-3}}}}
"""
ATOL = "1.0e-4"
STEPS = ("export", "reference", "simplify", "parity", "engine")
LAYOUT = 3  # bump when the generated workspaces change: --reuse then rebuilds them


def name(i: int) -> str:
    return f"m{i:04d}"


def original_recipe(i: int, atol: str = ATOL) -> str:
    # every recipe a different model: recipes that resolve to the same steps would share
    # keys, store blobs and DVC cache entries, and the clean build would not build N models
    return RECIPE.format(features=4 + i, atol=atol)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_sources(ws: Path, n: int) -> None:
    """Create the workspace `ws` with `n` recipes, the model and the stand-in steps."""
    (ws / "recipes").mkdir(parents=True)
    write(ws / "bm/__init__.py", "")
    shutil.copy(MODEL, ws / "bm/tiny.py")
    (ws / "tools").mkdir()
    for standin in ("step.py", "split.py"):
        shutil.copy(STANDINS / standin, ws / "tools" / standin)
    for i in range(n):
        (ws / f"recipes/{name(i)}.yaml").write_text(original_recipe(i))


def age(ws: Path, seconds: float = 60.0) -> None:
    """Make every file under `ws` older, as if the build had happened a while ago."""
    past = time.time() - seconds
    for p in ws.rglob("*"):
        os.utime(p, (past, past), follow_symlinks=False)
