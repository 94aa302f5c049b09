"""parity[precision]: the candidate ONNX in ONNX Runtime against the PyTorch reference.

Every output at every shape point and sample is compared under the precision's
tolerance; the full figures go to a JSON result, the verdict to the build.
A model that cannot even run at a shape point (a sequence length baked in at
export, say) fails that point with ONNX Runtime's message.

parity[fp16] runs the fp16 model as a GPU computes it (float16 storage,
float32 arithmetic: convert_fp16.storage_emulation), and when it fails names
the node whose values left float16's range, if one did.

parity[int8] also times the int8 engine against the fp32 engine of the same
export on this machine's CPU at the opt point (`steps.latency`: CPU time per run
at one thread, medians and minima of interleaved runs, beside wall time), says
which CPU class its ONNX Runtime flavour was made for, and which data it judged on
(seeded noise, or real data held out of calibration): the reviewer judges quality
and speed at once.
"""
from __future__ import annotations

import json
from typing import Any

from buildsys.core.errors import StepError
from buildsys.core.verdict import Verdict
from buildsys.recipe.model import QuantizationSpec
from buildsys.steps.base import Step, StepResult

# At the top (standard library only there): the resident process loads it with this module,
# so that timing int8 imports nothing new into it.
from buildsys.steps.latency import int8_against_fp32
from buildsys.steps.params import ParityParams, as_dict


class ParityCheck(Step[ParityParams]):
    KIND = "parity"
    PARAMS = ParityParams
    VERSION = 7  # 6: rows in any order, the fp16 emulation; 7: min_top1_decided judges every row together
    # onnx: parity[fp16] rewrites the fp16 model for its float16 emulation (convert_fp16.storage_emulation)
    TOOLS = ("onnxruntime", "numpy", "onnx")
    RESIDENT = True

    @classmethod
    def lane(cls, params: dict) -> str:
        """fp16 in the resident process that holds onnx; the others in the one that holds ONNX Runtime alone
        (no torch there: a build that re-runs only parity, a tolerance changed, never waits for it)."""
        return "resident" if params.get("precision") == "fp16" else "resident-ort"

    def run(self) -> StepResult:
        from buildsys.steps.reference import read_reference
        from buildsys.steps.sessions import cpu_session

        p = self.params
        precision = p.precision
        tol = as_dict(p.tolerance)  # as the numerics read it and the result file records it
        try:
            if precision == "fp16":
                from buildsys.steps.convert_fp16 import fp16_session

                session = fp16_session(self.ctx.inputs["model"], self.ctx.threads, self.ctx.scratch)
            else:
                session = cpu_session(self.ctx.inputs["model"], self.ctx.threads)
        except Exception as exc:
            raise StepError(f"ONNX Runtime cannot load the model: {str(exc).strip()[:500]}") from None
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        results, failed = judge(session, manifest, arrays, list(p.outputs), tol, p.parity.unordered)
        passed = not failed
        worst = max((m.get("max_abs", 0.0) for r in results for m in r["outputs"].values()), default=0.0)
        figures = f"max abs error {worst:.3g}"
        if tol.get("max_scaled_error") is not None:
            scaled = max((m.get("scaled_error", 0.0) for r in results for m in r["outputs"].values()), default=0.0)
            figures += f", {scaled:.2%} of the output's scale"
        if tol.get("min_cosine") is not None or tol.get("min_top1") is not None:
            cosines = [m["cosine"] for r in results for m in r["outputs"].values() if m.get("cosine") is not None]
            top1s = [m["top1"] for r in results for m in r["outputs"].values() if m.get("top1") is not None]
            figures = ", ".join(([f"lowest cosine {min(cosines):.4f}"] if cosines else [])
                                + ([f"lowest top-1 agreement {min(top1s):.0%}"] if top1s else []) + [figures])
        if p.parity.unordered:
            figures += "; " + unordered_figures(results, p.parity.unordered)
        if passed:
            summary = f"{precision} passed at {_points(results)} ({figures})"
        else:
            bad = {f.partition(" ")[0].partition(":")[0] for f in failed}
            held = [r for r in results if r["point"] not in bad]
            summary = f"{precision} FAILED: " + " | ".join(failed[:4])
            if not any(f.endswith(ALL_ROWS + ")") for f in failed):  # a gate on every row holds at no point alone
                summary += f" (passed at {_points(held)})" if held else " (passed at no shape point)"
        doc = {"precision": precision, "tolerance": tol, **Verdict(passed, failures=tuple(failed)).to_json(),
               "candidate": self.ctx.inputs["model"].name, "results": results}
        if not passed and precision == "fp16":
            doc["cause"] = _fp16_cause(self.ctx.inputs["model"], manifest, arrays, results, self.ctx.threads)
            if doc["cause"]:
                summary += f"; cause: {doc['cause']}"
        if "fp32" in self.ctx.inputs:
            doc["int8"] = int8_figures(results, p.quantization)
            doc["int8"]["data"] = p.data
            doc["int8"]["judged_on"] = judged_on(p.data)
            doc["int8"]["latency"] = _latency(self.ctx.inputs["fp32"], self.ctx.inputs["model"], manifest, arrays,
                                              self.ctx.threads, self.ctx.scratch)
            lat = doc["int8"]["latency"]
            for name, o in doc["int8"]["outputs"].items():
                if o["decided"]:
                    summary += (f"; {name}: top-1 {o['top1']:.0%} overall, "
                                f"{o['top1_decided']:.0%} of {o['decided']} decided")
            summary += f"; judged on {doc['int8']['judged_on']}"
            if lat.get("error"):
                summary += f"; latency not measured: {lat['error']}"
            else:
                summary += (f"; {doc['int8']['label']}: {lat['int8_ms']:.2f} ms vs the fp32 engine's "
                            f"{lat['fp32_ms']:.2f} ms ({lat['speedup']:.2f}x; CPU time per run at 1 thread, "
                            f"median of {lat['runs']})")
        self.ctx.output("result").write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n")
        print(summary)
        return StepResult(verdict=Verdict(passed, summary), summary=summary)


