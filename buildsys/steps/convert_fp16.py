"""convert[fp16]: the fp32 model with its weights and arithmetic in float16, inputs and outputs kept float32.

The fp16 targets build from it: a strongly typed TensorRT network (the only kind
TensorRT 11 builds, so fp16 works on both majors) and ONNX Runtime on CUDA. The
conversion is ONNX Runtime's own (`onnxruntime.transformers.float16`), which
keeps the operators that lose too much in float16 (its default block list) in
float32 with casts around them. Its parity runs on the CPU as parity[fp16].
"""
from __future__ import annotations

from typing import Any

from buildsys.core.errors import StepError
from buildsys.steps.base import Step, StepResult
from buildsys.steps.check_onnx import check_model
from buildsys.steps.export import EXTERNAL_DATA_BYTES
from buildsys.steps.onnxfile import tensor_types


def convert(src, keep_io_types: bool = True):
    """The float16 ModelProto of the model at `src` (a path), its nodes in a deterministic topological order.

    The converter appends the casts of kept float32 inputs after the nodes that
    read them; the sort puts them back in order, as onnx.checker requires.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(str(src), keep_io_types=keep_io_types))
    model.topological_sort(is_deterministic=True)
    return model.model


class ConvertFp16(Step[dict[str, Any]]):
    KIND = "convert-fp16"
    VERSION = 1
    TOOLS = ("onnx", "onnxruntime", "numpy")
    RESIDENT = True

    def run(self) -> StepResult:
        import onnx

        src = self.ctx.inputs["model"]
        out = self.ctx.output("model")
        try:
            model = convert(src)
        except Exception as exc:
            raise StepError(f"the model could not be converted to float16: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:400]}",
                            hint="remove the fp16 targets, or use precision fp32 or int8") from None
        big = model.ByteSize() > EXTERNAL_DATA_BYTES
        files = [out.name]
        if big:
            data = out.name + ".data"
            onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data, size_threshold=1024)
            files.append(data)
        else:
            onnx.save_model(model, str(out))
        check_model(out, self.ctx.scratch)
        halves = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        kept = sum(n.op_type == "Cast" for n in model.graph.node)
        summary = (f"{halves} of {len(model.graph.initializer)} initializers in float16, "
                   f"{kept} casts (float32 inputs and outputs kept)")
        print(summary)
        return StepResult(outputs={"model": files}, summary=summary)


# -- judging the fp16 model on a CPU ---------------------------------------------------------------

FP16_MAX = 65504.0
_ROUNDED = "__fp32"  # suffix of a node's own float32 result, before it is rounded to float16


def storage_emulation(model):
    """`model` (float16) as float32 arithmetic with every float16 tensor rounded to float16: what a GPU computes.

    ONNX Runtime's CPU provider lacks float16 kernels for many operators and runs
    those in float32, dropping the casts between neighbours: chains of them never
    round to float16 and never overflow, so the fp16 model judged as it is would
    pass what breaks on a GPU. Here each node computes in float32 (as GPU kernels
    accumulate) and each float16 output is cast to float16 and back, so values
    round, and values beyond ±65504 become Inf, exactly where the model stores
    them as float16. Run it with graph optimisations off: they would remove the casts.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    types = tensor_types(m)
    for i, t in enumerate(g.initializer):
        if t.data_type == f16:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    nodes = []
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == f16:
                a.i = f32  # its output is rounded below like every float16 tensor
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == f16:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
        rounding = []
        for k, out in enumerate(n.output):
            if out and types.get(out) == f16:
                n.output[k] = out + _ROUNDED
                # named by the output (unique in a graph), not the node: a Split has several outputs
                rounding += [helper.make_node("Cast", [out + _ROUNDED], [out + "__fp16"], to=f16, name=f"{out}/to_fp16"),
                             helper.make_node("Cast", [out + "__fp16"], [out], to=f32, name=f"{out}/to_fp32")]
        nodes += [n, *rounding]
    del g.node[:]
    g.node.extend(nodes)
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == f16:
            vi.type.tensor_type.elem_type = f32
    return m


def fp16_session(path, threads: int, scratch):
    """A CPU session that computes the fp16 model at `path` as a GPU would (storage_emulation).

    A model over 2 GiB (external data) is written to `scratch` with its data beside it.
    """
    import onnx
    import onnxruntime as ort

    from buildsys.steps.sessions import session_options

    so = session_options(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    emulated = storage_emulation(onnx.load(str(path)))
    if emulated.ByteSize() <= EXTERNAL_DATA_BYTES:
        return ort.InferenceSession(emulated.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = scratch / "model.fp16-emulated.onnx"
    onnx.save_model(emulated, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=out.name + ".data", size_threshold=1024)
    return ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])


def overflow(path, feeds: dict, threads: int) -> str | None:
    """Where the fp16 model at `path` leaves float16's range on `feeds`, in words; None when nothing does.

    The first node (in topological order) whose float16 output holds Inf or NaN
    while its inputs are finite is the cause; a later node that first turns the
    Infs into NaN (a Softmax or a normalisation dividing Inf by Inf) is named too.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    from buildsys.steps.sessions import session_options

    model = onnx.load(str(path))
    types = tensor_types(model)
    emulated = storage_emulation(model)
    order = list(model.graph.node)  # convert() sorted them topologically
    watched = [o for n in order for o in n.output if o and types.get(o) == onnx.TensorProto.FLOAT16]
    have = {o.name for o in emulated.graph.output}
    for name in watched:
        for t in (name, name + _ROUNDED):
            if t not in have:
                emulated.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    names = [o.name for o in emulated.graph.output]
    so = session_options(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    inputs = {i.name for i in emulated.graph.input}
    values = dict(zip(names, ort.InferenceSession(emulated.SerializeToString(), so, providers=["CPUExecutionProvider"])
                      .run(names, {k: v for k, v in feeds.items() if k in inputs})))

    def bad(t: str) -> bool:
        v = values.get(t)
        return v is not None and v.dtype.kind == "f" and not np.isfinite(v).all()

    cause = nan = None
    for n in order:
        outs = [o for o in n.output if o in values and bad(o)]
        if not outs:
            continue
        if cause is None and not any(bad(i) for i in n.input):
            cause = (n, outs[0])
        if nan is None and any(np.isnan(values[o]).any() for o in outs) and \
                not any(values.get(i) is not None and np.isnan(values[i]).any() for i in n.input if values.get(i) is not None and values[i].dtype.kind == "f"):
            nan = (n, outs[0])
    if cause is None:
        return None
    node, out = cause
    raw = values.get(out + _ROUNDED)
    big = float(np.nanmax(np.abs(raw[np.isfinite(raw)]))) if raw is not None and np.isfinite(raw).any() else float("inf")
    text = (f"float16 overflow at {node.op_type} node '{node.name or out}': its output reaches {big:.3g}, beyond "
            f"float16's largest value {FP16_MAX:g}, and becomes Inf")
    if nan is not None and nan[0] is not node:
        text += f"; {nan[0].op_type} node '{nan[0].name or nan[1]}' then turns it into NaN"
    return text + " (keep that part of the model in fp32, or scale its values down)"
