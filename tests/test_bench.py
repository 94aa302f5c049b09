"""bench compares like with like: each artifact with PyTorch eager on the same device at the same precision."""
from __future__ import annotations

import pytest

from buildsys.tools import bench
from buildsys.tools.bench import BenchRow, Eager, baseline_for, eager_baselines, render

SHAPES = {"x": [32, 3, 224, 224]}


def row(artifact, p50, **labels):
    return BenchRow(artifact, 0, SHAPES, 30, p50, p50, p50, 1000.0, **labels)


def test_each_artifact_is_compared_with_eager_on_its_device_at_its_precision():
    assert baseline_for("cpu", "fp32") == baseline_for("cpu", "int8") == "pytorch-eager"
    assert baseline_for("cuda", "fp32") == "pytorch-eager-cuda-fp32"  # TF32 off, as the fp32 targets default
    assert baseline_for("cuda", "fp32", tf32=True) == "pytorch-eager-cuda-fp32-tf32"
    assert baseline_for("cuda", "fp16") == baseline_for("cuda", "int8") == baseline_for("cuda", "best") \
        == "pytorch-eager-cuda-fp16"


def test_a_cpu_machine_times_eager_on_the_cpu_only_and_a_gpu_machine_on_the_gpu_at_each_target_precision():
    assert eager_baselines({"fp16", "fp32"}, on_gpu=False, four_d=True) == [Eager("pytorch-eager", "cpu", "fp32")]
    assert eager_baselines({"fp32", "fp16", "int8"}, on_gpu=True, four_d=True) == [
        Eager("pytorch-eager", "cpu", "fp32"),
        Eager("pytorch-eager-cuda-fp32-tf32", "cuda", "fp32", tf32=True, channels_last=True),
        Eager("pytorch-eager-cuda-fp32", "cuda", "fp32", tf32=False, channels_last=True),
        Eager("pytorch-eager-cuda-fp16", "cuda", "fp16", channels_last=True)]
    only16 = eager_baselines({"fp16"}, on_gpu=True, four_d=False)
    assert [e.artifact for e in only16] == ["pytorch-eager", "pytorch-eager-cuda-fp16"]
    assert not only16[1].channels_last  # channels_last is for 4-D inputs


def test_the_table_divides_by_the_same_device_same_precision_eager_and_names_it():
    rows = [row("pytorch-eager", 40.0, device="cpu"),
            row("pytorch-eager-cuda-fp16", 1.5, device="cuda", precision="fp16", io=bench.DEVICE_RESIDENT),
            row("onnxruntime-fp32", 20.0, baseline="pytorch-eager"),
            row("onnxruntime-cuda-fp16", 1.0, device="cuda", precision="fp16", io=bench.DEVICE_RESIDENT,
                baseline="pytorch-eager-cuda-fp16", note="IOBinding, CUDA graph"),
            row("onnxruntime-cuda-fp16", 3.0, device="cuda", precision="fp16", io=bench.HOST_COPIES,
                baseline="pytorch-eager-cuda-fp16")]
    table = render("r", rows).splitlines()
    resident = next(ln for ln in table if ln.startswith("onnxruntime-cuda-fp16 [device]"))
    host = next(ln for ln in table if ln.startswith("onnxruntime-cuda-fp16 [host]"))
    assert "1.50x" in resident and "pytorch-eager-cuda-fp16" in resident and "IOBinding, CUDA graph" in resident
    assert "0.50x" in host and "host copies" in host
    assert "40.00x" not in resident  # never the GPU against the CPU
    assert "2.00x" in next(ln for ln in table if ln.startswith("onnxruntime-fp32"))


def test_a_gpu_row_whose_eager_baseline_could_not_run_has_no_ratio_rather_than_the_cpus():
    rows = [row("pytorch-eager", 40.0),
            BenchRow("pytorch-eager-cuda-fp16", 0, SHAPES, 0, 0, 0, 0, 0, note="unavailable: no CUDA in torch",
                     device="cuda", precision="fp16"),
            row("tensorrt-fp16", 1.0, device="cuda", precision="fp16", io=bench.DEVICE_RESIDENT,
                baseline="pytorch-eager-cuda-fp16")]
    line = next(ln for ln in render("r", rows).splitlines() if ln.startswith("tensorrt-fp16"))
    assert " n/a " in line and "40.00x" not in line


def test_bench_on_a_machine_without_a_gpu_times_cpu_eager_alone(tmp_path, monkeypatch):
    """A recipe with GPU targets, benched where there is no GPU: one eager row, on the CPU."""
    from buildsys.core import gpu
    from tests.steps.test_gpu_failures import recipe

    monkeypatch.setattr(gpu, "absent_reason", lambda: "no NVIDIA GPU on this machine (no /dev/nvidiactl)")
    loaded = recipe(tmp_path, "{backend: onnxruntime, provider: cuda, precision: fp16}",
                    "{backend: tensorrt, precision: fp32}").recipe
    assert bench.gpu_precisions(loaded) == {"fp16", "fp32"}
    monkeypatch.setattr(bench, "MIN_SECONDS", 0.0)
    rows = bench.bench_recipe(loaded, tmp_path, tmp_path / "out", threads=1)
    assert [(r.artifact, r.device) for r in rows if r.artifact.startswith("pytorch-eager")] == [("pytorch-eager", "cpu")]
    cuda = next(r for r in rows if r.artifact == "onnxruntime-cuda-fp16")  # listed, with the reason it cannot run
    assert cuda.runs == 0 and cuda.note == "unavailable: no NVIDIA GPU on this machine (no /dev/nvidiactl)"


@pytest.mark.gpu
def test_bench_on_a_gpu_gives_device_resident_and_host_copy_rows_against_gpu_eager(tmp_path):
    from tests.e2e.conftest import new_workspace, tiny_recipe

    ws = new_workspace(tmp_path)
    ws.write("recipes/tiny.yaml", tiny_recipe() + "targets:\n  - {backend: onnxruntime, provider: cuda, precision: fp32}\n")
    r = ws.run("bench", "tiny", "--threads", "1")
    assert r.code == 0, r.stderr
    import json

    rows = json.loads((ws.root / "out/tiny/bench.json").read_text())["rows"]
    cuda = [x for x in rows if x["artifact"] == "onnxruntime-cuda-fp32"]
    assert {x["io"] for x in cuda} == {bench.DEVICE_RESIDENT, bench.HOST_COPIES}
    assert all(x["baseline"] == "pytorch-eager-cuda-fp32" and x["runs"] >= 30 for x in cuda)
    assert any(x["artifact"] == "pytorch-eager-cuda-fp32" and x["runs"] for x in rows)
