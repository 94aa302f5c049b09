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

    # the gate's reports say that calibration used random data
    r = workspace.run("check")
    assert r.code == 0, r.stderr
    report = json.loads((workspace.root / "out/reports/parity.json").read_text())
    checks = [c for rec in report["recipes"] if rec["name"] == "tiny" for c in rec["checks"]]
    int8 = [c for c in checks if "int8" in c["check"]]
    assert int8 and all(c["random_calibration"] for c in int8)
    assert "random data" in (workspace.root / "out/reports/parity.md").read_text()
