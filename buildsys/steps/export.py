"""export: PyTorch -> ONNX with the recipe's exporter, opset, names and dynamic axes.

The result is checked before it is trusted: the opset written in the file is
the one asked for, every declared dynamic axis is symbolic in the graph, the
output count matches, and onnx.checker plus strict shape inference pass.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult

# Beyond this many bytes of weights a single protobuf cannot hold the model.
EXTERNAL_DATA_BYTES = 1_800_000_000


def trace_dims(dims: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Dims with the opt point moved off 1 where possible: torch.export specialises size-1 dims."""
    out = {}
    for name, d in dims.items():
        opt = d["opt"]
        if opt == 1 and d["max"] >= 2:
            opt = 2
        out[name] = {**d, "opt": opt}
    return out


class ExportOnnx(Step):
    KIND = "export"
    VERSION = 1
    TOOLS = ("torch", "onnx", "onnxscript", "onnx-ir", "numpy")

    @classmethod
    def warm_modules(cls, params: dict[str, Any]) -> tuple[str, ...]:
        if params["export"]["exporter"] == "dynamo":
            # what torch.onnx.export(dynamo=True) imports on its first call (torch 2.13);
            # names a later torch lacks are skipped by the template
            return ("torch.onnx", "torch.export", "torch.export._trace", "onnxscript", "torch._dynamo",
                    "torch._functorch.aot_autograd", "torch.onnx._internal.exporter._core",
                    "torch.onnx._internal.exporter._torchlib.ops", "networkx")
        return ("torch.onnx",)
    DISCOVERS = True

    def run(self) -> StepResult:
        import torch

        from buildsys.steps._model import example_inputs, load_model

        torch.set_num_threads(self.ctx.threads)
        p = self.params
        model, deps = load_model(p, self.ctx.workspace, self.ctx.files)
        qat_as_qdq(model, p["export"]["exporter"])
        dims = trace_dims(p["dims"])
        args = example_inputs({**p, "dims": dims}, self.ctx.workspace, "opt")
        out = self.ctx.output("model")
        weight_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        external = weight_bytes > EXTERNAL_DATA_BYTES
        print(f"exporting with {p['export']['exporter']} at opset {p['export']['opset']}, "
              f"traced at {[list(a.shape) for a in args]}, {weight_bytes / 2**20:.1f} MiB of weights", flush=True)
        if p["export"]["exporter"] == "dynamo":
            self._dynamo(model, args, out, external)
        else:
            self._torchscript(model, args, out)
        files = [out.name]
        data = out.with_name(out.name + ".data")
        if data.exists():
            files.append(data.name)
        check_onnx(out, self.ctx.scratch)
        self._check_graph(out)
        return StepResult(outputs={"model": files}, deps=deps,
                          summary=f"opset {p['export']['opset']}, {out.stat().st_size / 2**20:.1f} MiB")

    def _dynamo(self, model, args, out: Path, external: bool) -> None:
        import torch

        p = self.params
        dim_objs = {n: torch.export.Dim(n, min=d["min"], max=d["max"]) for n, d in p["dims"].items()}
        shapes = []
        for spec in p["inputs"]:
            axes = {i: dim_objs[s] for i, s in enumerate(spec["shape"]) if isinstance(s, str)}
            shapes.append(axes or None)
        try:
            program = torch.onnx.export(
                model, args, f=None, dynamo=True, opset_version=p["export"]["opset"],
                input_names=[i["name"] for i in p["inputs"]], output_names=p["outputs"],
                dynamic_shapes=tuple(shapes), verbose=False,
            )
        except Exception as exc:
            raise _export_error(exc, "dynamo") from None
        program.save(str(out), external_data=external)
        strip_source_locations(out)

    def _torchscript(self, model, args, out: Path) -> None:
        import torch

        p = self.params
        dynamic_axes = {}
        for spec in p["inputs"]:
            axes = {i: s for i, s in enumerate(spec["shape"]) if isinstance(s, str)}
            if axes:
                dynamic_axes[spec["name"]] = axes
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            try:
                torch.onnx.export(
                    model, args, str(out), dynamo=False, opset_version=p["export"]["opset"],
                    input_names=[i["name"] for i in p["inputs"]], output_names=p["outputs"],
                    dynamic_axes=dynamic_axes, do_constant_folding=True,
                )
            except Exception as exc:
                raise _export_error(exc, "torchscript") from None
        tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        for w in tracer:
            print(f"TracerWarning: {w.filename}:{w.lineno}: {w.message}", flush=True)
        # Tensor-to-Python conversions freeze a value (a branch, a size) at the traced
        # input: the graph is silently wrong elsewhere. Other tracer warnings (iterating
        # a fixed-size dimension, say) are often benign; parity at the corners judges them.
        tracer = [w for w in tracer if any(t in str(w.message) for t in _FREEZING)]
        if tracer:
            w = tracer[0]
            raise StepError(
                f"the TorchScript tracer could not follow the model: {Path(w.filename).name}:{w.lineno}: "
                f"{str(w.message).splitlines()[0]}"
                + (f" (and {len(tracer) - 1} more)" if len(tracer) > 1 else ""),
                field="export.exporter",
                hint="data-dependent Python control flow or tensor-to-Python conversions are frozen into the "
                     "graph at the traced shape; use exporter: dynamo or make the code tensor-only",
            )

    def _check_graph(self, path: Path) -> None:
        import onnx

        p = self.params
        m = onnx.load(str(path), load_external_data=False)
        opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset != p["export"]["opset"]:
            raise StepError(
                f"the {p['export']['exporter']} exporter wrote opset {opset}, not the {p['export']['opset']} asked for "
                "(the dynamo exporter falls back to its own opset when it cannot convert)",
                field="export.opset",
                hint=f"set export.opset: {opset}, or export.exporter: torchscript to keep opset {p['export']['opset']}",
            )
        graph_inputs = {i.name: i for i in m.graph.input}
        for spec in p["inputs"]:
            gi = graph_inputs.get(spec["name"])
            if gi is None:
                raise StepError(f"input {spec['name']!r} is not an input of the exported graph "
                                f"(it has {sorted(graph_inputs)}); the model may not use it", field="inputs")
            dims = gi.type.tensor_type.shape.dim
            for axis, s in enumerate(spec["shape"]):
                if isinstance(s, str) and axis < len(dims) and not dims[axis].dim_param:
                    raise StepError(
                        f"dynamic axis {s!r} (input {spec['name']!r}, dimension {axis}) was frozen to "
                        f"{dims[axis].dim_value} by the {p['export']['exporter']} exporter",
                        field="dims." + s,
                        hint="the model treats this size as a constant (a Python int from .shape, a fixed "
                             "reshape); make the code shape-generic or declare the axis fixed",
                    )
        n_out = len(m.graph.output)
        if n_out != len(p["outputs"]):
            raise outputs_mismatch(n_out, len(p["outputs"]), what="the exported graph outputs")


