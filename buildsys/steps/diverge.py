"""Where parity breaks: the first node of a candidate ONNX model whose output leaves the reference.

Both models run in ONNX Runtime on the inputs of the parity sample that failed,
with their intermediate tensors exposed as graph outputs; the candidate's nodes
are then walked in topological order and each output that has a counterpart in
the reference is judged with the very tolerance the failed check used
(`numerics.compare`: atol/rtol, cosine, top-1, whichever the precision sets).
The first node whose output breaks it is the answer; every node before it in
topological order, its upstream included, held.

Top-1 agreement is a class-score metric: it judges only tensors shaped like one
of the model's outputs, never a feature map (whose arg-max over the width means
nothing).

A node can break the tolerance by itself, or be merely where an error that grew
along the way crosses the line. The answer tells them apart by the cosine
deficit (1 − cosine, which does not depend on a tensor's scale): when more than
half of the named node's deficit was already in its inputs, the verdict is
"accumulated" and the nodes that added the most deficit are listed.

Graph inputs are compared too: the candidate's quantized copy of an input
(DequantizeLinear(QuantizeLinear(input))) against the feed itself. When that copy is
the first tensor out of tolerance, the answer says so (`quantized_input`, the nodes
reading it, and the remedy: keep the input in fp32 through `quantization.exclude`,
or loosen the tolerance).

Counterparts are found by name first. Quantizers rename what they touch, so a
Q/DQ candidate's tensors are also traced back to the fp32 tensors they stand
for: the output of DequantizeLinear(QuantizeLinear(x)) stands for `x`; a tensor
consumed by a node that also exists in the reference (same name and operator)
stands for the reference node's input in the same position (this is how
dequantized weights meet their fp32 initializers); a tensor produced by such a
node stands for the reference node's output in the same position.

Both models run with ONNX Runtime's graph optimisations off, so each node computes
exactly what the graph says (a fused QLinearConv rounds differently from
DequantizeLinear → Conv → QuantizeLinear, and fusion would hide the very tensors
we look at). Models over 2 GiB (external data) are not supported.
"""
from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import numpy as np

from buildsys.core.errors import BuildsysError
from buildsys.core.numerics import compare
from buildsys.core.verdict import Verdict
from buildsys.steps.onnxfile import tensor_types

# onnx.TensorProto element types compared: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
# Integer tensors (quantized values, shapes, indices) have no fp32 counterpart.
_FLOAT_TYPES = {1, 10, 11, 16}
# The named node "accumulated" its error when its inputs already carried more than
# this share of its own cosine deficit.
INHERITED_SHARE = 0.5
GROWTH_LISTED = 3
# Cosine deficits below this are the rounding of the cosine itself, not error.
_NOISE = 1e-12


class DivergenceError(BuildsysError):
    """The models could not be loaded or run to localise a divergence."""


