"""The report document: every per-recipe parity result of one build, gathered into one tree.

`build_document` reads the parity JSON each parity (or engine) step wrote and
turns it into the document that `schemas/parity-report.schema.json` describes;
the renderers (markdown, html, junit) and the baseline comparison only read
that document. In memory, figures are Python floats (NaN and ±inf included);
`to_json`/`from_json` spell the non-finite ones "NaN", "Infinity", "-Infinity"
so the file is strict JSON that any CI tool can parse.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.core.verdict import Verdict

FORMAT = "buildsys-parity-report"
FORMAT_VERSION = 1

# Step outcome state (build --json) -> status of a check that produced no result.
_NOT_RUN = {"failed": "error", "skipped": "blocked", "unavailable": "unavailable"}
FAILING = ("failed", "error", "blocked")  # check statuses that fail the gate
_FIGURES = ("max_abs", "mean_abs", "max_rel", "cosine", "top1")
_COUNTS = ("nan", "inf", "mismatched")
_TOLERANCE_KEYS = ("atol", "rtol", "max_scaled_error", "min_cosine", "min_top1", "min_top1_decided")


@dataclass(frozen=True)
class ReportInput:
    """One parity check of one recipe, as the build left it."""

    recipe: str
    recipe_file: str  # workspace-relative path of the recipe
    recipe_digest: str  # content digest of the resolved recipe (see recipe_digest)
    check: str  # "fp32" / "int8" (parity[precision]) or a target id such as "tensorrt-fp16"
    result: Path | None  # the parity JSON this build produced; None when the step did not run
    state: str = "ran"  # the step's outcome state: ran, cached, cutoff, failed, skipped, unavailable
    reason: str = ""  # for failed / skipped / unavailable: why (the outcome's message or reason)
    outputs: tuple[str, ...] = ()  # the recipe's output names: the test cases of a check that did not run
    random_calibration: bool = False  # int8: the calibration data was seeded random, not real data
    qat: bool = False  # int8: the model carried its own Q/DQ (quantization-aware trained), nothing was calibrated
    divergence: dict[str, Any] | None = None  # diverge.first_divergence's answer (or {"error": reason})
    description: str = ""
    # the recipe's export step's tracer warnings, as it recorded them (verdict.tracer_warnings)
    export_warnings: dict[str, Any] | None = None


def with_export_warnings(entries: list[ReportInput], outcomes: dict[str, Any]) -> list[ReportInput]:
    """`entries` carrying their recipe's export warnings, read from the export step's outcome
    (`outcomes`: step id -> build.Outcome), whether the export ran or was restored from cache."""
    found = []
    for e in entries:
        verdict = getattr(outcomes.get(f"{e.recipe}:export"), "verdict", None)
        warned = verdict.details.get("tracer_warnings") if verdict is not None else None
        found.append(dataclasses.replace(e, export_warnings=warned) if warned else e)
    return found


def recipe_digest(recipe: Any) -> str:
    """Content digest of a resolved recipe (buildsys.recipe.model.Recipe): what it asks for,
    not where it was written (file, sources and source positions are left out)."""
    from buildsys.core.canonical import digest_data

    data = dataclasses.asdict(recipe)
    for key in ("positions", "file", "sources"):
        data.pop(key, None)
    return digest_data(data)


def gather_meta(timestamp: str | None = None) -> dict[str, Any]:
    """The `meta` write_reports expects, read from this machine without importing any tool."""
    import datetime
    import platform

    from buildsys import __version__
    from buildsys.core import toolchain
    tools = {k: v for k, v in toolchain.versions(("numpy", "onnx", "onnxruntime", "onnxsim", "torch",
                                                   "tensorrt", "polygraphy")).items() if v != "absent"}
    stamp = timestamp or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"buildsys": __version__, "timestamp": stamp, "tools": {"python": toolchain.python_version(), **tools},
            "machine": {"host": platform.node(), "os": f"{platform.system()} {platform.release()}",
                        **{f"cpu_{k}": v for k, v in toolchain.cpu().items()}}}


def build_document(entries: list[ReportInput], meta: dict[str, Any]) -> dict[str, Any]:
    """The report tree (see the schema); `summary` and `baseline` are filled in by the caller."""
    recipes: dict[str, dict[str, Any]] = {}
    for e in entries:
        r = recipes.setdefault(e.recipe, {"name": e.recipe, "file": e.recipe_file, "digest": e.recipe_digest,
                                          "description": e.description, "checks": []})
        r["checks"].append(_check(e))
    for r in recipes.values():
        r["status"] = _worst(c["status"] for c in r["checks"])
        warned = next((e.export_warnings for e in entries if e.recipe == r["name"] and e.export_warnings), None)
        r["export_warnings"] = _export_warnings(warned, r["checks"])
    return {"format": FORMAT, "version": FORMAT_VERSION,
            "generated": str(meta.get("timestamp", "")), "buildsys": str(meta.get("buildsys", "")),
            "tools": {str(k): str(v) for k, v in (meta.get("tools") or {}).items()},
            "machine": {str(k): str(v) for k, v in (meta.get("machine") or {}).items()},
            "summary": {}, "baseline": None, "recipes": list(recipes.values())}


def _export_warnings(w: dict[str, Any] | None, checks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tracer's warnings and the number of distinct input shapes at which a passing check
    verified the exported model by numbers (the warnings are information; parity is the judge)."""
    if not w:
        return None
    shapes = {json.dumps(row["shapes"], sort_keys=True) for c in checks if c["status"] == "passed"
              for row in c["results"] if not row["error"]}
    listed = [{"file": str(x.get("file") or ""), "line": int(x.get("line") or 0),
               "message": str(x.get("message", "")), "count": int(x.get("count", 1))}
              for x in w.get("listed", [])]
    return {"count": int(w.get("count", len(listed))), "distinct": int(w.get("distinct", len(listed))),
            "listed": listed, "verified_shapes": len(shapes)}


