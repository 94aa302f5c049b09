"""junit.xml: one test case per recipe × check × output, in the common JUnit layout.

    testsuites > testsuite (one per recipe) > properties, testcase > failure | skipped, system-out

A tolerance failure, a regression against the baseline and a check that could
not run are failures (type tolerance / regression / error / blocked) whose text
carries the figures; an unavailable backend is skipped. The recipe's export
warnings (the TorchScript tracer's) are the system-out of each of its test cases.
The XML is written by xml.etree, which escapes markup; characters XML 1.0 cannot
hold at all (terminal colour codes in an ONNX Runtime message, say) are replaced first.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from buildsys.reports.collect import (
    Case,
    cases,
    fmt,
    fmt_calibration,
    fmt_cosine,
    fmt_divergence,
    fmt_export_warnings,
    fmt_tolerance,
    fmt_worst,
)

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def render(doc: dict[str, Any]) -> bytes:
    all_cases = cases(doc)
    checks = {(r["name"], c["check"]): c for r in doc["recipes"] for c in r["checks"]}
    root = ET.Element("testsuites", _counts(all_cases, name="buildsys parity"))
    for r in doc["recipes"]:
        mine = [k for k in all_cases if k.recipe == r["name"]]
        suite = ET.SubElement(root, "testsuite", _counts(mine, name=r["name"]))
        props = ET.SubElement(suite, "properties")
        for name, value in (("recipe_file", r["file"]), ("recipe_digest", r["digest"]),
                            ("generated", doc["generated"]), ("buildsys", doc["buildsys"]),
                            *((f"tool.{k}", v) for k, v in doc["tools"].items()), *_warning_props(r)):
            ET.SubElement(props, "property", {"name": clean(name), "value": clean(value)})
        warned = "\n".join(fmt_export_warnings(r.get("export_warnings")))
        for k in mine:
            _testcase(suite, k, checks[(k.recipe, k.check)], warned)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _counts(found: list[Case], name: str) -> dict[str, str]:
    return {"name": clean(name), "tests": str(len(found)),
            "failures": str(sum(1 for k in found if k.status == "failed")), "errors": "0",
            "skipped": str(sum(1 for k in found if k.status == "skipped")), "time": "0"}


def _warning_props(r: dict[str, Any]) -> list[tuple[str, Any]]:
    w = r.get("export_warnings")
    if not w:
        return []
    return [("export.tracer_warnings", w["count"]), ("export.verified_shapes", w["verified_shapes"])]


def _testcase(suite: ET.Element, k: Case, check: dict[str, Any], warned: str = "") -> None:
    case = ET.SubElement(suite, "testcase", {"classname": clean(k.recipe), "name": clean(f"{k.check} {k.output}"),
                                            "time": "0"})
    if k.status == "skipped":
        ET.SubElement(case, "skipped", {"message": clean(k.message)})
    elif k.status == "failed":
        el = ET.SubElement(case, "failure", {"message": clean(k.message[:1000]), "type": k.kind})
        el.text = clean(_details(k, check))
    if warned:  # the export's warnings belong to every check of the recipe: CI tools show a case's output
        ET.SubElement(case, "system-out").text = clean(warned + "\n")


def _details(k: Case, check: dict[str, Any]) -> str:
    lines = [k.message, ""]
    if check.get("tolerance"):
        lines.append(f"tolerance: {fmt_tolerance(check['tolerance'])}")
    if fmt_calibration(check):
        lines.append(fmt_calibration(check))
    if k.rows:
        lines.append(f"{'point':<8} {'max_abs':>10} {'mean_abs':>10} {'max_rel':>10} {'cosine':>12} "
                     f"{'top1':>6} {'nan':>5} {'inf':>5}  baseline max_abs  worst element")
    for row, o in k.rows:
        tag = f"{row['point']}.{row['sample']}"
        if row["error"] or o is None:
            lines.append(f"{tag:<8} ONNX Runtime failed: {row['error'] or 'no such output'}")
            continue
        worst = fmt_worst(o.get("worst"))
        base = fmt((o.get("baseline") or {}).get("max_abs"))
        lines.append(f"{tag:<8} {fmt(o.get('max_abs')):>10} {fmt(o.get('mean_abs')):>10} {fmt(o.get('max_rel')):>10} "
                     f"{fmt_cosine(o.get('cosine')):>12} {fmt(o.get('top1')):>6} {fmt(o.get('nan')):>5} "
                     f"{fmt(o.get('inf')):>5}  {base:>16}  {worst}")
    if check.get("divergence"):
        lines.append(fmt_divergence(check["divergence"]))
    return "\n".join(lines).strip() + "\n"