def qat_as_qdq(model, exporter: str) -> None:
    """A quantization-aware trained model's FakeQuantize modules, made exportable as Q/DQ with their trained scales."""
    from buildsys.steps._qat import tensor_only_fake_quant

    count = tensor_only_fake_quant(model, exporter)
    if count:
        print(f"quantization-aware trained: {count} FakeQuantize modules exported as QuantizeLinear + "
              "DequantizeLinear with their trained scales", flush=True)


def strip_source_locations(path: Path) -> None:
    """Drop the dynamo exporter's per-node stack traces: absolute paths and line numbers.

    Kept, they make the bytes depend on where the checkout lives and on edits to
    comments, which defeats early cutoff and sharing the store between machines.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph] + [f for f in model.functions]
    changed = False
    while graphs:
        g = graphs.pop()
        for node in g.node:
            keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
            if len(keep) != len(node.metadata_props):
                del node.metadata_props[:]
                node.metadata_props.extend(keep)
                changed = True
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    if changed:
        onnx.save(model, str(path))


_FREEZING = ("Converting a tensor to a Python", "registered as constants", "Python values")


def check_onnx(path: Path, scratch: Path) -> None:
    """onnx.checker and strict shape inference on a model file (external data included)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
        inferred = scratch / ".inferred.onnx"
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True, strict_mode=True)
        inferred.unlink(missing_ok=True)
    except Exception as exc:
        raise StepError(f"the ONNX model is invalid: {str(exc).strip().splitlines()[0][:500]}") from None


_OUTPUT_NAMES = re.compile(r"number of output names provided \((\d+)\) exceeded number of outputs \((\d+)\)")
_UNSUPPORTED_OPSET = re.compile(r"Unsupported onnx_opset_version: (\d+)")


def outputs_mismatch(returned: int, named: int, what: str = "the model returned") -> StepError:
    """The recipe's `outputs` list and the model's forward disagree on how many tensors there are."""
    return StepError(f"{what} {returned} tensors, the recipe names {named} outputs",
                     field="outputs",
                     hint=f"give outputs one name per tensor the model's forward returns, in order: {returned} names")


def _export_error(exc: Exception, exporter: str) -> StepError:
    """A failure inside torch.onnx.export, blamed on the recipe field that caused it where known."""
    text = str(exc).strip()
    names = _OUTPUT_NAMES.search(text)
    if names:
        return outputs_mismatch(int(names.group(2)), int(names.group(1)))
    opset = _UNSUPPORTED_OPSET.search(text)
    if opset:
        return _opset_error(int(opset.group(1)), exporter)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    unsupported = next((ln.strip() for ln in lines if "aten::" in ln or "aten." in ln or "torch.ops" in ln), None)
    head = lines[0] if lines else type(exc).__name__
    message = f"the {exporter} exporter failed: {type(exc).__name__}: {head[:400]}"
    if unsupported and unsupported not in head:
        message += f" ({unsupported[:200]})"
    other = "torchscript" if exporter == "dynamo" else "dynamo"
    return StepError(message, field="export.exporter",
                     hint=f"see the log for the exporter's full report; exporter: {other} may handle this model")


def _opset_error(opset: int, exporter: str) -> StepError:
    import torch.onnx

    # private, so read defensively: the message stays right without the number
    highest = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None)
    if highest is None:
        return StepError(f"the {exporter} exporter does not support opset {opset}", field="export.opset",
                         hint="choose a lower export.opset, or exporter: dynamo")
    return StepError(f"the {exporter} exporter supports opsets up to {highest}, found {opset}",
                     field="export.opset", hint=f"set export.opset: {highest} or lower, or exporter: dynamo")