def first_divergence(reference_model: Path, candidate_model: Path, feeds: dict[str, np.ndarray],
                     tolerance: dict[str, Any], threads: int = 2) -> dict[str, Any]:
    """Where the candidate leaves the reference under `tolerance`, on `feeds`.

    `tolerance` is the precision's entry as the parity check applied it
    ({atol, rtol, min_cosine, min_top1}, unset keys None or absent).

    Returns {verdict, tolerance, compared, growth, ...}: `verdict` is "node" (a
    node breaks the tolerance while its inputs hold), "accumulated" (the first
    node out of tolerance got most of its error from its inputs) or "none" (no
    compared tensor breaks it on these feeds). With a node: node, op_type,
    output, reference_output, shape, its figures (cosine, max_abs, max_rel,
    mismatched, top1, failures) and `inputs`, the figures of each of its inputs
    that could be compared. `growth` lists the nodes that added the most cosine
    deficit. Raises DivergenceError when the models cannot be loaded or run, or
    when no tensor of the candidate can be matched with the reference.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        ref = onnx.load(str(reference_model))
        cand = onnx.load(str(candidate_model))
    except (OSError, DecodeError) as exc:
        raise DivergenceError(f"cannot load the models to localise the divergence: {exc}") from None
    tol = {k: tolerance.get(k) for k in ("atol", "rtol", "min_cosine", "min_top1")}
    ref_types, cand_types = tensor_types(ref), tensor_types(cand)
    mapping = match_tensors(cand, ref)
    mapping = {c: r for c, r in mapping.items() if cand_types.get(c) in _FLOAT_TYPES}
    ref_consts = {t.name: t for t in ref.graph.initializer}
    # A graph input's reference value is the feed itself: the candidate's quantization of it
    # (QuantizeLinear -> DequantizeLinear on the input) is judged like any other tensor's.
    ref_inputs = {i.name for i in ref.graph.input if i.name not in ref_consts and i.name in feeds}
    ref_wanted = sorted({r for r in mapping.values() if r not in ref_consts and r not in ref_inputs})
    ref_values = {**_run(ref, ref_types, ref_wanted, feeds, threads, "reference"),
                  **{i: np.asarray(feeds[i]) for i in ref_inputs}}
    outputs = [o.name for o in cand.graph.output]
    cand_values = _run(cand, cand_types, sorted(set(mapping) | set(outputs)), feeds, threads, "candidate")
    class_shapes = {cand_values[o].shape for o in outputs if o in cand_values}
    judged: dict[str, dict[str, Any]] = {}  # candidate tensor -> its figures
    growth: list[dict[str, Any]] = []
    found = None
    producer = {o: n for n in cand.graph.node for o in n.output if o}
    for node in _topological(cand.graph):
        for out in node.output:
            if out not in mapping:
                continue
            r_name = mapping[out]
            got = cand_values.get(out)
            want = ref_values[r_name] if r_name in ref_values else _constant(ref_consts.get(r_name))
            if got is None or want is None or got.shape != want.shape:
                continue
            scores = got.shape in class_shapes
            m = compare(want, got, tol if scores else {**tol, "min_top1": None})
            if not scores:
                m.pop("top1", None)
            fig = {"node": _name(node), "op_type": node.op_type, "output": out, "reference_output": r_name,
                   "shape": list(got.shape), **{k: m.get(k) for k in _KEPT}}
            judged[out] = fig
            inherited = max((_deficit(judged[i]) for i in _float_inputs(node, producer) if i in judged),
                            default=0.0)
            growth.append({**{k: fig[k] for k in ("node", "op_type", "output", "cosine")},
                           "growth": _deficit(fig) - inherited})
            if found is None and not Verdict.read(m):
                found = (node, fig, inherited)
    if not judged:
        raise DivergenceError("no tensor of the candidate could be matched with one of the reference "
                              "(by name, through its Q/DQ pair, or by node name and position)")
    growth = sorted((g for g in growth if g["growth"] > _NOISE), key=lambda g: -g["growth"])[:GROWTH_LISTED]
    answer: dict[str, Any] = {"tolerance": tol, "compared": len(judged), "growth": growth}
    if found is None:
        return {"verdict": "none", **answer}
    node, fig, inherited = found
    graph_inputs = {i.name for i in cand.graph.input} - {t.name for t in cand.graph.initializer}
    inputs = [_input_figures(i, judged, graph_inputs) for i in _float_inputs(node, producer)]
    deficit = _deficit(fig)
    accumulated = deficit > 0 and inherited > INHERITED_SHARE * deficit
    return {"verdict": "accumulated" if accumulated else "node", **fig,
            "inputs": [i for i in inputs if i is not None], **answer,
            **_quantized_input(node, producer, graph_inputs, cand.graph, fig),
            "compared": list(judged).index(fig["output"]) + 1}


def _input_figures(tensor: str, judged: dict[str, dict[str, Any]], graph_inputs: set[str]) -> dict[str, Any] | None:
    """One input of the named node as compared: a judged tensor's figures, a graph input as fed (exact)."""
    if tensor in judged:
        return {"tensor": tensor, **{k: judged[tensor][k] for k in ("node", "reference_output", "cosine",
                                                                    "max_abs", "passed")}}
    if tensor in graph_inputs:  # both models get the very same feed
        return {"tensor": tensor, "node": "(graph input)", "reference_output": tensor, "cosine": 1.0,
                "max_abs": 0.0, **Verdict(True).to_json()}
    return None


