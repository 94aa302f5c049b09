"""simplify: onnxsim on the exported model; the result is re-checked before it is kept."""
from __future__ import annotations

import os

from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult
from buildsys.steps.export import EXTERNAL_DATA_BYTES, check_onnx


TWO_GIB = 2**31


def symbolic_axes(model) -> dict[tuple[str, int], str]:
    out = {}
    for gi in model.graph.input:
        for axis, d in enumerate(gi.type.tensor_type.shape.dim):
            if d.dim_param:
                out[(gi.name, axis)] = d.dim_param
    return out


class SimplifyOnnx(Step):
    KIND = "simplify"
    VERSION = 1
    TOOLS = ("onnx", "onnxsim")

    def run(self) -> StepResult:
        import onnx
        import onnxsim

        src = self.ctx.inputs["model"]
        out = self.ctx.output("model")
        data = src.with_name(src.name + ".data")
        if data.exists() and data.stat().st_size + src.stat().st_size > TWO_GIB:
            # onnxsim works on one in-memory protobuf, which cannot exceed 2 GiB.
            os.link(src, out)
            os.link(data, out.with_name(out.name + ".data"))
            return StepResult(outputs={"model": [out.name, out.name + ".data"]},
                              summary="skipped: the model is over 2 GiB and onnxsim cannot hold it in one "
                                      "protobuf; passed through unchanged")
        model = onnx.load(str(src))
        before = symbolic_axes(model)
        nodes_before = len(model.graph.node)
        try:
            simplified, ok = onnxsim.simplify(model)
        except Exception as exc:
            raise StepError(f"onnxsim failed: {type(exc).__name__}: {str(exc).strip()[:400]}", field="simplify",
                            hint="set simplify: false in the recipe to build from the exported model") from None
        if not ok:
            raise StepError("onnxsim could not validate the simplified model", field="simplify",
                            hint="set simplify: false in the recipe to build from the exported model")
        after = symbolic_axes(simplified)
        frozen = sorted(f"{name}[{axis}] ({dim})" for (name, axis), dim in before.items() if (name, axis) not in after)
        if frozen:
            raise StepError(f"onnxsim froze dynamic axes: {', '.join(frozen)}", field="simplify",
                            hint="set simplify: false in the recipe")
        files = [out.name]
        if simplified.ByteSize() > EXTERNAL_DATA_BYTES or any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in simplified.graph.initializer
        ):
            onnx.save(simplified, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=out.name + ".data")
            files.append(out.name + ".data")
        else:
            onnx.save(simplified, str(out))
        check_onnx(out, self.ctx.scratch)
        nodes = len(simplified.graph.node)
        return StepResult(outputs={"model": files}, summary=f"{nodes_before} → {nodes} nodes")
