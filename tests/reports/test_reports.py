"""The parity reports: what a CI gate and a reviewer read. Synthetic parity documents, tmp dirs."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from buildsys.core.errors import UsageError
from buildsys.core.numerics import compare
from buildsys.engine.status import check_status
from buildsys.reports import ReportInput, write_reports
from buildsys.reports.baseline import grew
from buildsys.reports.collect import from_json, to_json

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "parity-report.schema.json").read_text())
META = {"buildsys": "0.1.0", "timestamp": "2026-01-02T03:04:05+00:00",
        "tools": {"onnxruntime": "1.32.0", "onnx": "1.23.2"}, "machine": {"host": "ci-7", "cpu_model": "Test CPU"}}
FP32 = {"atol": 1e-4, "rtol": 1e-3, "min_cosine": None, "min_top1": None}
INT8 = {"atol": None, "rtol": None, "min_cosine": 0.99, "min_top1": 0.9}
HOSTILE = "<script>alert(1)</script>"


def parity_doc(check: str, tol: dict, outputs: dict[str, float], points=("min", "opt", "max"),
               error_at: str | None = None) -> dict:
    """A per-recipe parity result as parity.py writes it; `outputs` maps name -> size of the added error."""
    rng = np.random.default_rng(0)
    results, failures = [], []
    for point in points:
        row = {"point": point, "sample": 0, "shapes": {"x": [2, 8]}, "outputs": {}, "error": None}
        if point == error_at:
            row["error"] = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions \x1b[31mred\x1b[0m"
            failures.append(f"{point}: ONNX Runtime failed")
        else:
            for name, err in outputs.items():
                ref = rng.standard_normal((2, 8)).astype(np.float32)
                got = ref.copy()
                got[1, 3] += err
                m = compare(ref, got, tol)
                row["outputs"][name] = m
                failures += [f"{point} {name}: {f}" for f in m["failures"]]
        results.append(row)
    return {"precision": check, "tolerance": tol, "passed": not failures, "failures": failures,
            "candidate": "model.sim.onnx", "results": results}


def entry(tmp: Path, recipe: str, check: str = "fp32", doc: dict | None = None, **kw) -> ReportInput:
    path = None
    if doc is not None:
        path = tmp / "out" / recipe / "parity" / f"{check}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, allow_nan=True))
    kw.setdefault("state", "ran")
    kw.setdefault("recipe_digest", f"digest-{recipe}")
    return ReportInput(recipe=recipe, recipe_file=f"recipes/{recipe}.yaml", check=check, result=path, **kw)


def gate(failed: bool) -> int:
    """`check`'s exit status when no step failed and every recipe was read: the gate's alone."""
    return check_status([], False, failed)


def report(tmp: Path, entries: list[ReportInput], **kw):
    out = tmp / "out" / "reports"
    kw.setdefault("exit_status", gate)
    return write_reports(out, entries, META, **kw), out


def validate(out: Path) -> dict:
    text = (out / "parity.json").read_text()

    def strict(name):
        raise AssertionError(f"parity.json is not strict JSON: {name}")

    doc = json.loads(text, parse_constant=strict)
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc), key=lambda e: e.json_path)
    assert not errors, [f"{e.json_path}: {e.message[:200]}" for e in errors]
    return doc


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def test_schema_is_valid_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_all_passing_report_is_valid_and_exits_0(tmp_path):
    summary, out = report(tmp_path, [entry(tmp_path, "resnet18", doc=parity_doc("fp32", FP32, {"logits": 1e-6})),
                                     entry(tmp_path, "bert", doc=parity_doc("fp32", FP32, {"start": 0, "end": 2e-6}))])
    doc = validate(out)
    assert summary.exit_status == 0 and doc["summary"]["exit_status"] == 0
    assert (summary.passed, summary.failed, summary.skipped) == (3, 0, 0)
    o = doc["recipes"][0]["checks"][0]["results"][0]["outputs"][0]
    assert o["max_abs"] == pytest.approx(1e-6, rel=1e-2) and o["passed"] is True
    assert o["worst"]["index"] == [1, 3] and o["worst"]["candidate"] != o["worst"]["reference"]
    assert o["histogram"]["counts"] and doc["recipes"][0]["checks"][0]["tolerance"]["atol"] == 1e-4
    assert doc["recipes"][0]["digest"] == "digest-resnet18" and doc["tools"]["onnxruntime"] == "1.32.0"
    assert doc["machine"]["host"] == "ci-7"


def test_failing_report_is_valid_strict_json_and_exits_1(tmp_path):
    nan_doc = parity_doc("int8", INT8, {"logits": math.nan})
    summary, out = report(tmp_path, [
        entry(tmp_path, "smallcnn", "int8", nan_doc, random_calibration=True,
              divergence={"node": "conv2", "op_type": "Conv", "output": "c2", "max_abs": 3.5, "cosine": math.nan}),
        entry(tmp_path, "smallcnn", "fp32", parity_doc("fp32", FP32, {"logits": 0.5}, error_at="max")),
        entry(tmp_path, "vit", "fp32", None, state="failed", reason="export: opset 18 requested, got 17",
              outputs=("logits",)),
    ])
    doc = validate(out)
    assert summary.exit_status == 1 and summary.failed == 3 and summary.passed == 0
    int8 = doc["recipes"][0]["checks"][0]
    assert int8["random_calibration"] is True and int8["divergence"]["node"] == "conv2"
    assert int8["divergence"]["cosine"] == "NaN"
    assert int8["results"][0]["outputs"][0]["max_abs"] == "Infinity"
    fp32 = doc["recipes"][0]["checks"][1]
    assert fp32["results"][2]["error"].startswith("[ONNXRuntimeError]") and fp32["status"] == "failed"
    assert doc["recipes"][1]["checks"][0]["status"] == "error"


def test_json_round_trip_keeps_non_finite_figures():
    doc = {"recipes": [{"max_abs": math.inf, "cosine": math.nan, "name": "NaN"}]}
    back = from_json(to_json(doc))
    assert back["recipes"][0]["max_abs"] == math.inf and math.isnan(back["recipes"][0]["cosine"])
    assert back["recipes"][0]["name"] == "NaN"  # a name is text, whatever it spells


def test_markdown_puts_failures_first_and_collapses_passing_recipes(tmp_path):
    _, out = report(tmp_path, [
        entry(tmp_path, "aaa-pass", doc=parity_doc("fp32", FP32, {"logits": 1e-6})),
        entry(tmp_path, "aaa-pass", "int8", parity_doc("int8", INT8, {"logits": 1e-3})),
        entry(tmp_path, "zzz-fail", doc=parity_doc("fp32", FP32, {"logits": 0.5, "aux": 1e-7})),
    ])
    md = (out / "parity.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2] not in "|-"]
    assert md.startswith("### ❌ Parity: 1 failed, 3 passed")
    assert all("zzz-fail" in r and "❌" in r for r in rows[:3]), rows
    assert [r.split(" | ")[2] for r in rows[:3]] == ["fp32"] * 3 and "0.5" in rows[0]
    assert "atol 0.0001, rtol 0.001" in rows[0]
    passing = [r for r in rows if "aaa-pass" in r]
    assert len(passing) == 1 and "✅" in passing[0] and "fp32, int8" in passing[0]
    assert rows.index(passing[0]) > 2
    # zzz-fail's aux output passed everywhere: no row of its own beyond the failing check
    assert not any("aux" in r for r in rows)


def test_not_run_checks_appear_with_their_reason(tmp_path):
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(parity_doc("int8", INT8, {"logits": 0.0})))
    summary, out = report(tmp_path, [
        entry(tmp_path, "ok", doc=parity_doc("fp32", FP32, {"logits": 0.0})),
        entry(tmp_path, "blocked", "int8", None, state="skipped", reason="calibrate failed", outputs=("logits",)),
        # a file from an earlier build is not trusted when this build says the step did not run
        ReportInput("broken", "recipes/broken.yaml", "d", "fp32", stale, state="failed",
                    reason="ONNX Runtime cannot load the model: bad node"),
        entry(tmp_path, "gpu", "tensorrt-fp16", None, state="unavailable", reason="no NVIDIA GPU",
              outputs=("logits", "boxes")),
    ])
    doc = validate(out)
    assert summary.exit_status == 1
    assert (summary.passed, summary.failed, summary.skipped) == (1, 2, 2)
    statuses = {r["name"]: r["checks"][0]["status"] for r in doc["recipes"]}
    assert statuses == {"ok": "passed", "blocked": "blocked", "broken": "error", "gpu": "unavailable"}
    assert doc["recipes"][2]["checks"][0]["results"] == []
    md = (out / "parity.md").read_text()
    assert "not run: calibrate failed" in md and "bad node" in md and "unavailable: no NVIDIA GPU" in md
    lines = md.splitlines()
    assert max(i for i, line in enumerate(lines) if "❌" in line and line.startswith("|")) < \
        min(i for i, line in enumerate(lines) if "✅" in line)
    suites = {s.get("name"): s for s in ET.parse(out / "junit.xml").getroot()}
    failure = suites["blocked"].find("testcase/failure")
    assert failure.get("type") == "blocked" and "calibrate failed" in failure.get("message")
    assert [s.get("message") for s in suites["gpu"].iter("skipped")] == ["unavailable: no NVIDIA GPU"] * 2
    assert "calibrate failed" in (out / "parity.html").read_text()


def test_a_failed_verdict_without_figures_still_fails(tmp_path):
    empty = {"precision": "fp32", "tolerance": FP32, "passed": False, "failures": ["no shape point could be run"],
             "candidate": "model.sim.onnx", "results": []}
    summary, out = report(tmp_path, [entry(tmp_path, "m", doc=empty)])
    validate(out)
    assert summary.exit_status == 1 and summary.failed == 1
    assert "no shape point could be run" in (out / "parity.md").read_text()


def test_unavailable_backends_do_not_fail_the_gate(tmp_path):
    summary, _ = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"y": 0.0})),
                                   entry(tmp_path, "m", "tensorrt-fp16", None, state="unavailable",
                                         reason="tensorrt is not installed")])
    assert summary.exit_status == 0 and summary.skipped == 1


def test_hostile_names_are_text_in_html(tmp_path):
    _, out = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {HOSTILE: 0.5}),
                                     description=f"desc {HOSTILE}")])
    page = (out / "parity.html").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<svg") == 3 and 'class="bad"' in page  # the 0.5 error lands above atol
    md = (out / "parity.md").read_text()
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_junit_structure_counts_and_escaping(tmp_path):
    _, out = report(tmp_path, [
        entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {HOSTILE: 0.5, "ok": 0.0}, error_at="max")),
        entry(tmp_path, "m", "int8", parity_doc("int8", INT8, {HOSTILE: 0.0})),
        entry(tmp_path, "n", "tensorrt-int8", None, state="unavailable", reason='needs "GPU" & <TensorRT>'),
    ])
    root = ET.parse(out / "junit.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "2", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["m", "n"]
    m = suites[0]
    assert (m.get("tests"), m.get("failures"), m.get("skipped")) == ("3", "2", "0")
    cases = m.findall("testcase")
    assert {c.get("classname") for c in cases} == {"m"}
    assert [c.get("name") for c in cases] == [f"fp32 {HOSTILE}", "fp32 ok", f"int8 {HOSTILE}"]
    failure = cases[0].find("failure")
    assert failure.get("type") == "tolerance" and "min.0" in failure.get("message")
    assert "ONNX Runtime failed" in failure.get("message") and "\ufffd[31mred" in failure.get("message")
    assert "max_abs" in failure.text and "0.5" in failure.text and "atol 0.0001" in failure.text
    assert cases[1].find("failure") is not None  # the max point could not run for this output either
    assert cases[2].find("failure") is None and cases[2].find("skipped") is None
    assert suites[1].find("testcase/skipped").get("message") == 'unavailable: needs "GPU" & <TensorRT>'
    raw = (out / "junit.xml").read_text()
    assert "<script>" not in raw and "&lt;script&gt;" in raw


def _baseline(tmp: Path, outputs: dict[str, float], recipes=("m",), check_doc=None) -> Path:
    base_dir = tmp / "main"
    entries = [entry(base_dir, r, doc=check_doc or parity_doc("fp32", FP32, outputs)) for r in recipes]
    write_reports(base_dir / "reports", entries, META, exit_status=gate)
    return base_dir / "reports" / "parity.json"


def test_regression_within_tolerance_fails_the_gate(tmp_path):
    base = _baseline(tmp_path, {"logits": 1e-5})
    summary, out = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"logits": 3e-5}))],
                          baseline=base)
    doc = validate(out)
    assert summary.exit_status == 1 and summary.failed == 1 and len(summary.regressions) == 3
    r = summary.regressions[0]
    assert (r["recipe"], r["check"], r["output"], r["figure"]) == ("m", "fp32", "logits", "max_abs")
    assert r["before"] == pytest.approx(1e-5, rel=1e-2) and r["after"] == pytest.approx(3e-5, rel=1e-2)
    assert doc["recipes"][0]["checks"][0]["results"][0]["outputs"][0]["regressed"] == ["max_abs"]
    md = (out / "parity.md").read_text()
    assert "regression" in md and "⚠️" in md and "1e-05 → 3e-05 (×3)" in md
    failure = ET.parse(out / "junit.xml").getroot().find("testsuite/testcase/failure")
    assert failure.get("type") == "regression"


def test_looser_factor_accepts_the_same_change(tmp_path):
    base = _baseline(tmp_path, {"logits": 1e-5})
    summary, _ = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"logits": 3e-5}))],
                        baseline=base, max_regression=4.0)
    assert summary.exit_status == 0 and not summary.regressions


def test_improvement_passes_and_is_shown(tmp_path):
    base = _baseline(tmp_path, {"logits": 5e-5})
    summary, out = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"logits": 5e-6}))],
                          baseline=base)
    assert summary.exit_status == 0 and not summary.regressions and len(summary.improvements) == 3
    md = (out / "parity.md").read_text()
    assert "Improvements (3)" in md and "5e-05 → 5e-06" in md
    assert "Improvements (3)" in (out / "parity.html").read_text()


def test_noise_below_the_floor_is_not_a_regression(tmp_path):
    base = _baseline(tmp_path, {"logits": 1e-9})
    summary, _ = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"logits": 3e-9}))],
                        baseline=base)
    assert summary.exit_status == 0 and not summary.regressions
    assert grew(1e-9, 3e-9, 2.0, 1e-6) is False and grew(1e-5, 3e-5, 2.0, 1e-6) is True
    assert grew(1e-5, math.nan, 2.0, 1e-6) is True and grew(math.nan, 1e-5, 2.0, 1e-6) is False


def test_cosine_deficit_regression(tmp_path):
    base = _baseline(tmp_path, {}, check_doc=parity_doc("int8", INT8, {"logits": 0.05}))
    worse = parity_doc("int8", INT8, {"logits": 0.5})
    summary, _ = report(tmp_path, [entry(tmp_path, "m", doc=worse)], baseline=base)
    assert {r["figure"] for r in summary.regressions} == {"max_abs", "cosine"}


def test_new_removed_and_changed_recipes_are_listed(tmp_path):
    base = _baseline(tmp_path, {"logits": 1e-5}, recipes=("kept", "gone"))
    summary, out = report(tmp_path, [
        entry(tmp_path, "kept", doc=parity_doc("fp32", FP32, {"logits": 1e-5}), recipe_digest="digest-new"),
        entry(tmp_path, "kept", "int8", parity_doc("int8", INT8, {"logits": 1e-3})),
        entry(tmp_path, "fresh", doc=parity_doc("fp32", FP32, {"logits": 1e-5})),
    ], baseline=base)
    b = validate(out)["baseline"]
    assert b["new_recipes"] == ["fresh"] and b["removed_recipes"] == ["gone"]
    assert b["changed_recipes"] == [{"name": "kept", "before": "digest-kept", "after": "digest-new"}]
    assert b["new_checks"] == ["kept int8"]
    assert summary.exit_status == 0
    md = (out / "parity.md").read_text()
    assert "New recipes: fresh" in md and "Removed recipes: gone" in md and "Changed recipes" in md


def test_unreadable_baseline_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read the baseline"):
        report(tmp_path, [], baseline=tmp_path / "missing.json")
    per_recipe = tmp_path / "fp32.json"
    per_recipe.write_text(json.dumps(parity_doc("fp32", FP32, {"y": 0.0})))
    with pytest.raises(UsageError, match="not a buildsys parity report"):
        report(tmp_path, [], baseline=per_recipe)


def test_markdown_is_appended_to_the_github_step_summary(tmp_path, monkeypatch):
    summary_file = tmp_path / "step_summary.md"
    summary_file.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    _, out = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"y": 0.0}))])
    assert summary_file.read_text() == "earlier step\n" + (out / "parity.md").read_text()
    report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"y": 0.0}))])
    assert summary_file.read_text().count("### ✅ Parity") == 2


def test_extra_copies_for_ci(tmp_path):
    md, xml = tmp_path / "ci" / "comment.md", tmp_path / "ci" / "results.xml"
    summary, out = report(tmp_path, [entry(tmp_path, "m", doc=parity_doc("fp32", FP32, {"y": 0.0}))],
                          markdown_path=md, junit_path=xml)
    assert md.read_text() == (out / "parity.md").read_text()
    assert xml.read_bytes() == (out / "junit.xml").read_bytes()
    assert "1 passed" in summary.render()


def test_divergence_is_reported_everywhere(tmp_path):
    div = {"node": "relu1_out_DequantizeLinear", "op_type": "DequantizeLinear", "output": "relu1_dq",
           "max_abs": 0.34, "cosine": 0.98}
    _, out = report(tmp_path, [entry(tmp_path, "m", "int8", parity_doc("int8", INT8, {"logits": 2.0}),
                                     divergence=div)])
    assert "first divergence: node relu1\\_out\\_DequantizeLinear (DequantizeLinear)" in (out / "parity.md").read_text()
    assert "first divergence: node relu1_out_DequantizeLinear" in (out / "parity.html").read_text()
    failure = ET.parse(out / "junit.xml").getroot().find("testsuite/testcase/failure")
    assert "relu1_out_DequantizeLinear" in failure.text


def test_every_divergence_verdict_fits_the_schema_and_reads_in_the_reports(tmp_path):
    tol = {"atol": None, "rtol": None, "min_cosine": 0.99, "min_top1": None}
    growth = [{"node": "conv3", "op_type": "Conv", "output": "c3", "cosine": 0.97, "growth": 0.02}]
    node = {"verdict": "node", "node": "conv2", "op_type": "Conv", "output": "c2", "reference_output": "c2",
            "shape": [2, 8], "passed": False, "failures": ["cosine 0.950000 < 0.99"], "cosine": 0.95,
            "max_abs": 1.5, "tolerance": tol, "compared": 4, "growth": growth, "point": "min", "sample": 0,
            "inputs": [{"tensor": "r1_dq", "node": "r1_dq", "reference_output": "r1", "cosine": 0.999,
                        "max_abs": 0.01, "passed": True}]}
    verdicts = {"node": node, "accumulated": {**node, "verdict": "accumulated"},
                "none": {"verdict": "none", "tolerance": tol, "compared": 9, "growth": growth, "point": "min",
                         "sample": 0}}
    for verdict, d in verdicts.items():
        _, out = report(tmp_path / verdict, [entry(tmp_path / verdict, "m", "int8",
                                                   parity_doc("int8", INT8, {"logits": 2.0}), divergence=d)])
        validate(out)
        text = (out / "parity.md").read_text().replace("\\_", "_")
        if verdict == "none":
            assert "no single node breaks the tolerance (cosine ≥ 0.99) on min.0; the error grows most at: conv3" \
                in text
            continue
        said = ("node conv2 (Conv), output c2 on min.0: cosine 0.95000, max abs 1.5 against tolerance cosine ≥ 0.99; "
                "its inputs: r1_dq cosine 0.99900, max abs 0.01")
        assert said in text
        assert ("first divergence: " + said in text) == (verdict == "node")
        assert ("the error accumulates and crosses it at " + said in text) == (verdict == "accumulated")


def test_a_qat_check_says_so_and_never_random_data(tmp_path):
    _, out = report(tmp_path, [entry(tmp_path, "m", "int8", parity_doc("int8", INT8, {"logits": 1e-4}), qat=True)])
    doc = validate(out)
    assert doc["recipes"][0]["checks"][0]["qat"] is True
    for name in ("parity.md", "parity.html"):
        text = (out / name).read_text()
        assert "quantization-aware trained (Q/DQ from the model)" in text and "random data" not in text, name


def _warned(distinct: int, repeat: int = 1) -> dict:
    listed = [{"file": "tm/net.py", "line": 10 + i, "message": f"Converting a tensor to a Python boolean {HOSTILE}",
               "count": repeat} for i in range(distinct)]
    return {"count": distinct * repeat, "distinct": distinct, "listed": listed[:20]}


def test_export_warnings_are_listed_in_every_report_and_do_not_fail_the_gate(tmp_path):
    doc = parity_doc("fp32", FP32, {"y": 1e-7}, points=("min", "opt", "max"))
    for row, batch in zip(doc["results"], (1, 2, 4)):
        row["shapes"] = {"x": [batch, 8]}
    summary, out = report(tmp_path, [entry(tmp_path, "warned", doc=doc, export_warnings=_warned(25, repeat=3)),
                                      entry(tmp_path, "quiet", doc=doc)])
    assert summary.exit_status == 0 and summary.failed == 0
    parsed = validate(out)
    by_name = {r["name"]: r for r in parsed["recipes"]}
    assert by_name["quiet"]["export_warnings"] is None
    w = by_name["warned"]["export_warnings"]
    assert (w["count"], w["distinct"], len(w["listed"]), w["verified_shapes"]) == (75, 25, 20, 3)
    assert w["listed"][0] == {"file": "tm/net.py", "line": 10, "count": 3,
                              "message": f"Converting a tensor to a Python boolean {HOSTILE}"}
    md = (out / "parity.md").read_text()
    assert "**Export warnings**" in md
    assert "warned 75 times at 25 places; the export was verified by numbers at 3 shapes" in md
    assert "tm/net.py:10: Converting a tensor to a Python boolean &lt;script&gt;" in md and "(×3)" in md
    assert "tm/net.py:29:" in md and "tm/net.py:30:" not in md  # 20 listed, the rest counted
    assert "… and 5 more places in the export step's log" in md
    page = (out / "parity.html").read_text()
    assert "verified by numbers at 3 shapes" in page and "tm/net.py:10: Converting" in page
    assert HOSTILE not in page
    suite = {s.get("name"): s for s in ET.parse(out / "junit.xml").getroot()}
    props = {p.get("name"): p.get("value") for p in suite["warned"].find("properties")}
    assert props["export.tracer_warnings"] == "75" and props["export.verified_shapes"] == "3"
    outs = [case.find("system-out") for case in suite["warned"].iter("testcase")]
    assert outs and all(o is not None and "tm/net.py:10: Converting a tensor" in o.text for o in outs)
    assert all(case.find("system-out") is None for case in suite["quiet"].iter("testcase"))


def test_export_warnings_of_a_failing_recipe_say_nothing_was_verified(tmp_path):
    doc = parity_doc("fp32", FP32, {"y": 1.0})
    summary, out = report(tmp_path, [entry(tmp_path, "warned", doc=doc, export_warnings=_warned(1))])
    assert summary.exit_status == 1
    assert validate(out)["recipes"][0]["export_warnings"]["verified_shapes"] == 0
    assert "no parity check passed, so the export was not verified by numbers" in (out / "parity.md").read_text()


def test_int8_agreement_in_every_report_is_the_figure_computed_from_the_outputs(tmp_path):
    """Top-1 agreement overall and where fp32 is decided, computed here from the scores, is what each report says."""
    from buildsys.steps.parity import int8_figures

    rng = np.random.default_rng(3)
    results, refs, gots = [], [], []
    for point in ("min", "opt", "max"):
        ref = rng.standard_normal((12, 6)).astype(np.float32) * 3
        got = ref + rng.standard_normal(ref.shape).astype(np.float32) * 1.5  # enough noise to flip some rows
        results.append({"point": point, "sample": 0, "shapes": {"x": [12, 8]}, "error": None,
                        "outputs": {"logits": compare(ref, got, INT8)}})
        refs.append(ref)
        gots.append(got)
    ref, got = np.concatenate(refs), np.concatenate(gots)
    agree = ref.argmax(axis=1) == got.argmax(axis=1)
    p = np.exp(ref - ref.max(axis=1, keepdims=True))
    p = np.sort(p / p.sum(axis=1, keepdims=True), axis=1)
    decided = p[:, -1] - p[:, -2] >= 0.1
    overall, where_decided = agree.mean(), agree[decided].mean()
    assert 0 < overall < 1 and 0 < where_decided < 1 and 0 < decided.sum() < len(ref)  # figures that can be wrong

    doc = {"precision": "int8", "tolerance": INT8, "passed": True, "failures": [], "candidate": "model.int8.onnx",
           "results": results, "int8": {**int8_figures(results, None), "latency": {"fp32_ms": 2.0, "int8_ms": 1.0}}}
    _, out = report(tmp_path, [entry(tmp_path, "m", "int8", doc)])
    line = (f"top-1 {overall:.3g} of {len(ref)} rows, {where_decided:.0%} of {int(decided.sum())} "
            "where fp32 is decided")
    md = (out / "parity.md").read_text()
    assert line in md, md
    assert line in (out / "parity.html").read_text()
    figures = validate(out)["recipes"][0]["checks"][0]["int8"]["outputs"]["logits"]
    assert figures["rows"] == len(ref) and figures["decided"] == decided.sum()
    assert figures["top1"] == pytest.approx(overall, abs=1e-6)
    assert figures["top1_decided"] == pytest.approx(where_decided, abs=1e-6)
