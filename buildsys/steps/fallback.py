"""fallback[onnxruntime]: keep the int8 model's most sensitive nodes in fp32 until parity[int8] passes.

Runs where a recipe says `quantization: {fallback: auto}`, between
`quantize[onnxruntime]` and `parity[int8]`:

1. The int8 model is judged as parity[int8] judges it (the reference's inputs,
   `tolerances.int8`). If it passes, it is the answer, unchanged: no search.
2. Otherwise each quantized node's sensitivity is measured on the calibration
   data, against the fp32 ONNX model, on the metric that failed (top-1
   disagreements, 1 - cosine, max abs error): for each node, the int8 model with
   that one node's Q/DQ removed (its inputs and weights back to fp32, everything
   else still quantized). Leave-one-out rather than quantizing one node at a time
   into the fp32 model: the gate judges the whole int8 model, where a node's error
   is amplified or masked by the quantization noise of every other node, and
   leave-one-out measures each node in exactly that company (one-at-a-time ranks
   nodes by their error in an otherwise exact network, which is not what fails).
3. Greedily, the most sensitive nodes are added to `quantization.exclude` one at a
   time and the model re-quantized (as `quantize` would with that list) until the
   gate passes or `max_fp32_nodes` are kept. Then each kept node but the last is
   tried back in int8, and stays int8 where the gate still passes: fp32 nodes cost
   latency, and a node chosen early can be made unnecessary by a later one.

The result names the nodes, the quality and the int8 latency before and after,
and the recipe lines that pin the choice (`quantization: {exclude: [...]}`), so
the next build quantizes them directly and searches nothing. Like every step it
is cached: its key holds the models, ranges, reference, calibration data and
tolerance it read.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from buildsys.core.errors import StepError
from buildsys.core.verdict import Verdict
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import FallbackParams, as_dict

_LATENCY_RUNS = 15


class Int8Fallback(Step[FallbackParams]):
    KIND = "fallback"
    PARAMS = FallbackParams
    VERSION = 2  # 2: min_top1_decided judges every row together (parity.judge)
    TOOLS = ("onnx", "onnxruntime", "numpy", "pillow")
    RESIDENT = True

    def run(self) -> StepResult:
        import shutil

        from buildsys.steps.calibrate import calibration_source
        from buildsys.steps.parity import judge
        from buildsys.steps.quantize import flavour_for, quantize
        from buildsys.steps.reference import read_reference

        p = self.params
        q = p.quantization
        tol = as_dict(p.tolerances["int8"])  # as the numerics read it
        fp32_path, int8_path = self.ctx.inputs["model"], self.ctx.inputs["quantized"]
        calib = json.loads(self.ctx.inputs["ranges"].read_text())
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        gate = _Gate(manifest, arrays, list(p.outputs), tol, self.ctx.threads, judge, p.parity.unordered)
        out = self.ctx.output("model")
        pinned = q.exclude

        before = gate(_session(int8_path, self.ctx.threads))
        doc: dict[str, Any] = {"cpu": q.cpu, "pinned": list(pinned), "before": before.figures, "searched": False,
                               "kept_fp32": [], "sensitivity": [], "after": before.figures,
                               **Verdict(before.passed).to_json()}
        if before.passed or calib.get("qat"):
            shutil.copyfile(int8_path, out)
            why = "QAT model: nothing to search" if calib.get("qat") else "int8 passes: no fp32 fallback needed"
            doc["summary"] = f"{why} ({before.text})"
            return self._finish(doc)

        batches = [make() for make in calibration_source(self.slice, self.ctx.workspace, self.ctx.files).batches]
        print(f"int8 fails ({'; '.join(before.failures[:3])}): measuring each quantized node on "
              f"{len(batches)} calibration batches", flush=True)
        flavour = flavour_for("onnxruntime", q.cpu)
        assert p.calibration is not None  # a model without calibration data is QAT: answered above
        per_channel = p.calibration.per_channel
        kept: list[str] = []
        result = before
        with tempfile.TemporaryDirectory(dir=self.ctx.scratch) as tmp:
            def requantize(exclude: tuple[str, ...]) -> Path:
                folder = Path(tempfile.mkdtemp(dir=tmp))
                quantize(fp32_path, calib, flavour, per_channel, folder / "model.onnx", folder, exclude)
                return folder / "model.onnx"

            ranking = sensitivities(fp32_path, int8_path, batches, list(p.outputs), before.failed_metrics,
                                    self.ctx.threads)
            doc["searched"] = True
            doc["sensitivity"] = [{"node": n, "op_type": op, "error_reduction": e, "error_without_qdq": w}
                                  for n, op, e, w in ranking]
            trial = int8_path
            for name, _, _, _ in ranking[: q.max_fp32_nodes]:
                kept.append(name)
                trial = requantize(pinned + tuple(kept))
                result = gate(_session(trial, self.ctx.threads))
                print(f"  + {name}: {result.text}", flush=True)
                if result.passed:
                    break
            # Greedy order can keep a node that a later one made unnecessary: each fp32 node
            # costs latency, so those whose removal still passes the gate go back to int8.
            for name in list(kept[:-1]) if result.passed else ():
                fewer = [k for k in kept if k != name]
                candidate = requantize(pinned + tuple(fewer))
                verdict = gate(_session(candidate, self.ctx.threads))
                print(f"  - {name}: {verdict.text}", flush=True)
                if verdict.passed:
                    kept, trial, result = fewer, candidate, verdict
            shutil.copyfile(trial, out)
        doc.update(kept_fp32=kept, after=result.figures, **Verdict(result.passed).to_json())
        doc["latency_ms"] = _latencies({"fp32": fp32_path, "int8_before": int8_path, "int8_after": out},
                                       gate.opt_feeds(), self.ctx.threads)
        doc["pin"] = pin_lines(pinned + tuple(kept))
        lat = doc["latency_ms"]
        timing = (f"int8 {lat['int8_before']:.1f} → {lat['int8_after']:.1f} ms (fp32 {lat['fp32']:.1f} ms) "
                  f"at the opt shape")
        if result.passed:
            doc["summary"] = (f"kept {len(kept)} {'node' if len(kept) == 1 else 'nodes'} in fp32 "
                              f"({', '.join(kept)}): {before.text} → {result.text}; {timing}; "
                              f"pin it in the recipe: {doc['pin']}")
        else:
            doc["summary"] = (f"int8 still fails with {len(kept)} of at most {q.max_fp32_nodes} nodes in fp32 "
                              f"({', '.join(kept) or 'no node helps'}): {before.text} → {result.text}; {timing}")
        return self._finish(doc)

    def _finish(self, doc: dict[str, Any]) -> StepResult:
        self.ctx.output("report").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(doc["summary"])
        if doc.get("pin") and Verdict.from_json(doc):
            print(f"the recipe line that pins this result (the next build searches nothing):\n{doc['pin']}")
        return StepResult(verdict=Verdict(True, doc["summary"]), summary=doc["summary"])


def pin_lines(exclude: tuple[str, ...]) -> str:
    """`quantization: {exclude: [...]}`, flow style, each name quoted where YAML needs it."""
    return "quantization: {exclude: [" + ", ".join(_yaml_str(n) for n in exclude) + "]}"


def _yaml_str(name: str) -> str:
    import re

    return name if re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./-]*", name) else json.dumps(name)


# -- the gate ---------------------------------------------------------------------------------


class _Verdict:
    def __init__(self, results: list[dict], failures: list[str], tol: dict[str, Any]):
        from buildsys.steps.parity import decided_counts

        self.failures = failures
        self.passed = not failures
        outs = [m for r in results for m in r["outputs"].values()]
        cos = [m["cosine"] for m in outs if m.get("cosine") is not None]
        top1 = [m["top1"] for m in outs if m.get("top1") is not None]
        # Decided top-1 agreement over every row (the gate's measure, parity.judge), the lowest output's.
        decided = [agree / n for agree, n in decided_counts(results).values()]
        self.figures = {"lowest_cosine": min(cos, default=None), "lowest_top1": min(top1, default=None),
                        "lowest_top1_decided": min(decided, default=None),
                        "max_abs": max((m.get("max_abs", 0.0) for m in outs), default=None)}
        parts = []
        if cos:
            parts.append(f"cosine {min(cos):.4f}")
        if decided and tol.get("min_top1_decided") is not None:
            parts.append(f"decided top-1 {min(decided):.0%}")
        if top1 and tol.get("min_top1") is not None:
            parts.append(f"top-1 {min(top1):.0%}")
        if tol.get("atol") is not None or tol.get("rtol") is not None:
            parts.append(f"max abs {self.figures['max_abs']:.3g}")
        self.text = ", ".join(parts) + (" passes" if self.passed else " fails")
        metrics = {"top1_decided" for f in failures if "decided top-1 agreement" in f}
        for m in outs:
            for f in m.get("failures", []):
                metrics.add("top1_decided" if f.startswith("decided") else "top1" if f.startswith("top-1")
                            else "cosine" if f.startswith("cosine") else "abs")
        self.failed_metrics = tuple(sorted(metrics)) or ("cosine",)


class _Gate:
    """parity[int8]'s verdict on a session, on the reference's inputs."""

    def __init__(self, manifest, arrays, outputs, tol, threads, judge, unordered=()):
        self.manifest, self.arrays, self.outputs, self.tol, self.judge = manifest, arrays, outputs, tol, judge
        self.unordered = unordered

    def __call__(self, session) -> _Verdict:
        results, failures = self.judge(session, self.manifest, self.arrays, self.outputs, self.tol, self.unordered)
        return _Verdict(results, failures, self.tol)

    def opt_feeds(self) -> dict:
        entry = next((e for e in self.manifest if e["point"] == "opt"), self.manifest[0])
        return {name: self.arrays[key] for name, key in entry["inputs"].items()}


# -- sensitivity ------------------------------------------------------------------------------


def sensitivities(fp32_path: Path, int8_path: Path, batches: list[dict], outputs: list[str],
                  metrics: tuple[str, ...], threads: int) -> list[tuple[str, str, float, float]]:
    """(node, op type, error reduction, error without its Q/DQ) of every quantized node, most sensitive first.

    The error of a model is its distance to the fp32 model over the batches on the
    failed metrics: top-1 disagreements (where the metric is top-1), plus 1 - cosine
    per row, plus the max abs error where atol/rtol failed.
    """
    import onnx

    fp32 = onnx.load(str(fp32_path))
    int8 = onnx.load(str(int8_path))
    ref = [_session(fp32_path, threads).run(outputs, b) for b in batches]
    base = _error(_session(int8_path, threads), batches, ref, outputs, metrics)
    print(f"int8 error on the calibration data: {base:.6g}", flush=True)
    ranking = []
    for node in quantized_nodes(int8, fp32):
        model = without_qdq(int8, fp32, node.name)
        err = _error(_session(model.SerializeToString(), threads), batches, ref, outputs, metrics)
        ranking.append((node.name, node.op_type, base - err, err))
    ranking.sort(key=lambda r: (-r[2], r[0]))
    for name, op, gain, _ in ranking[:10]:
        print(f"  {name} ({op}): error {base:.6g} → {base - gain:.6g} without its Q/DQ", flush=True)
    return ranking


def quantized_nodes(int8, fp32) -> list:
    """The int8 model's nodes fed by a DequantizeLinear that also exist (same name and op) in the fp32 model."""
    dq_out = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    originals = {n.name: n.op_type for n in fp32.graph.node if n.name}
    return [n for n in int8.graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and originals.get(n.name) == n.op_type
            and any(i in dq_out for i in n.input)]


