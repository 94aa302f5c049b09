"""Comparison with a baseline report (main's parity.json): regressions fail the gate even inside tolerance.

Two error figures are compared per recipe × check × shape point × sample × output:
`max_abs` (largest absolute error) and `cosine` as its deficit, 1 − cosine.
A figure regresses when

    after > max_regression × max(before, floor)

with max_regression 2.0 and floor 1e-6 by default: a figure below the floor counts
as the floor, so noise-level errors (1e-9 → 3e-9, or an fp32 cosine deficit of
1e-15 → 1e-13) never fail the gate, while 1e-5 → 3e-5 does. A figure that becomes
NaN/Inf where it was finite always regresses. Improvements use the same rule the
other way round (before > max_regression × max(after, floor)) and are shown, never
gated. Recipes whose content digest differs from the baseline's are compared all
the same (a changed opset is exactly the change that should not degrade accuracy)
and listed as changed; new and removed recipes and checks are listed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from buildsys.core.errors import UsageError
from buildsys.reports.collect import FORMAT, from_json

MAX_REGRESSION = 2.0
FLOOR = 1e-6
FIGURES = ("max_abs", "cosine")  # cosine is compared as its deficit, 1 - cosine


def load(path: Path) -> dict[str, Any]:
    """A baseline parity.json, or a UsageError that says what is wrong with it."""
    try:
        doc = from_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the baseline {path}: {exc.strerror or exc}",
                         hint="pass the parity.json that `buildsys check` wrote on main "
                              "(out/reports/parity.json)") from None
    except ValueError as exc:
        raise UsageError(f"the baseline {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"the baseline {path} is not a buildsys parity report (format {FORMAT!r})",
                         hint="pass out/reports/parity.json, not a per-recipe out/<recipe>/parity/*.json")
    return doc


def error_figure(figure: str, output: dict[str, Any]) -> float | None:
    """The figure as an error that grows when things get worse."""
    v = output.get(figure)
    if v is None:
        return None
    if figure == "cosine":
        return math.nan if math.isnan(v) else max(0.0, 1.0 - v)
    return v


def grew(before: float | None, after: float | None, factor: float, floor: float) -> bool:
    """Whether an error figure grew beyond `factor` (figures under `floor` count as `floor`)."""
    if before is None or after is None:
        return False
    if not math.isfinite(after):
        return math.isfinite(before)
    if not math.isfinite(before):
        return False
    return after > factor * max(before, floor)


def compare(doc: dict[str, Any], base: dict[str, Any], source: str, max_regression: float = MAX_REGRESSION,
            floor: float = FLOOR, recipe_factors: dict[str, float] | None = None) -> dict[str, Any]:
    """Annotate `doc`'s outputs with the baseline's figures and return (and set) doc["baseline"].

    `recipe_factors` overrides `max_regression` for the recipes that set `parity.max_regression`.
    """
    old = _index(base)
    regressions: list[dict[str, Any]] = []
    improvements: list[dict[str, Any]] = []
    for r in doc["recipes"]:
        factor = (recipe_factors or {}).get(r["name"], max_regression)
        for c in r["checks"]:
            for row in c["results"]:
                for o in row["outputs"]:
                    key = (r["name"], c["check"], row["point"], row["sample"], o["name"])
                    b = old.get(key)
                    if b is None:
                        continue
                    o["baseline"] = {f: b.get(f) for f in FIGURES}
                    for f in FIGURES:
                        before, after = error_figure(f, b), error_figure(f, o)
                        change = {"recipe": key[0], "check": key[1], "point": key[2], "sample": key[3],
                                  "output": key[4], "figure": f, "before": b.get(f), "after": o.get(f),
                                  "ratio": _ratio(before, after)}
                        if grew(before, after, factor, floor):
                            o["regressed"].append(f)
                            regressions.append(change)
                        elif grew(after, before, factor, floor):
                            improvements.append(change)
    now = {r["name"]: r for r in doc["recipes"]}
    then = {r["name"]: r for r in base.get("recipes", [])}
    both = [n for n in now if n in then]
    doc["baseline"] = {
        "file": source, "generated": str(base.get("generated", "")),
        "max_regression": float(max_regression), "floor": float(floor),
        "regressions": regressions, "improvements": improvements,
        "new_recipes": [n for n in now if n not in then],
        "removed_recipes": [n for n in then if n not in now],
        "changed_recipes": [{"name": n, "before": then[n].get("digest", ""), "after": now[n]["digest"]}
                            for n in both if then[n].get("digest") != now[n]["digest"]],
        "new_checks": [f"{n} {c}" for n in both for c in _checks(now[n]) if c not in _checks(then[n])],
        "removed_checks": [f"{n} {c}" for n in both for c in _checks(then[n]) if c not in _checks(now[n])],
    }
    return doc["baseline"]


def _index(base: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    found = {}
    for r in base.get("recipes", []):
        for c in r.get("checks", []):
            for row in c.get("results", []):
                for o in row.get("outputs", []):
                    found[(r["name"], c["check"], row["point"], row["sample"], o["name"])] = o
    return found


def _checks(recipe: dict[str, Any]) -> list[str]:
    return [c["check"] for c in recipe.get("checks", [])]


def _ratio(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or not before or not math.isfinite(before):
        return None
    return after / before
