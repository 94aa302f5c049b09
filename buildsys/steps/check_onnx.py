"""check: an existing ONNX file as the model, verified as an export is, and its ONNX Runtime reference.

`model: {onnx: path}` starts the graph here instead of at export. The file (and
the external data it names, which must lie beside it inside the workspace) is
copied into the build as `model.onnx`, external data re-saved as
`model.onnx.data` as the later steps expect, with the tensors under 1 KiB kept in
the graph (ONNX Runtime reads constants such as a ReduceMean's axes by value
while it loads a model); then onnx.checker, strict shape
inference, the opset against `export.opset`, and the recipe's inputs, outputs and
dynamic axes against the graph. `verify_signature` is shared with the TensorFlow
conversion.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from buildsys.core.canonical import digest_file
from buildsys.core.errors import StepError
from buildsys.recipe.model import InputSpec
from buildsys.steps.base import Step, StepResult
from buildsys.steps.onnxfile import check_model, external_tensors
from buildsys.steps.params import ExportParams, ReferenceParams


class CheckOnnx(Step[ExportParams]):
    KIND = "check"
    VERSION = 2
    TOOLS = ("onnx",)
    RESIDENT = True
    PARAMS = ExportParams

    def run(self) -> StepResult:
        import onnx

        p = self.params
        src = self.ctx.files["model"]
        out = self.ctx.output("model")
        try:
            proto = onnx.load(str(src), load_external_data=False)
        except Exception as exc:
            raise StepError(f"{p.model.onnx} is not an ONNX model: {str(exc).strip()[:300]}",
                            field="model.onnx") from None
        data = self._external_data(proto, src)
        files = [out.name]
        if data:
            files += _resave(src, out)
        else:
            shutil.copyfile(src, out)
        check_model(out, self.ctx.scratch)
        verify_signature(out, p, f"the ONNX file {p.model.onnx}")
        rel = {Path(os.path.relpath(f, self.ctx.workspace)).as_posix(): digest_file(f) for f in data}
        return StepResult(outputs={"model": files}, deps={"files": rel} if rel else {},
                          summary=f"opset {p.export.opset}, {len(proto.graph.node)} nodes"
                                  + (f", {len(data)} external data file(s)" if data else ""))

    def _external_data(self, proto, src: Path) -> list[Path]:
        """The external data files the model names, each checked to lie inside the workspace."""
        import onnx.external_data_helper as ext

        ws = self.ctx.workspace.resolve()
        found: dict[str, Path] = {}
        for tensor in ext._get_all_tensors(proto):
            if not ext.uses_external_data(tensor):
                continue
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            path = (src.parent / location).resolve()
            if not path.is_relative_to(ws):
                raise StepError(f"{self.params.model.onnx} names external data {location!r} outside the "
                                "workspace", field="model.onnx", hint="keep the model's data files beside it")
            if not path.is_file():
                raise StepError(f"{self.params.model.onnx} names external data {location!r}, which does not "
                                "exist", field="model.onnx", hint="copy the .data file(s) saved with the model beside it")
            found[str(path)] = path
        return sorted(found.values())


def _resave(src: Path, out: Path) -> list[str]:
    """`src` with its external data re-saved as `out`, the weights in one `<out>.data`, the name later steps look for.

    Tensors under 1 KiB (onnx's threshold, torch.onnx.export's too) stay in the graph:
    ONNX Runtime, like strict shape inference, reads a ReduceMean's axes or a Reshape's
    shape by value while it loads a model, and refuses one it finds only in the data file.
    Returns the data file written, if any tensor went there.
    """
    import onnx

    full = onnx.load(str(src), load_external_data=True)
    onnx.save(full, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=out.name + ".data", size_threshold=1024)
    data = out.with_name(out.name + ".data")
    if external_tensors(onnx.load(str(out), load_external_data=False).graph):
        return [data.name]
    data.unlink(missing_ok=True)  # every tensor was small: the graph holds them all
    return []


class OnnxRuntimeReference(Step[ReferenceParams]):
    """reference for an ONNX model: ONNX Runtime's outputs on the checked model, at every shape point."""

    KIND = "reference-onnxruntime"
    VERSION = 1
    TOOLS = ("onnxruntime", "numpy")
    RESIDENT = True
    PARAMS = ReferenceParams

    def run(self) -> StepResult:
        from buildsys.steps.reference import write_reference_outputs
        from buildsys.steps.sessions import cpu_session

        p = self.params
        try:
            session = cpu_session(self.ctx.inputs["model"], self.ctx.threads)
        except Exception as exc:
            raise StepError(f"ONNX Runtime cannot load the model: {str(exc).strip()[:500]}") from None
        n = write_reference_outputs(self.slice, self.ctx.workspace, self.ctx.output("reference"),
                                    lambda feeds: session.run(list(p.outputs), feeds))
        return StepResult(summary=f"{n} samples at {', '.join(p.parity.points)} (onnxruntime)")


def verify_signature(path: Path, p: ExportParams, source: str) -> None:
    """The graph's opset, inputs, outputs and dynamic axes against the recipe: as an export is checked."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != p.export.opset:
        raise StepError(f"{source} has opset {opset}, the recipe asks for {p.export.opset}",
                        field="export.opset", hint=f"set export.opset: {opset}")
    initializers = {t.name for t in m.graph.initializer}
    graph_inputs = {i.name: i for i in m.graph.input if i.name not in initializers}
    for spec in p.inputs:
        gi = graph_inputs.get(spec.name)
        if gi is None:
            raise StepError(f"input {spec.name!r} is not an input of {source} (it has {sorted(graph_inputs)})",
                            field="inputs", hint="name the recipe's inputs as the graph names them")
        _check_input(gi, spec, source)
    missing = sorted(set(graph_inputs) - {s.name for s in p.inputs})
    if missing:
        raise StepError(f"{source} has inputs the recipe does not declare: {missing}", field="inputs",
                        hint="declare every graph input under inputs:")
    names = [o.name for o in m.graph.output]
    if names != list(p.outputs):
        raise StepError(f"{source} has outputs {names}, the recipe names {list(p.outputs)}", field="outputs",
                        hint="list the graph's outputs under outputs:, in its order")


def _check_input(gi, spec: InputSpec, source: str) -> None:
    from onnx.helper import tensor_dtype_to_np_dtype

    tt = gi.type.tensor_type
    dtype = tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else None
    if dtype != spec.dtype:
        raise StepError(f"input {spec.name!r} of {source} is {dtype}, the recipe says {spec.dtype}",
                        field="inputs", hint=f"set dtype: {dtype}")
    dims = tt.shape.dim
    if len(dims) != len(spec.shape):
        raise StepError(f"input {spec.name!r} of {source} has rank {len(dims)}, the recipe's shape "
                        f"{list(spec.shape)} has {len(spec.shape)}", field="inputs")
    for axis, (d, s) in enumerate(zip(dims, spec.shape)):
        if isinstance(s, str) and d.HasField("dim_value"):
            raise StepError(f"dynamic axis {s!r} (input {spec.name!r}, dimension {axis}) is fixed to "
                            f"{d.dim_value} in {source}", field="dims." + s,
                            hint="export the model with this axis dynamic, or declare it fixed in the shape")
        if isinstance(s, int) and d.HasField("dim_value") and d.dim_value != s:
            raise StepError(f"input {spec.name!r}, dimension {axis}: {source} has {d.dim_value}, the recipe "
                            f"says {s}", field="inputs")
