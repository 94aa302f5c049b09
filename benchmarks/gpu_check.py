"""`make gpu-check`: what to run first on a machine with an NVIDIA GPU.

Runs the `gpu`-marked tests, then builds every sample recipe with every GPU
target (TensorRT fp32/fp16/int8, ONNX Runtime's CUDA provider fp32/fp16 and its
TensorRT provider fp16/int8) in a scratch workspace under out/gpu-check/, benches
them, and prints one table: target, built, parity, device-resident p50 and the
ratio to PyTorch eager on the same GPU at the same precision. int8 targets join
the recipes that have a calibration block. A target this host cannot run (no
TensorRT, say) is listed as unavailable with the reason. Exit status 0 only when
the tests pass and every target that can run here built and passed parity.

On a machine without a GPU it says so, builds nothing and exits 0: there is
nothing on it that a GPU check could run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGETS = [
    {"backend": "tensorrt", "precision": "fp32"},
    {"backend": "tensorrt", "precision": "fp16"},
    {"backend": "tensorrt", "precision": "int8"},
    {"backend": "onnxruntime", "provider": "cuda", "precision": "fp32"},
    {"backend": "onnxruntime", "provider": "cuda", "precision": "fp16"},
    {"backend": "onnxruntime", "provider": "tensorrt", "precision": "fp16"},
    {"backend": "onnxruntime", "provider": "tensorrt", "precision": "int8"},
]
RAN = ("ran", "cached", "cutoff")


def target_id(t: dict) -> str:
    return "-".join(x for x in (t["backend"], t.get("provider"), t["precision"]) if x)


def workspace(dest: Path, recipes: list[str]) -> dict[str, list[str]]:
    """A copy of the samples with the GPU targets; recipe name -> its target ids."""
    if dest.exists():
        shutil.rmtree(dest / "recipes", ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    for folder in ("models", "data"):
        if (ROOT / folder).is_dir() and not (dest / folder).exists():
            shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "recipes").mkdir()
    chosen = {}
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        if path.name.startswith("_"):
            shutil.copy(path, dest / "recipes" / path.name)
            continue
        if recipes and path.stem not in recipes:
            continue
        doc = yaml.safe_load(path.read_text())
        targets = [t for t in TARGETS if t["precision"] != "int8" or "calibration" in doc]
        doc["targets"] = targets
        (dest / "recipes" / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        chosen[doc.get("name", path.stem)] = [target_id(t) for t in targets]
    return chosen


def device_figures(rows: list[dict], target: str) -> tuple[str, str]:
    """(device-resident p50, ratio to its eager baseline) of `target` at profile 0, from bench.json's rows."""
    mine = [r for r in rows if r["profile"] == 0 and r["artifact"] == target and r.get("io") == "device-resident"]
    if not mine:
        return "-", "-"
    row = mine[0]
    if not row["runs"]:
        return row["note"][:40], "-"
    base = [r for r in rows if r["profile"] == 0 and r["artifact"] == row.get("baseline") and r["runs"]]
    ratio = f"{base[0]['p50_ms'] / row['p50_ms']:.2f}x {row['baseline'].removeprefix('pytorch-eager-')}" \
        if base and row["p50_ms"] else "n/a"
    return f"{row['p50_ms']:.2f} ms", ratio


def table(chosen: dict[str, list[str]], steps: dict[str, dict], parity: dict[tuple[str, str], bool | None],
          bench: dict[str, list[dict]]) -> tuple[list[str], dict[str, int]]:
    """The lines of the table and the count of targets passed, failed and unavailable."""
    counts = {"passed": 0, "failed": 0, "unavailable": 0}
    lines = [f"{'recipe':<22} {'target':<28} {'built':<12} {'parity':<7} {'device p50':<12} "
             f"{'vs eager (same GPU, precision)':<31} why"]
    for recipe, ids in chosen.items():
        for tid in ids:
            step = steps.get(f"{recipe}:engine[{tid}]", {})
            state = step.get("state", "missing")
            verdict = parity.get((recipe, tid))
            shown = "-" if verdict is None else "passed" if verdict else "FAILED"
            p50, ratio = device_figures(bench.get(recipe, []), tid)
            if state == "unavailable":
                counts["unavailable"] += 1
            elif state in RAN and verdict:
                counts["passed"] += 1
            else:
                counts["failed"] += 1
            why = "" if state in RAN else " ".join(step.get("reason", "").split())[:100]
            lines.append(f"{recipe:<22} {tid:<28} {state:<12} {shown:<7} {p50:<12} {ratio:<31} {why}".rstrip())
    return lines, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="sample recipes (default: all)")
    parser.add_argument("--no-tests", action="store_true", help="skip the gpu-marked tests")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from buildsys.core import gpu

    absent = gpu.absent_reason()
    if absent is not None:
        print(f"gpu-check: no GPU here ({absent}); nothing was built, benched or tested. "
              "Run it on a machine with an NVIDIA GPU.")
        return 0
    py = sys.executable
    tests_rc = 0
    if not args.no_tests:
        tests_rc = subprocess.run([py, "-m", "pytest", "-m", "gpu", "-q", "-rs"], cwd=ROOT).returncode
        if tests_rc == 5:  # every gpu test deselected: nothing ran, which is not a pass
            print("gpu-check: no gpu-marked test ran")
    ws = ROOT / "out" / "gpu-check"
    chosen = workspace(ws, args.recipes)
    build = subprocess.run([py, "-m", "buildsys", "-C", str(ws), "build", "-k", "--json", *chosen],
                           capture_output=True, text=True)
    try:
        steps = {s["id"]: s for s in json.loads(build.stdout)["steps"]}
    except (ValueError, IndexError, KeyError):
        print(build.stdout[-2000:], build.stderr[-2000:], sep="\n")
        return 3
    parity, bench = {}, {}
    for recipe, ids in chosen.items():
        for tid in ids:
            result = ws / "out" / recipe / "parity" / f"{tid}.json"
            if result.is_file():
                parity[(recipe, tid)] = bool(json.loads(result.read_text()).get("passed"))
        subprocess.run([py, "-m", "buildsys", "-C", str(ws), "bench", recipe, "--no-build"],
                       capture_output=True, text=True)
        doc = ws / "out" / recipe / "bench.json"
        if doc.is_file():
            bench[recipe] = json.loads(doc.read_text())["rows"]
    lines, counts = table(chosen, steps, parity, bench)
    print(f"gpu-check on {gpu.gpu().get('name', 'the GPU')} (driver {gpu.gpu().get('driver', '?')}, "
          f"CUDA {gpu.gpu().get('cuda', '?')})")
    print("\n".join(lines))
    tests = "skipped" if args.no_tests else "passed" if tests_rc == 0 else f"exit {tests_rc}"
    print(f"targets: {counts['passed']} passed, {counts['failed']} failed, {counts['unavailable']} unavailable here; "
          f"gpu tests: {tests}; logs under {ws / 'out'}")
    return 0 if tests_rc == 0 and counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
