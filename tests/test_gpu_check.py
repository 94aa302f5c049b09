"""`make gpu-check` (benchmarks/gpu_check.py): one table of every GPU target, and an exit status that holds."""
from __future__ import annotations

import subprocess
import sys

from benchmarks import gpu_check

REPO = gpu_check.ROOT
EAGER16 = {"artifact": "pytorch-eager-cuda-fp16", "profile": 0, "runs": 30, "p50_ms": 1.5, "io": "device-resident",
           "baseline": "", "note": ""}


def _row(artifact, p50, io, baseline="pytorch-eager-cuda-fp16", runs=30, note=""):
    return {"artifact": artifact, "profile": 0, "runs": runs, "p50_ms": p50, "io": io, "baseline": baseline,
            "note": note}


def test_the_table_gives_built_parity_device_p50_and_the_ratio_to_same_gpu_eager():
    chosen = {"resnet18": ["onnxruntime-cuda-fp16", "tensorrt-fp16", "onnxruntime-cuda-fp32"]}
    steps = {"resnet18:engine[onnxruntime-cuda-fp16]": {"state": "ran"},
             "resnet18:engine[tensorrt-fp16]": {"state": "unavailable",
                                                "reason": "TensorRT is not installed; its libraries come from ..."},
             "resnet18:engine[onnxruntime-cuda-fp32]": {"state": "ran"}}
    parity = {("resnet18", "onnxruntime-cuda-fp16"): True, ("resnet18", "onnxruntime-cuda-fp32"): False}
    bench = {"resnet18": [{**EAGER16, "artifact": "pytorch-eager", "p50_ms": 40.0}, EAGER16,
                          _row("onnxruntime-cuda-fp16", 3.0, "host copies"),
                          _row("onnxruntime-cuda-fp16", 1.0, "device-resident")]}
    lines, counts = gpu_check.table(chosen, steps, parity, bench)
    assert lines[0].split()[:6] == ["recipe", "target", "built", "parity", "device", "p50"]
    fp16 = lines[1].split()
    assert fp16[:7] == ["resnet18", "onnxruntime-cuda-fp16", "ran", "passed", "1.00", "ms", "1.50x"]
    assert fp16[7] == "cuda-fp16"  # the baseline it was divided by: eager on the same GPU at fp16
    assert lines[2].split()[2] == "unavailable" and "TensorRT is not installed" in lines[2]
    assert lines[3].split()[2:4] == ["ran", "FAILED"]
    assert counts == {"passed": 1, "failed": 1, "unavailable": 1}


def test_without_a_gpu_it_says_so_builds_nothing_and_exits_0(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("gpu-check: no GPU here (") and "nothing was built, benched or tested" in r.stdout
