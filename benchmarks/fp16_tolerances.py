"""fp16 parity figures of the samples and the real-model suite: what the fp16 tolerance is derived from.

    .venv/bin/python benchmarks/fp16_tolerances.py                 # 5 samples + 11 transformers architectures
    .venv/bin/python benchmarks/fp16_tolerances.py --only resnet18 bert-torchscript

One `buildsys build` of convert[fp16] and parity[fp16] (on the CPU: float16
storage, float32 arithmetic, as a GPU computes) for the five sample recipes as
they are, the `transformers` architectures of tests/fixtures/real_models.py
(TorchScript exporter) and the deliberately broken models of
tests/fixtures/models/fp16_broken.py. One row per recipe, the worst over every
parity point and output: max abs error, the output's scale (largest |reference|),
their ratio (the `max_scaled_error` figure), the lowest cosine, the lowest top-1
agreement overall and where the reference is decided, non-finite values, and
the verdict of the default fp16 tolerance.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from buildsys.recipe.model import DEFAULT_TOLERANCES  # noqa: E402
from tests.fixtures.real_models import TRANSFORMERS, workspace  # noqa: E402

SAMPLES = ("smallcnn", "resnet18", "transformer", "efficientnet_lite0", "efficientnet_lite0_int8")
BROKEN = ("healthy", "activations", "softmax", "layernorm")
FP16_ONLY = "targets: [{backend: tensorrt, precision: fp16}]\n"


def write(root: Path) -> list[str]:
    workspace(root, exporters=("torchscript",), fp16=True)
    names = [f"{m}-torchscript" for m in TRANSFORMERS]
    recipes = root / "recipes"
    shutil.copytree(REPO / "data", root / "data", dirs_exist_ok=True)
    for s in SAMPLES:
        shutil.copy(REPO / "recipes" / f"{s}.yaml", recipes / f"_s_{s}.yaml")
        (recipes / f"{s}.yaml").write_text(f"version: 1\nextends: _s_{s}.yaml\nname: {s}\n{FP16_ONLY}")
        names.append(s)
    for kind in BROKEN:
        (recipes / f"fp16-{kind}.yaml").write_text(
            f"version: 1\nmodel: {{factory: \"tm.fp16_broken:broken\", kwargs: {{kind: {kind}}}}}\n"
            "inputs: [{name: x, dtype: float32, shape: [batch, 16], data: {kind: normal, mean: 0.0, std: 1.0}}]\n"
            "outputs: [{name: scores}]\ndims: {batch: {min: 1, opt: 4, max: 8}}\n"
            f"export: {{opset: 18, exporter: torchscript}}\n{FP16_ONLY}")
        names.append(f"fp16-{kind}")
    return names


def figures(doc: dict) -> dict:
    outs = [m for r in doc["results"] for m in r["outputs"].values()]
    def worst(key, fn, default=None):
        vals = [m[key] for m in outs if m.get(key) is not None]
        return fn(vals) if vals else default
    return {"max_abs": worst("max_abs", max), "scale": worst("scale", min), "scaled": worst("scaled_error", max),
            "cosine": worst("cosine", lambda v: min(v, key=lambda c: c if c == c else -2)),
            "top1": worst("top1", min), "decided": worst("top1_decided", min),
            "rows": sum(m.get("decided") or 0 for m in outs), "nonfinite": sum(m.get("nan", 0) + m.get("inf", 0) for m in outs),
            "points": len(doc["results"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", help="recipe names")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="fp16-"))
    names = write(root)
    names = [n for n in names if not args.only or n in args.only]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "buildsys", "-C", str(root), "build", "--json", "-k", *names],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    steps = {s["id"]: s for s in json.loads(proc.stdout)["steps"]}
    tol = {k: v for k, v in vars(DEFAULT_TOLERANCES["fp16"]).items() if v is not None}
    print(f"default fp16 tolerance: {tol}")
    head = ("recipe", "pts", "max abs", "scale", "abs/scale", "min cosine", "top-1", "decided top-1 (rows)",
            "non-finite", "verdict")
    rows = [head]
    f = lambda x, spec: "—" if x is None else format(x, spec)  # noqa: E731
    for name in names:
        result = root / "out" / name / "parity" / "fp16.json"
        step = steps.get(f"{name}:parity[fp16]", {})
        if not result.is_file():
            blocker = next((s for s in steps.values() if s["id"].startswith(f"{name}:") and s["state"] == "failed"), step)
            why = (blocker.get("message") or blocker.get("summary") or "").strip().splitlines()[:1]
            rows.append((name, "", "", "", "", "", "", "", "", f"{blocker.get('id', name)} {blocker.get('state', 'not built')}"
                         + (f": {why[0][:80]}" if why else "")))
            continue
        doc = json.loads(result.read_text())
        g = figures(doc)
        why = doc.get("cause") or next((f for f in doc["failures"] if "ONNX Runtime failed" in f), "")
        verdict = "pass" if doc["passed"] else "FAIL" + (f" ({why[:70]}…)" if why else "")
        rows.append((name, str(g["points"]), f(g["max_abs"], ".2g"), f(g["scale"], ".3g"), f(g["scaled"], ".2g"),
                     f(g["cosine"], ".6f"), f(g["top1"], ".2f"), f"{f(g['decided'], '.2f')} ({g['rows']})",
                     str(g["nonfinite"]), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if r is head:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"workspace: {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
