"""parity[precision]: the candidate ONNX in ONNX Runtime against the PyTorch reference.

Every output at every shape point and sample is compared under the precision's
tolerance; the full figures go to a JSON result, the verdict to the build.
A model that cannot even run at a shape point (a sequence length baked in at
export, say) fails that point with ONNX Runtime's message.
"""
from __future__ import annotations

import json

from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult


class ParityCheck(Step):
    KIND = "parity"
    VERSION = 4
    TOOLS = ("onnxruntime", "numpy")

    def run(self) -> StepResult:
        from buildsys.numerics import compare
        from buildsys.steps._ort import cpu_session
        from buildsys.steps.reference import read_reference

        p = self.params
        precision = p["precision"]
        tol = p["tolerances"][precision]
        try:
            session = cpu_session(self.ctx.inputs["model"], self.ctx.threads)
        except Exception as exc:
            raise StepError(f"ONNX Runtime cannot load the model: {str(exc).strip()[:500]}") from None
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        results, failed = [], []
        for entry in manifest:
            feeds = {name: arrays[key] for name, key in entry["inputs"].items()}
            row = {"point": entry["point"], "sample": entry["sample"],
                   "shapes": {k: list(v.shape) for k, v in feeds.items()}, "outputs": {}, "error": None}
            try:
                got = session.run(p["outputs"], feeds)
            except Exception as exc:
                row["error"] = " ".join(str(exc).split())[:800]
                failed.append(f"{entry['point']}{_shape_of(row)}: ONNX Runtime failed: {row['error'][:300]}")
                results.append(row)
                continue
            for name, value in zip(p["outputs"], got):
                m = compare(arrays[entry["outputs"][name]], value, tol)
                row["outputs"][name] = m
                if not m["passed"]:
                    failed.append(f"{entry['point']}{_shape_of(row)} {name}: {'; '.join(m['failures'])}")
            results.append(row)
        passed = not failed
        worst = max((m.get("max_abs", 0.0) for r in results for m in r["outputs"].values()), default=0.0)
        figures = f"max abs error {worst:.3g}"
        if tol.get("min_cosine") is not None or tol.get("min_top1") is not None:
            cosines = [m["cosine"] for r in results for m in r["outputs"].values() if m.get("cosine") is not None]
            top1s = [m["top1"] for r in results for m in r["outputs"].values() if m.get("top1") is not None]
            figures = ", ".join(([f"lowest cosine {min(cosines):.4f}"] if cosines else [])
                                + ([f"lowest top-1 agreement {min(top1s):.0%}"] if top1s else []) + [figures])
        if passed:
            summary = f"{precision} passed at {_points(results)} ({figures})"
        else:
            bad = {f.partition(" ")[0].partition(":")[0] for f in failed}
            held = [r for r in results if r["point"] not in bad]
            summary = (f"{precision} FAILED: " + " | ".join(failed[:4])
                       + (f" (passed at {_points(held)})" if held else " (passed at no shape point)"))
        doc = {"precision": precision, "tolerance": tol, "passed": passed, "failures": failed,
               "candidate": self.ctx.inputs["model"].name, "results": results}
        self.ctx.output("result").write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n")
        print(summary)
        return StepResult(verdict={"passed": passed, "summary": summary}, summary=summary)


def _shape_of(row: dict) -> str:
    """The input shapes of a drawn point (a corner is known by its name): where a graph went wrong."""
    if row["point"] in ("min", "opt", "max"):
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in row["shapes"].items()) + ")"


def _order(point: str) -> tuple[int, str]:
    return {"min": 0, "opt": 1, "max": 2}.get(point, 3), point


def _points(results: list[dict]) -> str:
    """`min, opt, max, random1 [3, 117]`: each point once, drawn ones with their shapes."""
    shown = {}
    for r in results:
        if r["point"] not in shown:
            shapes = list(r["shapes"].values())
            shown[r["point"]] = r["point"] if r["point"] in ("min", "opt", "max") else \
                f"{r['point']} {shapes[0] if len(shapes) == 1 else shapes}"
    return ", ".join(shown[p] for p in sorted(shown, key=_order))