def judge(session, manifest: list[dict], arrays, outputs: list[str], tol: dict,
          unordered: tuple[str, ...] = ()) -> tuple[list[dict], list[str]]:
    """Each reference entry run through `session` and compared under `tol`: (result rows, failures).

    The outputs in `unordered` are compared as rows in any order (`numerics.compare_outputs`).
    `min_top1_decided` bounds the agreement over every row where the reference is
    decided, at every point and sample together (`decided_failures`), not sample by
    sample: a sample at a batch-1 point is one row, where one flip would read as 0 %.
    """
    from buildsys.core.numerics import compare_outputs

    low = tol.get("min_top1_decided")
    per_sample = {**tol, "min_top1_decided": None} if low is not None else tol
    results, failed = [], []
    for entry in manifest:
        feeds = {name: arrays[key] for name, key in entry["inputs"].items()}
        row = {"point": entry["point"], "sample": entry["sample"],
               "shapes": {k: list(v.shape) for k, v in feeds.items()}, "outputs": {}, "error": None}
        try:
            got = session.run(outputs, feeds)
        except Exception as exc:
            row["error"] = " ".join(str(exc).split())[:800]
            failed.append(f"{entry['point']}{_shape_of(row)}: ONNX Runtime failed: {row['error'][:300]}")
            results.append(row)
            continue
        refs = {name: arrays[entry["outputs"][name]] for name in outputs}
        row["outputs"] = compare_outputs(refs, dict(zip(outputs, got)), per_sample, unordered)
        failed += [f"{entry['point']}{_shape_of(row)} {name}: {'; '.join(m['failures'])}"
                   for name, m in row["outputs"].items() if not Verdict.from_json(m)]
        results.append(row)
    if low is not None:
        failed += decided_failures(results, low)
    return results, failed


ALL_ROWS = "over every point and sample"


def decided_counts(results: list[dict]) -> dict[str, list[int]]:
    """Per output, [rows that agree, rows] where the reference is decided, over every point and sample."""
    counts: dict[str, list[int]] = {}
    for r in results:
        for name, m in r["outputs"].items():
            if m.get("decided"):
                c = counts.setdefault(name, [0, 0])
                c[0] += m["agree_decided"]
                c[1] += m["decided"]
    return counts


def decided_failures(results: list[dict], low: float) -> list[str]:
    """`logits: decided top-1 agreement 0.9239 < 1.0 (85 of 92 rows ...)` for each output below `low`.

    The rows where the reference is decided are counted over every point and sample.
    """
    counts = decided_counts(results)
    return [f"{name}: decided top-1 agreement {agree / decided:.4f} < {low} ({agree} of {decided} rows where "
            f"the reference is decided, {ALL_ROWS})"
            for name, (agree, decided) in counts.items() if agree / decided < low]


def unordered_figures(results: list[dict], unordered: tuple[str, ...]) -> str:
    """`boxes, scores, labels compared as rows in any order: 600 of 600 rows matched`, over every point and sample."""
    counts = [m["unordered"] for r in results for name, m in r["outputs"].items()
              if name == unordered[0] and m.get("unordered", {}).get("rows") is not None]
    rows = sum(c["rows"] for c in counts)
    matched = sum(c["matched"] for c in counts)
    return f"{', '.join(unordered)} compared as rows in any order: {matched} of {rows} rows matched"


