"""parity.html: one self-contained page (no scripts, no external files), failures first.

Rendered by jinja2 with autoescaping on, so a model or output name such as
`<script>` is shown as text. Each output's error distribution is an inline SVG
bar chart drawn from the histogram that numerics.compare records (absolute
errors in decades); bars at or above the check's atol are drawn in red.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from buildsys.core.verdict import Verdict
from buildsys.reports.collect import (
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
    fmt_worst,
)

TEMPLATES = Path(__file__).parent / "templates"
_RANK = {"error": 0, "failed": 0, "blocked": 1, "regressed": 2, "unavailable": 3, "passed": 4}
BAR_W, BAR_GAP, CHART_H = 14, 2, 44


def render(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """The page; with `out_dir` (out/reports/), each recipe's built artifacts are linked from it."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("parity.html.j2").render(page=_page(doc, out_dir))


ARTIFACTS = (".onnx", ".ort", ".plan", ".pt")
VIEWABLE = (".onnx", ".ort")


def artifacts(out_dir: Path | None, recipe: str) -> list[dict[str, Any]]:
    """The recipe's built models and engines: link (relative to the report), name, `buildsys view` command."""
    folder = out_dir.parent / recipe if out_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.suffix in ARTIFACTS and p.is_file() and "logs" not in p.parts)
    return [{"name": rel, "href": f"../{recipe}/{rel}",
             "view": f"buildsys view {shlex.quote(f'{recipe}:{rel}')}" if rel.endswith(VIEWABLE) else ""}
            for rel in found]


def _page(doc: dict[str, Any], out_dir: Path | None = None) -> dict[str, Any]:
    regressed = {(k.recipe, k.check) for k in cases(doc) if k.kind == "regression"}
    recipes = []
    for r in doc["recipes"]:
        checks = [_check(c, (r["name"], c["check"]) in regressed) for c in r["checks"]]
        for c in checks:
            c["view"] = (f"buildsys view {shlex.quote(r['name'] + ':' + c['candidate'])}"
                         if c["candidate"].endswith(VIEWABLE) else "")
            if c["view"] and c["node"]:
                c["view_node"] = f"{c['view']} --node {shlex.quote(c['node'])}"
        checks.sort(key=lambda c: _RANK[c["status"]])
        recipes.append({"name": r["name"], "file": r["file"], "digest": r["digest"][:12],
                        "artifacts": artifacts(out_dir, r["name"]),
                        "export_warnings": fmt_export_warnings(r.get("export_warnings")),
                        "description": r.get("description", ""), "checks": checks,
                        "status": min((c["status"] for c in checks), key=_RANK.__getitem__, default="passed")})
    recipes.sort(key=lambda r: _RANK[r["status"]])
    return {"summary": doc["summary"], "recipes": recipes, "baseline": _baseline(doc.get("baseline")),
            "generated": doc["generated"], "buildsys": doc["buildsys"],
            "tools": sorted(doc["tools"].items()), "machine": sorted(doc["machine"].items())}


def _check(c: dict[str, Any], regressed: bool) -> dict[str, Any]:
    status = "regressed" if regressed and c["status"] == "passed" else c["status"]
    atol = (c.get("tolerance") or {}).get("atol")
    rows = []
    for row in c["results"]:
        point = f"{row['point']}.{row['sample']}"
        shapes = ", ".join(f"{k} {v}" for k, v in row["shapes"].items())
        if row["error"]:
            rows.append({"point": point, "shapes": shapes, "error": row["error"], "status": "failed"})
        for o in row["outputs"]:
            rows.append(_output_row(point, shapes, o, atol))
    rows.sort(key=lambda x: _RANK[x["status"]])
    return {"check": c["check"], "status": status, "state": c["state"], "reason": c.get("reason") or "",
            "candidate": c.get("candidate") or "", "tolerance": fmt_tolerance(c.get("tolerance")),
            "calibration": fmt_calibration(c), "unordered": fmt_unordered(c),
            "divergence": fmt_divergence(c.get("divergence")), "rows": rows,
            "node": (c.get("divergence") or {}).get("node") or "", "view": "", "view_node": "",
            "int8": fmt_int8(c["int8"]) if c.get("int8") else []}