def _quantized_input(node, producer: dict, graph_inputs: set[str], graph, fig: dict[str, Any]) -> dict[str, Any]:
    """When the named node is the Q/DQ of a graph input: which input, and the nodes that read it.

    The divergence is then in the input's own quantization, before any layer: the
    remedy is to keep that input in fp32 (its readers in `quantization.exclude`) or
    to loosen the tolerance to what quantizing the input costs.
    """
    if node.op_type != "DequantizeLinear":
        return {}
    source = _float_inputs(node, producer)[0] if node.input else None
    if source not in graph_inputs:
        return {}
    # every node that reads the input's quantized copy, whichever DequantizeLinear of it
    copies = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input
              and _float_inputs(n, producer)[0] == source for o in n.output}
    readers = [_name(n) for n in graph.node if n.op_type != "QuantizeLinear" and copies & set(n.input)]
    return {"quantized_input": source, "readers": readers,
            "remedy": (f"keep input {source} in fp32 with quantization: {{exclude: [{', '.join(readers)}]}}, "
                       f"or loosen the tolerance to what quantizing it costs (cosine {fig['cosine']:.7f})")}


def diagnose(reference_model: Path, candidate_model: Path, result: Path, reference: Path,
             threads: int = 2) -> dict[str, Any]:
    """first_divergence for a failed parity check: its tolerance, on the sample that failed worst.

    `result` is the check's parity JSON, `reference` the recipe's reference.npz.
    The sample is the failing (point, sample, output) with the lowest cosine;
    the answer says which (`point`, `sample`, `check_output`). On any problem
    the answer is {"error": reason}.
    """
    import json

    from buildsys.steps.reference import read_reference

    try:
        doc = json.loads(Path(result).read_text(encoding="utf-8"))
        manifest, arrays = read_reference(reference)
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"cannot read the parity result or the reference: {exc}"}
    failing = [(row, name, m) for row in doc.get("results", []) if not row.get("error")
               for name, m in (row.get("outputs") or {}).items() if not Verdict.read(m)]
    if not failing:
        return {"error": "no output failed its tolerance (the check failed to run at some point); "
                         "nothing to localise"}
    row, name, _ = min(failing, key=lambda f: (_cos_key(f[2]), -(f[2].get("max_abs") or 0.0)))
    entry = next((e for e in manifest if e["point"] == row["point"] and e["sample"] == row["sample"]), None)
    if entry is None:
        return {"error": f"the reference holds no sample {row['point']}.{row['sample']}"}
    feeds = {k: arrays[key] for k, key in entry["inputs"].items()}
    try:
        found = first_divergence(reference_model, candidate_model, feeds, doc.get("tolerance") or {}, threads)
    except DivergenceError as exc:
        return {"error": exc.message}
    return {**found, "point": row["point"], "sample": row["sample"], "check_output": name}


def _cos_key(m: dict[str, Any]) -> float:
    c = m.get("cosine")
    return -1.0 if c is None or not np.isfinite(c) else float(c)


_KEPT = ("passed", "failures", "cosine", "max_abs", "max_rel", "mismatched", "top1", "nan", "inf")


def _float_inputs(node, producer: dict) -> list[str]:
    """The node's inputs, a DequantizeLinear's quantized input read as the float its QuantizeLinear took."""
    q = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" and node.input else None
    if q is not None and q.op_type == "QuantizeLinear":
        return [q.input[0]]
    return list(node.input)


