"""`buildsys check`, the CI gate, end to end on a tiny model."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tests.e2e.conftest import tiny_recipe


def test_check_fails_on_an_impossible_tolerance_and_passes_once_fixed(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe(atol="0.0").replace("rtol: 1.0e-3", "rtol: 0.0"))
    # exact equality cannot hold for every element of a real export
    workspace.write("tm/noisy.py", """\
        import torch
        from torch import nn

        class Noisy(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 64)
                self.out = nn.Linear(64, 2)

            def forward(self, x):
                return self.out(torch.tanh(self.fc(x)) * 3.0).softmax(-1) * 1e3

        def noisy():
            return Noisy()
        """)
    text = tiny_recipe(atol="0.0").replace("rtol: 1.0e-3", "rtol: 0.0").replace("tm.tiny:tiny", "tm.noisy:noisy")
    workspace.write("recipes/tiny.yaml", text.replace("kwargs: {features: 4}", "kwargs: {}"))
    r = workspace.run("check")
    assert r.code == 1, r.stderr
    reports = workspace.root / "out/reports"
    doc = json.loads((reports / "parity.json").read_text())
    check = doc["recipes"][0]["checks"][0]
    assert check["check"] == "fp32" and check["status"] == "failed"
    assert "❌" in (reports / "parity.md").read_text()
    assert "tiny" in (reports / "parity.html").read_text()
    suite = ET.parse(reports / "junit.xml").getroot()
    assert suite.tag == "testsuites" and int(suite.get("failures")) >= 1
    assert not (workspace.root / "out/tiny/engines").exists()  # check does not build engines

    workspace.write("recipes/tiny.yaml", text.replace("kwargs: {features: 4}", "kwargs: {}")
                    .replace("atol: 0.0", "atol: 1.0e-3"))
    r = workspace.run("check")
    assert r.code == 0, r.stderr
    assert "ran         tiny:parity[fp32]" in r.stderr
    assert "ran         tiny:export" not in r.stderr and "ran         tiny:reference" not in r.stderr


def _scaled(doc: dict, factor: float) -> dict:
    for recipe in doc["recipes"]:
        for check in recipe["checks"]:
            for row in check["results"]:
                for out in row["outputs"]:
                    for key in ("max_abs", "mean_abs"):
                        if isinstance(out.get(key), (int, float)):
                            out[key] = out[key] * factor
                    out["cosine"] = 1 - (1 - out["cosine"]) * factor if isinstance(out.get("cosine"), float) else out.get("cosine")
    return doc


def test_regression_against_the_baseline_fails_and_an_improvement_passes(workspace):
    workspace.write("tm/wide.py", """\
        import torch
        from torch import nn

        class Wide(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(4, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                                         nn.Linear(256, 8))

            def forward(self, x):
                return self.net(x) * 1000.0

        def wide():
            return Wide()
        """)
    text = tiny_recipe().replace("tm.tiny:tiny", "tm.wide:wide").replace("kwargs: {features: 4}", "kwargs: {}")
    text = text.replace("atol: 1.0e-4", "atol: 1.0e-1")
    workspace.write("recipes/tiny.yaml", text)
    assert workspace.run("check").code == 0
    main = json.loads((workspace.root / "out/reports/parity.json").read_text())
    figures = [o["max_abs"] for c in main["recipes"][0]["checks"] for row in c["results"] for o in row["outputs"]]
    assert max(figures) > 1e-6, "the model must leave errors above the regression floor"

    better_main = workspace.root / "main-better.json"
    better_main.write_text(json.dumps(_scaled(json.loads(json.dumps(main)), 0.1)))
    r = workspace.run("check", "--baseline", str(better_main))
    assert r.code == 1, r.stderr
    md = (workspace.root / "out/reports/parity.md").read_text()
    assert "regress" in md.lower()

    worse_main = workspace.root / "main-worse.json"
    worse_main.write_text(json.dumps(_scaled(json.loads(json.dumps(main)), 10.0)))
    r = workspace.run("check", "--baseline", str(worse_main))
    assert r.code == 0, r.stderr
    assert "improve" in (workspace.root / "out/reports/parity.md").read_text().lower()

    # a recipe may allow more growth than the command does
    workspace.write("recipes/tiny.yaml", text + "parity: {max_regression: 20.0}\n")
    r = workspace.run("check", "--baseline", str(better_main))
    assert r.code == 0, r.stderr


def test_a_missing_baseline_is_a_usage_error(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.run("check", "--baseline", "nowhere.json")
    assert r.code == 2
    assert "--baseline nowhere.json: no such file" in r.stderr


def test_check_with_everything_cached_imports_no_heavy_library(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.run("check").code == 0
    r = workspace.run("check", env={"_pyflags": ["-X", "importtime"]})
    assert r.code == 0, r.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "import time:" in line}
    assert not imported & {"torch", "onnx", "onnxruntime", "onnxsim"}
    assert (workspace.root / "out/reports/junit.xml").is_file()


def test_parity_json_gives_the_exit_status_check_gives_when_a_step_fails(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    workspace.write("recipes/broken.yaml", tiny_recipe().replace("tm.tiny:tiny", "tm.tiny:missing"))
    r = workspace.run("check")
    assert r.code == 3, r.stderr
    doc = json.loads((workspace.root / "out/reports/parity.json").read_text())
    assert doc["summary"]["exit_status"] == 3
    assert "Gate exit status 3." in (workspace.root / "out/reports/parity.html").read_text()


CHECKED = """\
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.shape[0] < 1 or x.size(1) != 4:  # input validation: the tracer warns, the trace is right
            raise ValueError("x must be [batch, 4]")
        return torch.tanh(self.fc(x))


class Checked(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(3)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def checked():
    return Checked()
"""


def test_tracer_warnings_reach_every_report_also_from_a_cached_export(workspace):
    workspace.write("tm/checked.py", CHECKED)
    line = CHECKED.splitlines().index(next(ln for ln in CHECKED.splitlines() if "input validation" in ln)) + 1
    workspace.write("recipes/checked.yaml", tiny_recipe().replace("tm.tiny:tiny", "tm.checked:checked")
                    .replace("kwargs: {features: 4}", "kwargs: {}"))
    reports = workspace.root / "out/reports"
    for run in ("ran", "cached"):
        for f in reports.glob("*"):
            f.unlink()
        r = workspace.run("check", "-v")
        assert r.code == 0, r.stderr  # the warnings are information: parity passed, so the gate passes
        assert any(ln.split()[:2] == [run, "checked:export"] for ln in r.stderr.splitlines()), r.stderr
        doc = json.loads((reports / "parity.json").read_text())
        recipe = doc["recipes"][0]
        assert recipe["status"] == "passed"
        w = recipe["export_warnings"]
        # two conversions on one line, in each of three blocks: one place, counted six times
        assert (w["count"], w["distinct"]) == (6, 1)
        assert w["listed"][0]["file"] == "tm/checked.py" and w["listed"][0]["line"] == line
        assert "Converting a tensor to a Python boolean" in w["listed"][0]["message"]
        parity = json.loads((workspace.root / "out/checked/parity/fp32.json").read_text())
        shapes = {json.dumps(row["shapes"], sort_keys=True) for row in parity["results"]}
        assert w["verified_shapes"] == len(shapes) >= 3
        place = f"tm/checked.py:{line}: Converting a tensor to a Python boolean"
        head = f"warned 6 times at 1 place; the export was verified by numbers at {len(shapes)} shapes"
        md = (reports / "parity.md").read_text()
        assert head in md and place in md and "(×6)" in md
        page = (reports / "parity.html").read_text()
        assert head in page and place in page
        suite = ET.parse(reports / "junit.xml").getroot().find("testsuite")
        props = {p.get("name"): p.get("value") for p in suite.find("properties")}
        assert props["export.tracer_warnings"] == "6"
        case = suite.find("testcase")
        assert case.find("failure") is None and head in case.find("system-out").text
        assert place in case.find("system-out").text
