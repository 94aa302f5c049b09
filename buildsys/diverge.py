"""Where parity breaks: the first node of a candidate ONNX model whose output leaves the reference.

Both models run in ONNX Runtime with their intermediate tensors exposed as graph
outputs; the candidate's nodes are then walked in topological order and each
output that has a counterpart in the reference is compared under the given
tolerance. The first one out of tolerance is the answer.

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

from buildsys.errors import BuildsysError
from buildsys.numerics import cosine

# onnx.TensorProto element types compared: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
# Integer tensors (quantized values, shapes, indices) have no fp32 counterpart.
_FLOAT_TYPES = {1, 10, 11, 16}


class DivergenceError(BuildsysError):
    """The models could not be loaded or run to localise a divergence."""


def first_divergence(reference_model: Path, candidate_model: Path, feeds: dict[str, np.ndarray],
                     atol: float | None, rtol: float | None, min_cosine: float | None,
                     threads: int = 2) -> dict[str, Any] | None:
    """The first candidate node whose output diverges from the reference, or None.

    A tensor diverges where any element is off by more than atol + rtol·|ref|
    (when atol or rtol is given), where it holds NaN/Inf that the reference
    does not, or where its cosine similarity is below min_cosine (when given).

    Returns {node, op_type, output, reference_output, max_abs, cosine,
    mismatched, shape, compared}: `output` is the candidate tensor,
    `reference_output` the reference tensor it was compared with, `compared`
    how many tensors were compared up to and including this one.
    Raises DivergenceError when the models cannot be loaded or run, or when no
    tensor of the candidate can be matched with the reference.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        ref = onnx.load(str(reference_model))
        cand = onnx.load(str(candidate_model))
    except (OSError, DecodeError) as exc:
        raise DivergenceError(f"cannot load the models to localise the divergence: {exc}") from None
    ref_types, cand_types = _types(ref), _types(cand)
    mapping = match_tensors(cand, ref)
    mapping = {c: r for c, r in mapping.items() if cand_types.get(c) in _FLOAT_TYPES}
    ref_consts = {t.name: t for t in ref.graph.initializer}
    ref_wanted = sorted({r for r in mapping.values() if r not in ref_consts})
    ref_values = _run(ref, ref_types, ref_wanted, feeds, threads, "reference")
    cand_values = _run(cand, cand_types, sorted(mapping), feeds, threads, "candidate")
    compared = 0
    for node in _topological(cand.graph):
        for out in node.output:
            if out not in mapping:
                continue
            r_name = mapping[out]
            got = cand_values.get(out)
            want = ref_values[r_name] if r_name in ref_values else _constant(ref_consts.get(r_name))
            if got is None or want is None or got.shape != want.shape:
                continue
            compared += 1
            figures = _diverges(want, got, atol, rtol, min_cosine)
            if figures is not None:
                return {"node": node.name or f"<unnamed {node.op_type}>", "op_type": node.op_type,
                        "output": out, "reference_output": r_name, "shape": list(got.shape),
                        "compared": compared, **figures}
    if not compared:
        raise DivergenceError("no tensor of the candidate could be matched with one of the reference "
                              "(by name, through its Q/DQ pair, or by node name and position)")
    return None


def match_tensors(cand, ref) -> dict[str, str]:
    """Candidate node output -> the reference tensor (node output or initializer) it stands for."""
    ref_tensors = {o for n in ref.graph.node for o in n.output if o} | {t.name for t in ref.graph.initializer}
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
        if twin is not None and twin.op_type == p.op_type and len(twin.output) == len(p.output):
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


def _diverges(ref: np.ndarray, got: np.ndarray, atol: float | None, rtol: float | None,
              min_cosine: float | None) -> dict[str, Any] | None:
    r = ref.astype(np.float64, copy=False)
    g = got.astype(np.float64, copy=False)
    diff = np.abs(g - r)
    finite = np.where(np.isfinite(diff), diff, np.inf)
    max_abs = float(finite.max()) if diff.size else 0.0
    cos = cosine(r, g)
    new_nonfinite = int((~np.isfinite(g) & np.isfinite(r)).sum())
    mismatched = 0
    if atol is not None or rtol is not None:
        mismatched = int((~(diff <= (atol or 0.0) + (rtol or 0.0) * np.abs(r))).sum())
    low_cosine = min_cosine is not None and not cos >= min_cosine
    if not (new_nonfinite or mismatched or low_cosine):
        return None
    return {"max_abs": max_abs, "cosine": cos, "mismatched": mismatched, "non_finite": new_nonfinite}


def _types(model) -> dict[str, int]:
    """Tensor name -> element type, from shape inference, graph inputs/outputs and initializers."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _run(model, types: dict[str, int], names: list[str], feeds: dict[str, np.ndarray], threads: int,
         which: str) -> dict[str, np.ndarray]:
    """Values of `names` (node outputs of `model`) on `feeds`."""
    import onnx
    import onnxruntime as ort

    from buildsys.steps._ort import session_options

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