def _check(e: ReportInput) -> dict[str, Any]:
    c: dict[str, Any] = {"check": e.check, "state": e.state, "status": "passed", "reason": e.reason or None,
                         "candidate": None, "tolerance": None, "random_calibration": bool(e.random_calibration),
                         "qat": bool(e.qat),
                         "divergence": _divergence(e.divergence), "failures": [], "results": [],
                         "declared_outputs": list(e.outputs)}
    if e.state in _NOT_RUN:
        # A file left by an earlier build is not this build's result: trust the state.
        c["status"] = _NOT_RUN[e.state]
        c["reason"] = e.reason or f"the step was {e.state}"
        return c
    if e.result is None:
        c.update(status="error", reason=e.reason or "the step produced no parity result")
        return c
    try:
        doc = json.loads(Path(e.result).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        c.update(status="error", reason=f"cannot read the parity result {e.result}: {exc}")
        return c
    c["candidate"] = doc.get("candidate")
    c["tolerance"] = {k: _num(doc.get("tolerance", {}).get(k)) for k in _TOLERANCE_KEYS}
    c["failures"] = [str(f) for f in doc.get("failures", [])]
    c["results"] = [_row(row) for row in doc.get("results", [])]
    if doc.get("int8"):
        c["int8"] = _int8(doc["int8"])
    if doc.get("provider"):  # ONNX Runtime on a GPU provider: what it was told, and where the nodes ran
        c["runtime"] = {"provider": str(doc["provider"]), "options": dict(doc.get("options") or {}),
                        "placement": doc.get("placement")}
    passed = bool(Verdict.read(doc)) and all(Verdict.read(o) for row in c["results"] for o in row["outputs"])
    c["status"] = "passed" if passed and not any(row["error"] for row in c["results"]) else "failed"
    return c


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {"point": str(row.get("point", "")), "sample": int(row.get("sample", 0)),
            "shapes": {str(k): [int(d) for d in v] for k, v in (row.get("shapes") or {}).items()},
            "error": row.get("error") or None,
            "outputs": [_output(name, m) for name, m in (row.get("outputs") or {}).items()]}


def _output(name: str, m: dict[str, Any]) -> dict[str, Any]:
    judged = Verdict.read(m)
    o: dict[str, Any] = {"name": str(name),
                         **Verdict(judged.passed, failures=tuple(str(f) for f in judged.failures or ())).to_json(),
                         "shape": [int(d) for d in m.get("shape", [])],
                         "reference_shape": [int(d) for d in m.get("reference_shape", [])]}
    o.update({k: _num(m.get(k)) for k in _FIGURES})
    o.update({k: (int(m[k]) if m.get(k) is not None else None) for k in _COUNTS})
    w = m.get("worst")
    o["worst"] = ({"index": [int(i) for i in w["index"]], "reference": _num(w["reference"]),
                   "candidate": _num(w["candidate"])} if w else None)
    h = m.get("histogram")
    o["histogram"] = ({"edges": [str(x) for x in h["edges"]], "counts": [int(x) for x in h["counts"]],
                       "non_finite": int(h.get("non_finite", 0))} if h else None)
    u = m.get("unordered")
    o["unordered"] = ({"outputs": [str(x) for x in u.get("outputs", [])],
                       "rows": int(u["rows"]) if u.get("rows") is not None else None,
                       "matched": int(u["matched"]) if u.get("matched") is not None else None} if u else None)
    o["baseline"] = None
    o["regressed"] = []
    return o


def fmt_unordered(check: dict[str, Any]) -> str:
    """`boxes, scores, labels compared as rows in any order: 111 of 111 rows matched` (parity.unordered)."""
    counts = [o["unordered"] for row in check.get("results", []) for o in row["outputs"]
              if o.get("unordered") and o["name"] == o["unordered"]["outputs"][0]]
    if not counts:
        return ""
    names = ", ".join(counts[0]["outputs"])
    sized = [c for c in counts if c["rows"] is not None]
    said = f"{names} compared as rows in any order"
    if sized:
        said += f": {sum(c['matched'] for c in sized)} of {sum(c['rows'] for c in sized)} rows matched"
    if len(sized) < len(counts):
        said += f" ({len(counts) - len(sized)} samples whose rows could not be paired)"
    return said


def _int8(d: dict[str, Any]) -> dict[str, Any]:
    """int8 quality and speed as parity[int8] measured them: agreement, row cosines, latency on this CPU."""
    lat = d.get("latency") or {}
    outputs = {}
    for name, o in (d.get("outputs") or {}).items():
        per_point = o.get("row_cosine") or {}
        outputs[str(name)] = {
            "rows": int(o.get("rows", 0)), "decided": int(o.get("decided", 0)),
            "top1": _num(o.get("top1")), "top1_decided": _num(o.get("top1_decided")),
            "row_cosine": {str(p): {str(k): _num(v) for k, v in q.items()} for p, q in per_point.items()}}
    timing = None
    if lat.get("method"):
        timing = {"method": str(lat["method"]), "runs": int(lat.get("runs", 0)), "threads": int(lat.get("threads", 0)),
                  "speedup": _num(lat.get("speedup")), "fp32": str(lat.get("fp32", "")), "int8": str(lat.get("int8", "")),
                  **{m: {k: {f: _num(v.get(f)) for f in ("median", "min")} for k, v in (lat.get(m) or {}).items()}
                     for m in ("cpu_ms", "wall_ms")}}
    return {"label": str(d.get("label", "int8")), "cpu": d.get("cpu"),
            "exclude": [str(x) for x in d.get("exclude", [])],
            "fp32_ms": _num(lat.get("fp32_ms")), "int8_ms": _num(lat.get("int8_ms")),
            "cpu_model": lat.get("cpu"), "latency": timing, "latency_error": lat.get("error"),
            "judged_on": str(d.get("judged_on") or "the reference's inputs"), "outputs": outputs}


def fmt_int8(i: dict[str, Any]) -> list[str]:
    """One line per output: agreement overall and where fp32 is decided, row cosines, latency."""
    lines = []
    speed = fmt_latency(i)
    for name, o in i["outputs"].items():
        cos = o["row_cosine"]
        dist = ", ".join(f"{p} {fmt_cosine(q.get('min'))}/{fmt_cosine(q.get('median'))}/{fmt_cosine(q.get('max'))}"
                         for p, q in cos.items())
        decided = (f"{o['top1_decided']:.0%} of {o['decided']} where fp32 is decided" if o["decided"]
                   else "fp32 decided on none")
        lines.append(f"{i['label']} · {name}: top-1 {fmt(o['top1'])} of {o['rows']} rows, {decided}; "
                     f"cosine per row (min/median/max) {dist}; judged on {i.get('judged_on') or 'the reference'}; "
                     f"{speed}" + (f"; {len(i['exclude'])} nodes kept in fp32" if i["exclude"] else ""))
    return lines


def fmt_latency(i: dict[str, Any]) -> str:
    """int8 engine against fp32 engine: CPU time medians (min) at 1 thread, the ratio, wall time, the method."""
    t = i.get("latency")
    if not t:
        why = i.get("latency_error")
        if i.get("fp32_ms") and i.get("int8_ms"):  # a result written before the method was recorded
            return f"int8 {i['int8_ms']:.2f} ms vs fp32 {i['fp32_ms']:.2f} ms (method not recorded)"
        return f"latency not measured: {why}" if why else ""
    cpu, wall = t["cpu_ms"], t["wall_ms"]
    ratio = f"{t['speedup']:.2f}x" if t.get("speedup") else "n/a"
    return (f"int8 engine {cpu['int8']['median']:.2f} ms (min {cpu['int8']['min']:.2f}) vs fp32 engine "
            f"{cpu['fp32']['median']:.2f} ms (min {cpu['fp32']['min']:.2f}): {ratio} in CPU time per run at 1 thread, "
            f"median of {t['runs']} interleaved runs; wall time at {t['threads']} threads "
            f"{wall['int8']['median']:.2f} vs {wall['fp32']['median']:.2f} ms; on {i.get('cpu_model') or 'this CPU'}")


def _divergence(d: dict[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()}


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _worst(statuses) -> str:
    order = ("error", "failed", "blocked", "unavailable", "passed")
    found = set(statuses)
    return next((s for s in order if s in found), "passed")


# ---- test cases: recipe × check × output, the unit of JUnit and of the counts ----

@dataclass(frozen=True)
class Case:
    recipe: str
    check: str
    output: str
    status: str  # passed | failed | skipped
    kind: str  # passed | tolerance | error | blocked | unavailable | regression
    message: str  # one line: why it failed or was skipped
    rows: tuple[tuple[dict[str, Any], dict[str, Any] | None], ...]  # (result row, output entry or None)


def cases(doc: dict[str, Any]) -> list[Case]:
    out: list[Case] = []
    for r in doc["recipes"]:
        for c in r["checks"]:
            out.extend(_check_cases(r["name"], c))
    return out


def output_names(c: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for row in c["results"]:
        for o in row["outputs"]:
            if o["name"] not in names:
                names.append(o["name"])
    for n in c.get("declared_outputs", []):
        if n not in names:
            names.append(n)
    return names


def _check_cases(recipe: str, c: dict[str, Any]) -> list[Case]:
    names = output_names(c) or ["(all outputs)"]
    if c["status"] in ("error", "blocked", "unavailable"):
        status = "skipped" if c["status"] == "unavailable" else "failed"
        label = {"error": "step failed", "blocked": "not run", "unavailable": "unavailable"}[c["status"]]
        return [Case(recipe, c["check"], n, status, c["status"], f"{label}: {c['reason']}", ()) for n in names]
    found = []
    for name in names:
        rows = tuple((row, next((o for o in row["outputs"] if o["name"] == name), None)) for row in c["results"])
        problems = []
        for row, o in rows:
            tag = f"{row['point']}.{row['sample']}"
            if row["error"]:
                problems.append(f"{tag}: ONNX Runtime failed: {row['error']}")
            elif o is None:
                problems.append(f"{tag}: no such output")
            elif not (judged := Verdict.read(o)):
                problems.append(f"{tag}: " + "; ".join(judged.failures or ["failed"]))
        regressed = [f"{row['point']}.{row['sample']}: {_grown(fig, o)}"
                     for row, o in rows if o is not None for fig in o["regressed"]]
        if problems:
            kind = "tolerance" if any(o is not None and not Verdict.read(o) for _, o in rows) else "error"
            found.append(Case(recipe, c["check"], name, "failed", kind, " | ".join(problems), rows))
        elif regressed:
            found.append(Case(recipe, c["check"], name, "failed", "regression", " | ".join(regressed), rows))
        else:
            found.append(Case(recipe, c["check"], name, "passed", "passed", "", rows))
    if c["status"] == "failed" and all(k.status == "passed" for k in found):
        # the parity step said failed without a failing figure (no results at all, say): still a failure
        found.append(Case(recipe, c["check"], "(check)", "failed", "tolerance",
                          " | ".join(c["failures"]) or "the parity step reported a failure", ()))
    return found


def _grown(figure: str, o: dict[str, Any]) -> str:
    before = (o.get("baseline") or {}).get(figure)
    if figure == "cosine":
        return f"cosine {fmt_cosine(before)} → {fmt_cosine(o.get(figure))} beyond the allowed factor"
    return f"max abs {fmt_change(before, o.get(figure))} beyond the allowed factor"


def summarize(doc: dict[str, Any], exit_status: Callable[[bool], int]) -> dict[str, Any]:
    """Counts, and the command's exit status: `exit_status` is given whether the gate failed (a figure
    out of tolerance, a regression, a check that could not run) and answers with the status."""
    all_cases = cases(doc)
    count = {s: sum(1 for k in all_cases if k.status == s) for s in ("passed", "failed", "skipped")}
    statuses = [c["status"] for r in doc["recipes"] for c in r["checks"]]
    checks = {s: statuses.count(s) for s in ("passed", "failed", "error", "blocked", "unavailable")}
    regressions = len((doc.get("baseline") or {}).get("regressions", []))
    failing = count["failed"] > 0 or regressions > 0 or any(s in FAILING for s in statuses)
    return {**count, "checks": checks, "regressions": regressions,
            "exit_status": exit_status(failing)}


# ---- strict JSON ----

def to_json(doc: Any) -> str:
    return json.dumps(_encode(doc), indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def from_json(text: str) -> Any:
    return _decode(json.loads(text))


_SPELLED = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    return x


def _decode(x: Any, key: str = "") -> Any:
    if isinstance(x, str) and x in _SPELLED and key in _NUMERIC_KEYS:
        return _SPELLED[x]
    if isinstance(x, dict):
        return {k: _decode(v, k) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v, key) for v in x]
    return x


_NUMERIC_KEYS = {*_FIGURES, *_TOLERANCE_KEYS, "reference", "candidate", "before", "after", "ratio"}


# ---- how figures read in the reports ----

def fmt(x: float | None, missing: str = "—", digits: int = 3) -> str:
    if x is None:
        return missing
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "0" if x == 0 else f"{x:.{digits}g}"


def fmt_worst(w: dict[str, Any] | None) -> str:
    """The worst element with enough digits to see the two values differ."""
    if not w:
        return "—"
    return f"{w['index']}: reference {fmt(w['reference'], digits=8)}, candidate {fmt(w['candidate'], digits=8)}"


def fmt_cosine(x: float | None, missing: str = "—") -> str:
    """Cosines near 1 read as their deficit (1−6.8e-14), which is the part that matters."""
    if x is None or not math.isfinite(x):
        return fmt(x, missing)
    deficit = 1.0 - x
    if deficit <= 0:
        return "1"
    return f"1−{deficit:.1e}" if deficit < 1e-4 else f"{x:.5f}"


def fmt_change(before: float | None, after: float | None, show=fmt) -> str:
    """main's figure beside the branch's: `1.1e-08 → 2.2e-08 (×2.0)`."""
    if before is None:
        return show(after)
    text = f"{show(before)} → {show(after)}"
    if after is not None and before and math.isfinite(before) and math.isfinite(after):
        text += f" (×{after / before:.2g})"
    return text


def fmt_tolerance(tol: dict[str, Any] | None) -> str:
    if not tol:
        return ""
    parts = []
    if tol.get("atol") is not None or tol.get("rtol") is not None:
        parts.append(f"atol {fmt(tol.get('atol') or 0.0)}, rtol {fmt(tol.get('rtol') or 0.0)}")
    if tol.get("max_scaled_error") is not None:
        parts.append(f"max error ≤ {tol['max_scaled_error']:g} of the output's scale")
    if tol.get("min_cosine") is not None:
        parts.append(f"cosine ≥ {tol['min_cosine']:g}")
    if tol.get("min_top1") is not None:
        parts.append(f"top-1 ≥ {tol['min_top1']:g}")
    if tol.get("min_top1_decided") is not None:
        parts.append(f"decided top-1 ≥ {tol['min_top1_decided']:g} over all rows")
    return ", ".join(parts) or "no tolerance"


QAT_NOTE = "quantization-aware trained (Q/DQ from the model)"
RANDOM_NOTE = "calibrated on random data"


def fmt_calibration(check: dict[str, Any]) -> str:
    """Where an int8 check's scales came from, when the reader must know: QAT, or random data."""
    if check.get("qat"):
        return QAT_NOTE
    return RANDOM_NOTE if check.get("random_calibration") else ""


def fmt_export_warnings(w: dict[str, Any] | None) -> list[str]:
    """A heading line (how many, and what parity verified), then `file:line: message (×count)` per place."""
    if not w:
        return []
    times = f"{w['count']} time{'s' if w['count'] != 1 else ''}"
    places = f"{w['distinct']} place{'s' if w['distinct'] != 1 else ''}"
    n = w["verified_shapes"]
    if n:
        judged = f"the export was verified by numbers at {n} shape{'s' if n != 1 else ''}"
    else:
        judged = "no parity check passed, so the export was not verified by numbers; the warnings may explain it"
    lines = [f"export: the TorchScript tracer warned {times} at {places}; {judged}"]
    for x in w["listed"]:
        where = f"{x['file']}:{x['line']}: " if x["file"] else ""
        lines.append(where + x["message"] + (f" (×{x['count']})" if x["count"] > 1 else ""))
    if w["distinct"] > len(w["listed"]):
        lines.append(f"… and {w['distinct'] - len(w['listed'])} more places in the export step's log")
    return lines


def fmt_divergence(d: dict[str, Any] | None) -> str:
    """One line: the node named, its figures beside the tolerance, and its inputs' figures."""
    if not d:
        return ""
    if "error" in d:
        return f"first divergence not found: {d.get('error') or 'no reason given'}"
    where = f" on {d['point']}.{d['sample']}" if d.get("point") else ""
    tol = fmt_tolerance(d.get("tolerance"))
    grown = ", ".join(f"{g['node']} (+{fmt(g['growth'], digits=2)})" for g in d.get("growth") or [])
    if d.get("verdict") == "none":
        return (f"no single node breaks the tolerance ({tol}){where}; "
                f"the error grows most at: {grown or 'no node'}")
    inputs = "; ".join(f"{i['tensor']} cosine {fmt_cosine(i.get('cosine'))}, max abs {fmt(i.get('max_abs'))}"
                       for i in d.get("inputs") or [])
    figures = f"cosine {fmt_cosine(d.get('cosine'))}, max abs {fmt(d.get('max_abs'))}"
    if d.get("top1") is not None:
        figures += f", top-1 {fmt(d.get('top1'))}"
    if d.get("mismatched"):
        figures += f", {d['mismatched']} values out of atol/rtol"
    head = (f"node {d['node']} ({d.get('op_type', '?')}), output {d.get('output', '?')}{where}: "
            f"{figures} against tolerance {tol}; its inputs: {inputs or 'none compared'}")
    if d.get("quantized_input"):
        return (f"first divergence: the quantization of input {d['quantized_input']} ({head}); "
                f"remedy: {d.get('remedy') or 'keep the input in fp32 or loosen the tolerance'}")
    if d.get("verdict") == "accumulated":
        return (f"no single node breaks the tolerance: the error accumulates and crosses it at {head}; "
                f"the error grows most at: {grown}")
    return f"first divergence: {head}"
