"""INT8 end to end on a tiny model: adding a target runs only what it needs, random data is flagged."""
from __future__ import annotations

import json

from tests.e2e.conftest import tiny_recipe

INT8 = """\
calibration: {data: {kind: normal, mean: 0.0, std: 1.0}, samples: 16, method: minmax}
tolerances:
  fp32: {atol: 1.0e-4, rtol: 1.0e-3}
  int8: {min_cosine: 0.99}
targets:
  - {backend: onnxruntime, precision: fp32}
  - {backend: onnxruntime, precision: int8}
  - {backend: tensorrt, precision: int8}
"""


def _with_int8() -> str:
    base = tiny_recipe().split("tolerances:")[0]
    return base + INT8


def test_adding_an_int8_target_runs_only_the_int8_steps(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0

    workspace.write("recipes/tiny.yaml", _with_int8())
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert r.ran() == ["tiny:calibrate", "tiny:engine[onnxruntime-int8]", "tiny:parity[int8]",
                       "tiny:quantize[onnxruntime]", "tiny:quantize[tensorrt]"]
    states = r.states()
    for fp32 in ("tiny:export", "tiny:simplify", "tiny:reference", "tiny:parity[fp32]",
                 "tiny:engine[onnxruntime-fp32]"):
        assert states[fp32] == "cached", fp32
    # no GPU here: the TensorRT engine is unavailable with the reason, never faked
    trt = next(s for s in r.json["steps"] if s["id"] == "tiny:engine[tensorrt-int8]")
    assert trt["state"] in ("unavailable", "ran")
    if trt["state"] == "unavailable":
        assert "GPU" in trt["reason"] or "TensorRT" in trt["reason"]
        assert not (workspace.root / "out/tiny/engines/tensorrt-int8.plan").exists()
        assert workspace.build("--require-all").code != 0

    out = workspace.root / "out/tiny"
    calib = json.loads((out / "calib.json").read_text())
    assert calib["random_data"] is True
    parity = json.loads((out / "parity/int8.json").read_text())
    assert parity["passed"] is True and parity["tolerance"]["min_cosine"] == 0.99
    assert {row["point"] for row in parity["results"]} == {"min", "opt", "max", "random1", "random2"}
    assert (out / "engines/onnxruntime-int8.ort").is_file()
    # the latency record: both engines, CPU time at 1 thread and wall time, median and min, the method named
    lat = parity["int8"]["latency"]
    assert lat["fp32"] == "fp32 engine: the ORT format of model.sim.onnx"
    assert lat["int8"] == "int8 engine: the ORT format of model.int8.onnx"
    assert lat["method"].startswith("process CPU time per run at 1 intra-op thread")
    assert f"median and min of {lat['runs']} runs" in lat["method"] and lat["runs"] >= 30
    assert lat["point"] == "opt" and lat["threads"] >= 1
    for measure in ("cpu_ms", "wall_ms"):
        for engine in ("fp32", "int8"):
            assert 0 < lat[measure][engine]["min"] <= lat[measure][engine]["median"], (measure, engine, lat)
    assert lat["fp32_ms"] == lat["cpu_ms"]["fp32"]["median"] and lat["int8_ms"] == lat["cpu_ms"]["int8"]["median"]
    assert lat["speedup"] == round(lat["fp32_ms"] / lat["int8_ms"], 3)
    assert "vs the fp32 engine's" in r.stderr and "CPU time per run at 1 thread" in r.stderr

    # the gate's reports say that calibration used random data
    r = workspace.run("check")
    assert r.code == 0, r.stderr
    report = json.loads((workspace.root / "out/reports/parity.json").read_text())
    checks = [c for rec in report["recipes"] if rec["name"] == "tiny" for c in rec["checks"]]
    int8 = [c for c in checks if "int8" in c["check"]]
    assert int8 and all(c["random_calibration"] for c in int8)
    assert "random data" in (workspace.root / "out/reports/parity.md").read_text()


OUTLIER = """\
version: 1
model: {factory: "tm.outlier:outlier"}
inputs:
  - name: x
    dtype: float32
    shape: [batch, 16]
    data: {kind: normal, mean: 0.0, std: 1.0}
outputs:
  - name: scores
dims:
  batch: {min: 1, opt: 8, max: 16}
export: {opset: 18, exporter: torchscript}
calibration: {data: {kind: normal, mean: 0.0, std: 1.0}, samples: 8, method: minmax, per_channel: false}
tolerances:
  int8: {min_cosine: 0.99}
targets:
  - {backend: onnxruntime, precision: int8}
"""


def test_fallback_keeps_the_outlier_layer_in_fp32_and_the_pinned_recipe_searches_nothing(workspace):
    # Without the fallback the layer with the outlier weight fails the gate.
    workspace.write("recipes/outlier.yaml", OUTLIER)
    r = workspace.build()
    assert r.code == 1, r.stderr
    assert "int8 FAILED" in r.stderr and "cosine" in r.stderr

    workspace.write("recipes/outlier.yaml", OUTLIER + "quantization: {fallback: auto, max_fp32_nodes: 2}\n")
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert r.ran() == ["outlier:engine[onnxruntime-int8]", "outlier:fallback[onnxruntime]", "outlier:parity[int8]"]
    out = workspace.root / "out/outlier"
    report = json.loads((out / "fallback.json").read_text())
    assert report["searched"] is True and report["passed"] is True
    assert report["kept_fp32"] == ["/fc2/Gemm"]
    assert report["sensitivity"][0]["node"] == "/fc2/Gemm"
    assert report["before"]["lowest_cosine"] < 0.99 <= report["after"]["lowest_cosine"]
    assert set(report["latency_ms"]) == {"fp32", "int8_before", "int8_after"}
    assert "kept 1 node in fp32 (/fc2/Gemm)" in r.stderr
    assert "quantization: {exclude: [/fc2/Gemm]}" in r.stderr
    parity = json.loads((out / "parity/int8.json").read_text())
    assert parity["passed"] is True and parity["candidate"] == "model.int8.fallback.onnx"
    # the reports show agreement overall and where fp32 is decided, row cosines and both latencies
    assert workspace.run("check").code == 0
    md = (workspace.root / "out/reports/parity.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- outlier: int8 for"))
    assert "top-1" in line and "cosine per row (min/median/max)" in line
    assert "vs fp32 engine" in line and "in CPU time per run at 1 thread, median of" in line
    assert "judged on x: seeded normal noise (mean 0, std 1)" in line
    assert "int8 for" in (workspace.root / "out/reports/parity.html").read_text()

    # The same build again is a cache hit: the search is a step like every other.
    r = workspace.build()
    assert r.code == 0 and r.ran() == []

    # The printed line pins the choice: quantize keeps the node in fp32 itself, nothing is searched.
    workspace.write("recipes/outlier.yaml", OUTLIER + "quantization: {fallback: auto, exclude: [/fc2/Gemm]}\n")
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "outlier:quantize[onnxruntime]" in r.ran()
    report = json.loads((out / "fallback.json").read_text())
    assert report["searched"] is False and report["kept_fp32"] == [] and report["pinned"] == ["/fc2/Gemm"]
    assert "no fp32 fallback needed" in r.stderr
    # and exclude alone, without the fallback step, passes the gate
    workspace.write("recipes/outlier.yaml", OUTLIER + "quantization: {exclude: [/fc2/Gemm]}\n")
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "fallback" not in " ".join(s["id"] for s in r.json["steps"])