def without_qdq(int8, fp32, name: str):
    """A copy of the int8 model whose node `name` reads the fp32 tensors (activations and weights) again."""
    import onnx

    from buildsys.steps.quantize import float_inputs

    model = onnx.ModelProto()
    model.CopyFrom(int8)
    float_inputs(model, {name}, fp32)
    return model


def _error(session, batches, ref, outputs, metrics) -> float:
    import numpy as np

    from buildsys.core.numerics import decided_rows

    total = 0.0
    for feeds, expected in zip(batches, ref):
        for r, g in zip(expected, session.run(outputs, feeds)):
            r2 = r.reshape(r.shape[0], -1).astype(np.float64) if r.ndim > 1 else r.reshape(1, -1).astype(np.float64)
            g2 = g.reshape(r2.shape).astype(np.float64)
            norms = np.linalg.norm(r2, axis=1) * np.linalg.norm(g2, axis=1)
            total += float(np.sum(1.0 - (r2 * g2).sum(1) / np.maximum(norms, 1e-30)))
            if ("top1" in metrics or "top1_decided" in metrics) and r.ndim >= 2 and r.shape[-1] >= 2:
                rows_r, rows_g = r.reshape(-1, r.shape[-1]), g.reshape(-1, r.shape[-1])
                wrong = rows_r.argmax(1) != rows_g.argmax(1)
                if "top1" not in metrics:
                    wrong &= decided_rows(rows_r)
                total += float(wrong.sum())
            if "abs" in metrics:
                total += float(np.abs(r2 - g2).max())
    return total


def _session(model, threads: int):
    import onnxruntime as ort

    from buildsys.steps.sessions import session_options

    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise StepError("ONNX Runtime cannot load a model of the fallback search: "
                        f"{' '.join(str(exc).split())[:400]}") from None


def _latencies(models: dict[str, Path], feeds: dict, threads: int) -> dict[str, float]:
    """Median latency (ms) of each model on `feeds`, timed in turn so a busy machine slows all alike."""
    sessions = {k: _session(v, threads) for k, v in models.items()}
    for s in sessions.values():
        s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(_LATENCY_RUNS):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t0)
    return {k: round(statistics.median(v) * 1e3, 3) for k, v in times.items()}