def _fp16_cause(model, manifest: list[dict], arrays, results: list[dict], threads: int) -> str | None:
    """Where the fp16 model overflows, on the failing sample with the most non-finite values (then the worst error)."""
    from buildsys.steps.convert_fp16 import overflow

    failing = [r for r in results if r["error"] is None and not all(Verdict.from_json(m) for m in r["outputs"].values())]
    if not failing:
        return None
    row = max(failing, key=lambda r: (sum(m.get("nan", 0) + m.get("inf", 0) for m in r["outputs"].values()),
                                      max(m.get("scaled_error", 0.0) for m in r["outputs"].values())))
    entry = next(e for e in manifest if e["point"] == row["point"] and e["sample"] == row["sample"])
    try:
        return overflow(model, {k: arrays[key] for k, key in entry["inputs"].items()}, threads)
    except Exception as exc:  # ORT's own untyped errors: the verdict stands, the diagnosis says why it is missing
        return f"(could not look for a float16 overflow: {' '.join(str(exc).split())[:200]})"


def int8_figures(results: list[dict], int8: QuantizationSpec | None) -> dict:
    """Top-1 agreement over every row and where the reference is decided, over all points, per output."""
    outputs: dict[str, dict[str, Any]] = {}
    for r in results:
        for name, m in r["outputs"].items():
            if m.get("rows") is None:
                continue
            o = outputs.setdefault(name, {"rows": 0, "agree": 0.0, "decided": 0, "agree_decided": 0.0})
            o["rows"] += m["rows"]
            o["agree"] += m["top1"] * m["rows"]
            o["decided"] += m["decided"]
            o["agree_decided"] += (m["top1_decided"] or 0.0) * m["decided"]
    figures = {name: {"rows": o["rows"], "top1": round(o["agree"] / o["rows"], 6) if o["rows"] else None,
                      "decided": o["decided"],
                      "top1_decided": round(o["agree_decided"] / o["decided"], 6) if o["decided"] else None,
                      "row_cosine": {r["point"]: r["outputs"][name]["row_cosine"] for r in results
                                     if r["outputs"].get(name, {}).get("row_cosine")}}
               for name, o in outputs.items()}
    cpu = int8.cpu if int8 else None
    label = {"vnni": "int8 for VNNI CPUs", "avx2": "int8 for AVX2 CPUs"}.get(cpu or "", "int8")
    return {"cpu": cpu, "label": label, "exclude": list(int8.exclude if int8 else ()), "outputs": figures}


def _latency(fp32, int8, manifest: list[dict], arrays, threads: int, scratch) -> dict:
    """The int8 engine against the fp32 engine of the same export at the opt point (steps.latency)."""
    import tempfile
    from pathlib import Path

    from buildsys.core.toolchain import cpu

    entry = next((e for e in manifest if e["point"] == "opt"), manifest[0])
    feeds = {name: arrays[key] for name, key in entry["inputs"].items()}
    where = {"point": entry["point"], "shapes": {k: list(v.shape) for k, v in feeds.items()}, "cpu": cpu()["model"]}
    try:
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            return {**int8_against_fp32(fp32, int8, feeds, threads, Path(tmp)), **where}
    except Exception as exc:  # ONNX Runtime's own untyped errors: the latency says why it is missing
        return {"error": " ".join(str(exc).split())[:300], "fp32_ms": float("nan"), "int8_ms": float("nan"), **where}


def judged_on(data: dict) -> str:
    """What parity's inputs were, in a few words per input: `input: 2 held-out images of data/calibration`."""
    said = []
    for name, d in data.items():
        if d.get("files") is not None:
            n, held = len(d["files"]), d.get("held_out_of_calibration", 0)
            what = "image" if d["kind"] == "images" else "file"
            kept = f"{held} held out of calibration" if held else "none also calibrated on"
            views = f"seeded views ({d.get('preset')} preset) of " if d["kind"] == "images" else ""
            said.append(f"{name}: {views}{n} {what}{'s' if n != 1 else ''} of {d['path']} ({kept})")
        elif d["kind"] == "npy":
            said.append(f"{name}: npy files {d['path']}")
        else:
            args = ", ".join(f"{k} {v:g}" for k, v in d.items() if k != "kind" and isinstance(v, (int, float)))
            said.append(f"{name}: seeded {d['kind']} noise ({args})")
    return "; ".join(said) or "the reference's inputs"


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
