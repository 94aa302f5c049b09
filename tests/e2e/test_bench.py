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
