"""`buildsys bench`: a latency table of every artifact, and TensorRT engines that cannot run here say why."""
from __future__ import annotations

import json

from tests.e2e.conftest import tiny_recipe


def test_bench_builds_then_times_eager_and_every_runnable_artifact(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.run("bench", "tiny", "--threads", "1")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:4] == ["artifact", "profile", "p50", "p90"]
    names = [ln.split()[0] for ln in lines[2:]]
    assert names[0] == "pytorch-eager" and "onnxruntime-fp32" in names
    doc = json.loads((workspace.root / "out/tiny/bench.json").read_text())
    rows = {row["artifact"]: row for row in doc["rows"]}
    for name in ("pytorch-eager", "onnxruntime-fp32"):
        assert rows[name]["runs"] >= 30 and 0 < rows[name]["p50_ms"] <= rows[name]["p99_ms"]
        assert rows[name]["shapes"] == {"x": [4, 4]}  # the opt shape


def test_a_tensorrt_engine_that_cannot_run_here_is_listed_with_the_reason(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0
    (workspace.root / "out/tiny/engines/tensorrt-fp16.plan").write_bytes(b"an engine from a GPU machine")
    r = workspace.run("bench", "tiny", "--no-build", "--threads", "1")
    assert r.code == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("tensorrt-fp16"))
    assert "unavailable: " in row
    doc = json.loads((workspace.root / "out/tiny/bench.json").read_text())
    trt = next(x for x in doc["rows"] if x["artifact"] == "tensorrt-fp16")
    assert trt["runs"] == 0 and trt["note"].startswith("unavailable: ")


def test_the_int8_engine_is_compared_with_an_fp32_engine_made_for_it(workspace):
    """A recipe with an int8 target alone: bench makes the fp32 engine of the same export and
    says the int8 engine's speed-up over it in CPU time at one thread."""
    int8_only = tiny_recipe().split("tolerances:")[0] + (
        "calibration: {data: {kind: normal, mean: 0.0, std: 1.0}, samples: 4}\n"
        "tolerances:\n  int8: {min_cosine: 0.9}\n"
        "targets:\n  - {backend: onnxruntime, precision: int8}\n")
    workspace.write("recipes/tiny.yaml", int8_only)
    r = workspace.run("bench", "tiny", "--threads", "1")
    assert r.code == 0, r.stderr
    assert not (workspace.root / "out/tiny/engines/onnxruntime-fp32.ort").exists()
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("onnxruntime-int8"))
    assert "x the fp32 engine in CPU time per run at 1 thread (" in row and "median of " in row
    doc = json.loads((workspace.root / "out/tiny/bench.json").read_text())
    int8 = next(x for x in doc["rows"] if x["artifact"] == "onnxruntime-int8")
    assert int8["runs"] >= 30 and "the fp32 engine" in int8["note"]
