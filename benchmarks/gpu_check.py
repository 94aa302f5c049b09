"""`make gpu-check`: what to run first on a machine with an NVIDIA GPU.

Runs the `gpu`-marked tests, then builds every sample recipe with every GPU
target (TensorRT fp32/fp16/int8, ONNX Runtime's CUDA provider fp32/fp16 and its
TensorRT provider fp16/int8) in a scratch workspace under out/gpu-check/, benches
them, and prints one table: target × built × parity × latency. int8 targets join
the recipes that have a calibration block. Exit status 0 only when the tests pass
and every target built and passed parity.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="sample recipes (default: all)")
    parser.add_argument("--no-tests", action="store_true", help="skip the gpu-marked tests")
    args = parser.parse_args(argv)
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
    latency: dict[tuple[str, str], str] = {}
    for recipe in chosen:
        subprocess.run([py, "-m", "buildsys", "-C", str(ws), "bench", recipe], capture_output=True, text=True)
        bench = ws / "out" / recipe / "bench.json"
        if bench.is_file():
            for row in json.loads(bench.read_text())["rows"]:
                if row["profile"] == 0:
                    latency[(recipe, row["artifact"])] = (f"{row['p50_ms']:.2f} ms" if row["runs"]
                                                          else row["note"][:60])
    ok = tests_rc == 0
    lines = [f"{'recipe':<22} {'target':<30} {'built':<12} {'parity':<8} latency p50 (profile 0)"]
    for recipe, ids in chosen.items():
        for tid in ids:
            step = steps.get(f"{recipe}:engine[{tid}]", {})
            state = step.get("state", "?")
            result = ws / "out" / recipe / "parity" / f"{tid}.json"
            parity = "-"
            if result.is_file():
                parity = "passed" if json.loads(result.read_text()).get("passed") else "FAILED"
            ok = ok and state in ("ran", "cached") and parity == "passed"
            why = "" if state in ("ran", "cached") else f"  {step.get('reason', '')[:80]}"
            lines.append(f"{recipe:<22} {tid:<30} {state:<12} {parity:<8} {latency.get((recipe, tid), '-')}{why}")
    print("\n".join(lines))
    print(f"gpu tests: {'passed' if tests_rc == 0 else f'exit {tests_rc}'}; logs under {ws / 'out'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
