"""The CI gate's side of a build: which steps it judges, and what the reports read of each.

Every artifact path comes from the resolved graph (buildsys.recipe.resolve names the
files); nothing here derives a file name of its own.
"""
from __future__ import annotations

import json
from pathlib import Path

from buildsys.core.verdict import Verdict
from buildsys.recipe.resolve import Graph, StepSpec
from buildsys.reports.collect import ReportInput, recipe_digest


def checks(graph: Graph) -> list[StepSpec]:
    """The steps the gate judges: every parity check, and every engine step that writes a result."""
    return [s for s in graph.steps.values() if s.family == "parity" or "result" in s.outputs]


def report_entry(out: Path, graph: Graph, step: StepSpec, state: str, done: bool, reason: str,
                 verdict: Verdict | None) -> ReportInput:
    """What the reports need of one judged step that ended in `state` with `verdict`.

    `done`: the state left the step's outputs in place (the engine's `DONE`).
    """
    r = graph.recipes[step.recipe]
    check = step.name[step.name.index("[") + 1:-1] if "[" in step.name else step.name
    result = out / step.outputs["result"] if done else None
    calib = _calibration_record(out, graph, r.name) if check.endswith("int8") else {}
    divergence = None
    if done and check.endswith("int8") and verdict is not None and not verdict:
        divergence = _divergence(out, graph, step)
    return ReportInput(recipe=r.name, recipe_file=r.file, recipe_digest=recipe_digest(r), check=check,
                       result=result, state=state, reason=reason,
                       outputs=tuple(o.name for o in r.outputs), random_calibration=bool(calib.get("random_data")),
                       qat=bool(calib.get("qat")), divergence=divergence, description=r.description)


def _artifact(out: Path, graph: Graph, ref: str) -> Path:
    """The file under out/ of an input reference `<step id>#<output>`."""
    sid, _, output = ref.partition("#")
    return out / graph.steps[sid].outputs[output]


def _calibration_record(out: Path, graph: Graph, recipe: str) -> dict:
    """The calibrate step's record (QAT, random data or not) as it wrote it: the reports say what it says."""
    calibrate = graph.steps.get(f"{recipe}:calibrate")
    if calibrate is None:
        return {}
    try:
        return json.loads((out / calibrate.outputs["ranges"]).read_text())
    except (OSError, ValueError):
        return {}


def _divergence(out: Path, graph: Graph, step: StepSpec) -> dict:
    """Where the quantized model strays from the fp32 model, on the sample that failed."""
    from buildsys.steps.diverge import diagnose

    fp32 = _artifact(out, graph, graph.steps[f"{step.recipe}:parity[fp32]"].inputs["model"])
    candidate = _artifact(out, graph, step.inputs["model"])  # the model the check judged (fallback's, if any)
    reference = step.inputs.get("reference") or f"{step.recipe}:reference#reference"
    return diagnose(fp32, candidate, out / step.outputs["result"], _artifact(out, graph, reference))