def test_exclude_naming_no_node_is_a_step_error_naming_the_field(workspace):
    workspace.write("recipes/outlier.yaml", OUTLIER + "quantization: {exclude: [/fc2/Gem]}\n")
    r = workspace.build()
    assert r.code == 3, r.stderr
    assert "quantization.exclude" in r.stderr and "'/fc2/Gem'" in r.stderr
    assert "did you mean '/fc2/Gemm'" in r.stderr


def test_the_cpu_class_is_in_the_quantize_key_and_the_report(workspace):
    workspace.write("recipes/outlier.yaml", OUTLIER.replace("0.99", "0.5") + "quantization: {cpu: vnni}\n")
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "int8 for VNNI CPUs" in r.stderr
    vnni = (workspace.root / "out/outlier/model.int8.onnx").read_bytes()

    workspace.write("recipes/outlier.yaml", OUTLIER.replace("0.99", "0.5") + "quantization: {cpu: avx2}\n")
    status = workspace.run("status")
    assert "quantization.cpu: vnni → avx2" in status.stdout + status.stderr
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "outlier:quantize[onnxruntime]" in r.ran() and "outlier:calibrate" not in r.ran()
    assert "int8 for AVX2 CPUs" in r.stderr
    assert (workspace.root / "out/outlier/model.int8.onnx").read_bytes() != vnni
    parity = json.loads((workspace.root / "out/outlier/parity/int8.json").read_text())
    assert parity["int8"]["cpu"] == "avx2" and parity["int8"]["latency"]["int8_ms"] > 0

    # back to vnni: served from the cache, never the avx2 model
    workspace.write("recipes/outlier.yaml", OUTLIER.replace("0.99", "0.5") + "quantization: {cpu: vnni}\n")
    r = workspace.build()
    assert r.code == 0 and r.ran() == []
    assert (workspace.root / "out/outlier/model.int8.onnx").read_bytes() == vnni


