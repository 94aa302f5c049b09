"""parity.md: the compact table for a pull-request comment or a CI step summary.

Failures come first (one row per failing shape point and output, then checks
that could not run), then regressions against the baseline, then checks that
were unavailable on this machine; a recipe whose checks all pass takes one row.
"""
from __future__ import annotations

from typing import Any

from buildsys.core.verdict import Verdict
from buildsys.reports.collect import (
    Case,
    cases,
    fmt,
    fmt_calibration,
    fmt_change,
    fmt_cosine,
    fmt_divergence,
    fmt_export_warnings,
    fmt_int8,
    fmt_tolerance,
    fmt_unordered,
    output_names,
)

MAX_ROWS = 150  # GitHub cuts comments at 65,536 characters
MAX_LISTED = 20
_MARKS = {"failed": "❌", "regression": "⚠️", "skipped": "⏭️", "passed": "✅"}
_SPECIAL = "\\`*_[]|#"


def escape(text: Any) -> str:
    """Text safe inside a table cell: markdown and HTML punctuation escaped, one line."""
    s = " ".join(str(text).split())
    s = "".join(ch for ch in s if ch >= " ").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in s)


def render(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    lines = [_heading(s), ""]
    rows = _rows(doc)
    if rows:
        lines += ["| | recipe | check | point | output | max abs error | cosine | top-1 | detail |",
                  "| --- | --- | --- | --- | --- | ---: | ---: | ---: | --- |"]
        lines += rows[:MAX_ROWS]
        if len(rows) > MAX_ROWS:
            lines.append(f"\n… {len(rows) - MAX_ROWS} more rows in parity.html")
    else:
        lines.append("No parity checks were run.")
    int8 = [(r["name"], line) for r in doc["recipes"] for c in r["checks"] if c.get("int8")
            for line in fmt_int8(c["int8"])]
    if int8:
        lines += ["", "**int8 against fp32**", ""] + [f"- {escape(n)}: {escape(line)}" for n, line in int8]
    warned = [(r["name"], fmt_export_warnings(r.get("export_warnings"))) for r in doc["recipes"]
              if r.get("export_warnings")]
    if warned:
        lines += ["", "**Export warnings** (information: parity judges the export by numbers)", ""]
        for name, (head, *places) in warned:
            lines.append(f"- {escape(name)}: {escape(head)}")
            lines += [f"  - {escape(place)}" for place in places]
    if doc.get("baseline"):
        lines += [""] + _baseline(doc["baseline"])
    lines += ["", _footer(doc)]
    return "\n".join(lines) + "\n"


def _heading(s: dict[str, Any]) -> str:
    mark = "❌" if s["exit_status"] else "✅"
    parts = [f"{s['failed']} failed"] if s["failed"] else []
    parts.append(f"{s['passed']} passed")
    if s["skipped"]:
        parts.append(f"{s['skipped']} skipped")
    head = f"### {mark} Parity: " + ", ".join(parts)
    if s["regressions"]:
        head += f" · {s['regressions']} regression{'s' if s['regressions'] != 1 else ''} against the baseline"
    return head


def _rows(doc: dict[str, Any]) -> list[str]:
    by_check = {(r["name"], c["check"]): c for r in doc["recipes"] for c in r["checks"]}
    all_cases = cases(doc)
    failing = [k for k in all_cases if k.status == "failed" and k.kind != "regression"]
    regressed = [k for k in all_cases if k.kind == "regression"]
    skipped = [k for k in all_cases if k.status == "skipped"]
    rows: list[str] = []
    seen: set[tuple] = set()
    for k in failing:
        rows += _failure_rows(k, by_check[(k.recipe, k.check)], seen)
    for k in regressed:
        rows += _regression_rows(k)
    for k in skipped:
        if (k.recipe, k.check) not in seen:
            seen.add((k.recipe, k.check))
            rows.append(_row("skipped", k.recipe, k.check, "", "", "", "", "", k.message))
    rows += _passing_rows(doc, {(k.recipe, k.check) for k in all_cases if k.status != "passed"})
    return rows


def _failure_rows(k: Case, check: dict[str, Any], seen: set[tuple]) -> list[str]:
    out = []
    if not k.rows:
        if (k.recipe, k.check) not in seen:  # one row for a check that did not run, not one per output
            seen.add((k.recipe, k.check))
            out.append(_row("failed", k.recipe, k.check, "", "", "", "", "", k.message))
        return out
    for row, o in k.rows:
        point = f"{row['point']}.{row['sample']}"
        if row["error"]:
            if (k.recipe, k.check, point) not in seen:
                seen.add((k.recipe, k.check, point))
                out.append(_row("failed", k.recipe, k.check, point, "", "", "", "",
                                f"ONNX Runtime failed: {row['error']}"))
        elif o is not None and not Verdict.read(o):
            detail = "; ".join(o["failures"]) + f" (tolerance: {fmt_tolerance(check['tolerance'])})" + _calib(check)
            out.append(_row("failed", k.recipe, k.check, point, k.output, *_figures(o), detail))
    if (k.recipe, k.check, "divergence") not in seen and check.get("divergence"):
        seen.add((k.recipe, k.check, "divergence"))
        out.append(_row("failed", k.recipe, k.check, "", "", "", "", "", fmt_divergence(check["divergence"])))
    return out


def _regression_rows(k: Case) -> list[str]:
    out = []
    for row, o in k.rows:
        if o is not None and o["regressed"]:
            what = " and ".join("max abs" if f == "max_abs" else "1 − cosine" for f in o["regressed"])
            out.append(_row("regression", k.recipe, k.check, f"{row['point']}.{row['sample']}", k.output,
                            *_figures(o), f"{what} grew beyond the allowed factor (within tolerance)"))
    return out


def _figures(o: dict[str, Any]) -> tuple[str, str, str]:
    b = o.get("baseline") or {}
    if b:
        return (fmt_change(b.get("max_abs"), o.get("max_abs")),
                f"{fmt_cosine(b.get('cosine'))} → {fmt_cosine(o.get('cosine'))}", fmt(o.get("top1")))
    return fmt(o.get("max_abs")), fmt_cosine(o.get("cosine")), fmt(o.get("top1"))


def _passing_rows(doc: dict[str, Any], not_passing: set[tuple]) -> list[str]:
    """One row per recipe whose checks all pass; one per passing check of a recipe that has failures."""
    rows = []
    for r in doc["recipes"]:
        passing = [c for c in r["checks"] if (r["name"], c["check"]) not in not_passing]
        if not passing:
            continue
        groups = [passing] if len(passing) == len(r["checks"]) else [[c] for c in passing]
        for group in groups:
            rows.append(_collapsed(r["name"], group))
    return rows


def _collapsed(recipe: str, checks: list[dict[str, Any]]) -> str:
    outs = [o for c in checks for row in c["results"] for o in row["outputs"]]
    points = []
    for c in checks:
        for row in c["results"]:
            if row["point"] not in points:
                points.append(row["point"])
    names = []
    for c in checks:
        names += [n for n in output_names(c) if n not in names]
    worst = max(outs, key=lambda o: (o.get("max_abs") is not None, o.get("max_abs") or 0.0), default=None)
    low_cos = min((o["cosine"] for o in outs if o.get("cosine") is not None), default=None)
    low_top1 = min((o["top1"] for o in outs if o.get("top1") is not None), default=None)
    max_abs = fmt(worst.get("max_abs")) if worst else "—"
    if worst and worst.get("baseline"):
        max_abs = fmt_change(worst["baseline"].get("max_abs"), worst.get("max_abs"))
    tolerances = {fmt_tolerance(c["tolerance"]) for c in checks}
    detail = f"{len(outs)} comparisons passed"
    if len(tolerances) == 1:
        detail += f" ({tolerances.pop()})"
    for note in dict.fromkeys(fmt_calibration(c) for c in checks if fmt_calibration(c)):
        detail += f" · {note}"
    matched = {c["check"]: fmt_unordered(c) for c in checks if fmt_unordered(c)}
    if matched:
        detail += " · " + "; ".join(said if len(checks) == 1 else f"{check}: {said}"
                                    for check, said in matched.items())
    return _row("passed", recipe, ", ".join(c["check"] for c in checks), ", ".join(points),
                ", ".join(names), max_abs, fmt_cosine(low_cos), fmt(low_top1), detail)


def _calib(check: dict[str, Any]) -> str:
    note = fmt_calibration(check)
    return f" · {note}" if note else ""


def _row(mark: str, *cells: str) -> str:
    return "| " + " | ".join([_MARKS[mark], *(escape(c) for c in cells)]) + " |"


def _baseline(b: dict[str, Any]) -> list[str]:
    lines = [f"**Against the baseline** {escape(b['file'])}: an error figure (max abs, 1 − cosine) fails the gate "
             f"when it grows beyond ×{b['max_regression']:g} of the baseline's; figures below "
             f"{b['floor']:g} count as {b['floor']:g}.", ""]
    for title, items in (("Regressions", b["regressions"]), ("Improvements", b["improvements"])):
        if items:
            lines.append(f"- {title} ({len(items)}): " + "; ".join(_change(x) for x in items[:MAX_LISTED])
                         + (" …" if len(items) > MAX_LISTED else ""))
    for title, items in (("New recipes", b["new_recipes"]), ("Removed recipes", b["removed_recipes"]),
                         ("New checks", b["new_checks"]), ("Removed checks", b["removed_checks"])):
        if items:
            lines.append(f"- {title}: " + ", ".join(escape(x) for x in items[:MAX_LISTED])
                         + (" …" if len(items) > MAX_LISTED else ""))
    if b["changed_recipes"]:
        lines.append("- Changed recipes (content digest differs): "
                     + ", ".join(escape(x["name"]) for x in b["changed_recipes"][:MAX_LISTED]))
    if len(lines) == 2:
        lines.append("- No change beyond the allowed factor.")
    return lines


def _change(x: dict[str, Any]) -> str:
    show = fmt_cosine if x["figure"] == "cosine" else fmt
    name = "cosine" if x["figure"] == "cosine" else "max abs"
    return escape(f"{x['recipe']} {x['check']} {x['point']}.{x['sample']} {x['output']} {name} "
                  f"{show(x['before'])} → {show(x['after'])}")


def _footer(doc: dict[str, Any]) -> str:
    tools = " · ".join(f"{k} {v}" for k, v in doc["tools"].items())
    machine = doc["machine"].get("cpu_model") or doc["machine"].get("host") or ""
    text = f"buildsys {doc['buildsys']} · {tools} · {machine} · {doc['generated']}".replace(" ·  ·", " ·")
    return f"<sub>{escape(text)}</sub>"
