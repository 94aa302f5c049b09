"""The parity reports `buildsys check` writes under out/reports/, and the gate's verdict.

    parity.json  every figure, for tools (schemas/parity-report.schema.json)
    parity.md    the compact table for a pull request comment / CI step summary
    parity.html  one self-contained page with each output's error distribution
    junit.xml    one test case per recipe × check × output

`write_reports` is the entry point; everything it reads comes in as arguments
(the one exception is $GITHUB_STEP_SUMMARY, read here and nowhere deeper).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.reports.baseline import FLOOR, MAX_REGRESSION
from buildsys.reports.collect import ReportInput, gather_meta, recipe_digest, with_export_warnings

__all__ = ["ReportInput", "ReportSummary", "write_reports", "gather_meta", "recipe_digest", "with_export_warnings",
           "MAX_REGRESSION", "FLOOR"]


@dataclass(frozen=True)
class ReportSummary:
    """What the gate decided. Counts are test cases (recipe × check × output)."""

    passed: int
    failed: int  # out of tolerance, regressed, or the check could not run
    skipped: int  # the backend is unavailable on this machine
    regressions: tuple[dict[str, Any], ...]  # baseline.compare's entries
    improvements: tuple[dict[str, Any], ...]
    exit_status: int  # the command's, as write_reports' caller decided it from whether the gate failed
    files: dict[str, Path] = field(default_factory=dict)  # report kind -> path written

    def render(self) -> str:
        """One line for the terminal."""
        text = f"parity: {self.failed} failed, {self.passed} passed, {self.skipped} skipped"
        if self.regressions:
            text += f", {len(self.regressions)} regression{'s' if len(self.regressions) != 1 else ''}"
        if self.improvements:
            text += f", {len(self.improvements)} improvement{'s' if len(self.improvements) != 1 else ''}"
        where = self.files.get("html") or self.files.get("json")
        return text + (f" — see {where}" if where else "")


def write_reports(out_dir: Path, entries: list[ReportInput], meta: dict[str, Any], baseline: Path | None = None,
                  max_regression: float = MAX_REGRESSION, markdown_path: Path | None = None,
                  junit_path: Path | None = None, regression_floor: float = FLOOR,
                  recipe_factors: dict[str, float] | None = None, *,
                  exit_status: Callable[[bool], int]) -> ReportSummary:
    """Write parity.json, parity.md, parity.html and junit.xml under `out_dir` (out/reports/).

    `meta` carries {"buildsys", "timestamp", "tools": {name: version}, "machine": {key: value}}
    (collect.gather_meta() reads them from this machine). With `baseline` (main's
    parity.json), error figures that grew beyond `max_regression` fail the gate.
    `markdown_path` / `junit_path` are extra copies where CI wants them. When
    $GITHUB_STEP_SUMMARY names a file, the markdown is appended to it. `exit_status` is
    given whether the gate failed and answers with the command's exit status, which the
    reports write (engine.status.check_status decides it: a failed step or a recipe error
    outranks parity).
    Raises UsageError when the baseline cannot be read.
    """
    from buildsys.reports import baseline as base_mod
    from buildsys.reports import collect, html, junit, markdown

    doc = collect.build_document(entries, meta)
    if baseline is not None:
        base_mod.compare(doc, base_mod.load(baseline), str(baseline), max_regression, regression_floor,
                         recipe_factors)
    doc["summary"] = collect.summarize(doc, exit_status)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown.render(doc)
    xml = junit.render(doc)
    files = {"json": out_dir / "parity.json", "markdown": out_dir / "parity.md",
             "html": out_dir / "parity.html", "junit": out_dir / "junit.xml"}
    _write(files["json"], collect.to_json(doc).encode("utf-8"))
    _write(files["markdown"], md.encode("utf-8"))
    _write(files["html"], html.render(doc, out_dir).encode("utf-8"))
    _write(files["junit"], xml)
    if markdown_path is not None:
        _write(Path(markdown_path), md.encode("utf-8"))
        files["markdown_copy"] = Path(markdown_path)
    if junit_path is not None:
        _write(Path(junit_path), xml)
        files["junit_copy"] = Path(junit_path)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(md)
        files["step_summary"] = Path(step_summary)
    s = doc["summary"]
    b = doc.get("baseline") or {}
    return ReportSummary(passed=s["passed"], failed=s["failed"], skipped=s["skipped"],
                         regressions=tuple(b.get("regressions", ())), improvements=tuple(b.get("improvements", ())),
                         exit_status=s["exit_status"], files=files)


def _write(path: Path, data: bytes) -> None:
    """Temp file + rename: a reader (or a crash) never sees half a report."""
    from buildsys.storage.safepath import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(os.fspath(path), data)