def test_a_fallback_that_spends_its_budget_says_so_and_the_gate_fails(workspace):
    strict = OUTLIER.replace("min_cosine: 0.99", "min_cosine: 0.999999")
    workspace.write("recipes/outlier.yaml", strict + "quantization: {fallback: auto, max_fp32_nodes: 1}\n")
    r = workspace.build()
    assert r.code == 1, r.stderr
    assert "int8 still fails with 1 of at most 1 nodes in fp32 (/fc2/Gemm)" in r.stderr
    assert "int8 FAILED" in r.stderr
    report = json.loads((workspace.root / "out/outlier/fallback.json").read_text())
    assert report["passed"] is False and report["kept_fp32"] == ["/fc2/Gemm"] and "pin" in report


IMAGES = """\
version: 1
model: {factory: "tm.signs_cnn:signs_cnn"}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, 16, 16], data: {kind: images, path: photos}}
outputs: [{name: logits}]
dims: {batch: {min: 1, opt: 2, max: 2}}
export: {opset: 17, exporter: torchscript}
calibration: {data: {kind: images, path: photos, preset: imagenet}, samples: 8}
parity: {samples: 3, points: [opt], random_shapes: 0, holdout: 0.5}
tolerances:
  int8: {min_cosine: 0.9}
targets:
  - {backend: onnxruntime, precision: int8}
"""


def _photos(folder, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        pixels = (rng.random((30 + i, 40, 3)) * 255 * (i + 1) / n).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return [f"photos/p{i}.png" for i in range(n)]


def test_int8_is_judged_on_images_calibration_never_saw(workspace):
    photos = _photos(workspace.root / "photos", 4)
    workspace.write("recipes/signs.yaml", IMAGES)

    r = workspace.build()

    assert r.code == 0, r.stderr
    out = workspace.root / "out/signs"
    calib = json.loads((out / "calib.json").read_text())
    held = calib["held_out"]
    assert len(held) == 2 and set(held) < set(photos)
    calibrated = [f["name"] for f in calib["data"]["files"]]
    assert sorted(calibrated + held) == photos and not set(calibrated) & set(held)
    parity = json.loads((out / "parity/int8.json").read_text())
    data = parity["int8"]["data"]["image"]
    assert data["kind"] == "images" and data["files"] == held and data["held_out_of_calibration"] == 2
    said = "image: seeded views (imagenet preset) of 2 images of photos (2 held out of calibration)"
    assert parity["int8"]["judged_on"] == said and f"judged on {said}" in r.stderr
    # the views are real images of those files, not noise: every row differs, in the preset's range
    import numpy as np

    from buildsys.steps.reference import read_reference

    manifest, arrays = read_reference(out / "reference.npz")
    views = np.concatenate([arrays[e["inputs"]["image"]] for e in manifest])
    assert views.shape == (6, 3, 16, 16) and len({v.tobytes() for v in views}) == 6
    assert -2.2 < views.min() and views.max() < 2.7

    assert workspace.run("check").code == 0
    md = (workspace.root / "out/reports/parity.md").read_text()
    assert said in md

    # another split calibrates on other files: calibrate runs again, with the other half
    workspace.write("recipes/signs.yaml", IMAGES.replace("holdout: 0.5", "holdout: 0.25"))
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "signs:calibrate" in r.ran() and "signs:reference" in r.ran()
    assert len(json.loads((out / "calib.json").read_text())["held_out"]) == 1
