"""convert[fp16]: the fp32 model with its weights and arithmetic in float16, inputs and outputs kept float32.

The fp16 targets build from it: a strongly typed TensorRT network (the only kind
TensorRT 11 builds, so fp16 works on both majors) and ONNX Runtime on CUDA. The
conversion is ONNX Runtime's own (`onnxruntime.transformers.float16`), which
keeps the operators that lose too much in float16 (its default block list) in
float32 with casts around them. Its parity runs on the CPU as parity[fp16].
"""
from __future__ import annotations

from typing import Any

from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult
from buildsys.steps.check_onnx import check_model
from buildsys.steps.export import EXTERNAL_DATA_BYTES


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
