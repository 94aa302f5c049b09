"""out/reports/parity.html in a real browser: Debian's Chromium, driven by Playwright, at two widths."""
from __future__ import annotations

import shutil

import pytest

from tests.e2e.conftest import tiny_recipe
from tests.e2e.test_ingest import onnx_recipe, write_onnx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import playwright.sync_api  # noqa: F401
    HAS_PLAYWRIGHT = True
except ImportError:
    HAS_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)"),
    pytest.mark.skipif(not HAS_PLAYWRIGHT, reason="playwright is not installed (the test extra)"),
]

WIDTHS = {"phone": (390, 844), "desktop": (1440, 900)}


@pytest.fixture
def report(workspace):
    """A report with a passing PyTorch recipe and an ONNX recipe whose int8 check fails."""
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    write_onnx(workspace.root / "models/mlp.onnx")
    workspace.write("recipes/mlp.yaml", onnx_recipe("models/mlp.onnx").replace(
        "min_cosine: 0.9", "min_cosine: 0.9999999"))
    r = workspace.run("check")
    assert r.code == 1, r.stderr
    return workspace.root / "out/reports/parity.html"


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_parity_html_renders_without_script_errors_with_every_table_and_histogram_drawn(report, width):
    from playwright.sync_api import sync_playwright

    html = report.read_text()
    assert "buildsys view mlp:model.int8.onnx --node " in html  # the first diverging node, to open in the view
    assert 'href="../tiny/model.sim.onnx"' in html and "buildsys view tiny:model.sim.onnx" in html
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            w, h = WIDTHS[width]
            page = browser.new_page(viewport={"width": w, "height": h})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            tables = page.locator("table")
            assert tables.count() >= 3  # tiny fp32, mlp fp32 and int8, the environment
            for i in range(tables.count()):
                table = tables.nth(i)
                table.scroll_into_view_if_needed()
                assert table.is_visible(), f"table {i} is not visible at {width} width"
            charts = page.locator("svg[role=img]")
            assert charts.count() >= 3
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box and box["width"] > 0 and box["height"] > 0, f"histogram {i} has no size"
                drawn = charts.nth(i).evaluate(
                    "svg => [...svg.querySelectorAll('rect')].filter(r => r.getBBox().height > 0).length")
                assert drawn > 0, f"histogram {i} draws no bar"
            # on a phone the page itself does not scroll sideways: wide tables scroll in their own box
            assert page.evaluate("document.documentElement.scrollWidth") <= w + 1
        finally:
            browser.close()
    assert errors == []