def _deficit(fig: dict[str, Any]) -> float:
    """1 − cosine, the scale-free size of a tensor's error (NaN counts as the whole budget)."""
    c = fig.get("cosine")
    return 1.0 if c is None or not np.isfinite(c) else max(0.0, 1.0 - float(c))


def _name(node) -> str:
    return node.name or f"<unnamed {node.op_type}>"


def match_tensors(cand, ref) -> dict[str, str]:
    """Candidate node output -> the reference tensor (node output or initializer) it stands for."""
    ref_tensors = ({o for n in ref.graph.node for o in n.output if o} | {t.name for t in ref.graph.initializer}
                   | {i.name for i in ref.graph.input})
    ref_nodes = {n.name: n for n in ref.graph.node if n.name}
    ref_producer = {o: n.op_type for n in ref.graph.node for o in n.output if o}
    producer = {o: n for n in cand.graph.node for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in cand.graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))

    def counterpart(t: str, depth: int = 0) -> str | None:
        p = producer.get(t)
        if depth > 4:
            return None
        if p is not None and p.op_type == "DequantizeLinear":
            q = producer.get(p.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                # The Q/DQ pair sits on the edge of the fp32 tensor it quantizes, whatever
                # became of that tensor's producer (a Relu folded into the Q's clamp, say).
                x = q.input[0]
                found = x if x in ref_tensors else counterpart(x, depth + 1)
                if found is not None:
                    return found
        if t in ref_tensors and (t not in ref_producer or p is None or p.op_type == "DequantizeLinear"
                                 or ref_producer[t] == p.op_type):
            return t
        for c, i in consumers.get(t, []):
            twin = ref_nodes.get(c.name)
            if twin is not None and twin.op_type == c.op_type and i < len(twin.input) and twin.input[i] in ref_tensors:
                return twin.input[i]
        twin = ref_nodes.get(p.name) if p is not None and p.name else None
        if twin is not None and p is not None and twin.op_type == p.op_type and len(twin.output) == len(p.output):
            r = twin.output[list(p.output).index(t)]
            if r in ref_tensors:
                return r
        return None

    found = {}
    for t in producer:
        r = counterpart(t)
        if r is not None:
            found[t] = r
    return found


def _run(model, types: dict[str, int], names: list[str], feeds: dict[str, np.ndarray], threads: int,
         which: str) -> dict[str, np.ndarray]:
    """Values of `names` (node outputs of `model`) on `feeds`."""
    import onnx
    import onnxruntime as ort

    from buildsys.steps.sessions import session_options

    if not names:
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name in have:
            continue
        if types.get(name):
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
        else:  # shape inference left it untyped; ONNX Runtime accepts an output by name alone
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    inits = {t.name for t in m.graph.initializer}
    wanted = {i.name for i in m.graph.input if i.name not in inits}
    missing = wanted - set(feeds)
    if missing:
        raise DivergenceError(f"the {which} model needs inputs {sorted(missing)}, the feeds hold {sorted(feeds)}")
    so = session_options(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as exc:  # ORT raises its own untyped errors; report them as a reason
        raise DivergenceError(f"ONNX Runtime cannot run the {which} model with its intermediate tensors "
                              f"exposed: {' '.join(str(exc).split())[:500]}") from None
    return {n: np.asarray(v) for n, v in zip(names, values)}


def _constant(tensor) -> np.ndarray | None:
    if tensor is None:
        return None
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _topological(graph) -> list:
    """The graph's nodes in topological order (the file's order when it is one, as ONNX requires)."""
    nodes = list(graph.node)
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = {i: {produced_by[x] for x in n.input if x in produced_by} for i, n in enumerate(nodes)}
    if all(d < i for i, ds in deps.items() for d in ds):
        return nodes
    try:
        return [nodes[i] for i in TopologicalSorter(deps).static_order()]
    except CycleError as exc:
        raise DivergenceError(f"the candidate graph has a cycle: {exc.args[1]}") from None