def _output_row(point: str, shapes: str, o: dict[str, Any], atol: float | None) -> dict[str, Any]:
    b = o.get("baseline") or {}
    status = "failed" if not Verdict.read(o) else ("regressed" if o["regressed"] else "passed")
    return {"point": point, "shapes": shapes, "error": "", "status": status, "name": o["name"],
            "max_abs": fmt_change(b.get("max_abs"), o.get("max_abs")) if b else fmt(o.get("max_abs")),
            "mean_abs": fmt(o.get("mean_abs")), "max_rel": fmt(o.get("max_rel")),
            "cosine": (f"{fmt_cosine(b.get('cosine'))} → {fmt_cosine(o.get('cosine'))}" if b
                       else fmt_cosine(o.get("cosine"))),
            "top1": fmt(o.get("top1")), "nan": fmt(o.get("nan")), "inf": fmt(o.get("inf")),
            "worst": fmt_worst(o.get("worst")),
            "failures": "; ".join(o["failures"]), "regressed": ", ".join(o["regressed"]),
            "chart": chart(o.get("histogram"), atol)}


def chart(histogram: dict[str, Any] | None, atol: float | None) -> dict[str, Any] | None:
    """Bar geometry of an error histogram; heights on a log scale so one stray element shows."""
    if not histogram or not histogram.get("counts"):
        return None
    counts, edges = histogram["counts"], histogram["edges"]
    top = math.log1p(max(counts) or 1)
    bars = []
    for i, n in enumerate(counts):
        low = _edge(edges, i)
        h = 0.0 if n == 0 else max(2.0, (CHART_H - 14) * math.log1p(n) / top)
        bad = atol is not None and low is not None and low >= atol and n > 0
        bars.append({"x": i * (BAR_W + BAR_GAP), "y": CHART_H - 12 - h, "w": BAR_W, "h": h,
                     "cls": "bad" if bad else "ok",
                     "title": f"[{edges[i] if i < len(edges) else '?'}, "
                              f"{edges[i + 1] if i + 1 < len(edges) else '?'}): {n}"})
    labels = [{"x": i * (BAR_W + BAR_GAP), "text": edges[i]} for i in range(0, len(counts), 3) if i < len(edges)]
    return {"width": len(counts) * (BAR_W + BAR_GAP), "height": CHART_H, "bars": bars, "labels": labels,
            "baseline_y": CHART_H - 12, "non_finite": histogram.get("non_finite", 0),
            "atol_x": _position(edges, atol), "atol": fmt(atol)}


def _position(edges: list[str], value: float | None) -> float | None:
    """x of `value` on the decade axis (log-interpolated inside its bin), or None when off the axis."""
    if value is None or value <= 0:
        return None
    for i in range(len(edges) - 1):
        low, high = _edge(edges, i), _edge(edges, i + 1)
        if low is None or high is None or not low <= value < high:
            continue
        frac = 0.0 if low <= 0 or not math.isfinite(high) else math.log(value / low) / math.log(high / low)
        return round(i * (BAR_W + BAR_GAP) + frac * BAR_W, 1)
    return None


def _edge(edges: list[str], i: int) -> float | None:
    try:
        return float(edges[i])
    except (IndexError, ValueError):
        return None


def _baseline(b: dict[str, Any] | None) -> dict[str, Any] | None:
    if not b:
        return None

    def change(x: dict[str, Any]) -> str:
        show = fmt_cosine if x["figure"] == "cosine" else fmt
        name = "cosine" if x["figure"] == "cosine" else "max abs"
        return (f"{x['recipe']} {x['check']} {x['point']}.{x['sample']} {x['output']}: {name} "
                f"{show(x['before'])} → {show(x['after'])}")

    return {"file": b["file"], "rule": f"an error figure (max abs, 1 − cosine) above ×{b['max_regression']:g} of "
                                      f"the baseline's fails the gate; figures below {b['floor']:g} count as "
                                      f"{b['floor']:g}",
            "regressions": [change(x) for x in b["regressions"]],
            "improvements": [change(x) for x in b["improvements"]],
            "lists": [(title, items) for title, items in (
                ("New recipes", b["new_recipes"]), ("Removed recipes", b["removed_recipes"]),
                ("Changed recipes (digest differs)", [x["name"] for x in b["changed_recipes"]]),
                ("New checks", b["new_checks"]), ("Removed checks", b["removed_checks"])) if items]}
