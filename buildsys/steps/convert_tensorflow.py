"""convert: a TensorFlow SavedModel or .keras file to ONNX with tf2onnx; and TensorFlow's own reference.

Both steps call the model through one `tf.function` over the recipe's inputs
(named as the recipe names them, dynamic axes left open) that returns the
outputs as a list, so the converted graph and the reference agree on the order
of the outputs; the graph's inputs and outputs are then renamed to the recipe's.
TensorFlow and tf2onnx come with the `tensorflow` extra.
"""
from __future__ import annotations

import os
from pathlib import Path

from buildsys.core.errors import StepError
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import ExportParams, ReferenceParams

EXTRA_HINT = "pip install 'buildsys[tensorflow]' (TensorFlow and tf2onnx)"


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def model_function(p: ExportParams | ReferenceParams, workspace: Path, threads: int = 1):
    """(tf.function over the recipe's inputs returning a list of outputs, its input signature)."""
    tf = _quiet_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    spec = p.model.tensorflow
    assert spec is not None  # the steps of a TensorFlow model alone call this
    signature = [tf.TensorSpec([None if isinstance(s, str) else s for s in i.shape], tf.as_dtype(i.dtype),
                               name=i.name) for i in p.inputs]
    names = [i.name for i in p.inputs]
    if spec.keras:
        try:
            model = tf.keras.models.load_model(str(workspace / spec.keras), compile=False)
        except Exception as exc:
            raise StepError(f"cannot load {spec.keras}: {type(exc).__name__}: {str(exc).strip()[:300]}",
                            field="model.tensorflow.keras") from None

        def call(*args):
            return model(list(args) if len(args) > 1 else args[0], training=False)
    else:
        assert spec.saved_model is not None  # one of the two is set
        try:
            loaded = tf.saved_model.load(str(workspace / spec.saved_model))
        except Exception as exc:
            raise StepError(f"cannot load the SavedModel {spec.saved_model}: {type(exc).__name__}: "
                            f"{str(exc).strip()[:300]}", field="model.tensorflow.saved_model") from None
        serving = loaded.signatures.get("serving_default")
        if serving is None:
            raise StepError(f"the SavedModel {spec.saved_model} has no serving_default signature "
                            f"(it has {sorted(loaded.signatures)})", field="model.tensorflow.saved_model")
        wanted = sorted(serving.structured_input_signature[1])
        if sorted(names) != wanted:
            raise StepError(f"the SavedModel's serving signature takes {wanted}, the recipe's inputs are {names}",
                            field="inputs", hint="name the recipe's inputs as the signature names them")

        def call(*args):
            # through `loaded`: the signature alone does not keep the model's variables alive
            result = loaded.signatures["serving_default"](**dict(zip(names, args)))
            return [result[k] for k in sorted(result)]

    @tf.function(input_signature=signature)
    def fn(*args):
        out = call(*args)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return fn, signature


class ConvertTensorFlow(Step[ExportParams]):
    KIND = "convert"
    VERSION = 1
    TOOLS = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "numpy")
    PARAMS = ExportParams

    def run(self) -> StepResult:
        import onnx
        import tf2onnx

        from buildsys.steps.check_onnx import check_model, verify_signature

        p = self.params
        fn, signature = model_function(p, self.ctx.workspace, self.ctx.threads)
        out = self.ctx.output("model")
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=p.export.opset)
        except Exception as exc:
            raise StepError(f"tf2onnx failed: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}",
                            field="export.opset", hint="see the log; a lower export.opset or a simpler "
                                                       "op set may convert") from None
        rename(proto, p)
        onnx.save(proto, str(out))
        check_model(out, self.ctx.scratch)
        verify_signature(out, p, "the converted model")
        return StepResult(summary=f"tf2onnx at opset {p.export.opset}, {len(proto.graph.node)} nodes")


def rename(proto, p: ExportParams) -> None:
    """Graph inputs and outputs named as the recipe names them; input dynamic axes named after its dims."""
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(graph.output) != len(p.outputs):
        from buildsys.steps.export import outputs_mismatch

        raise outputs_mismatch(len(graph.output), len(p.outputs), what="the converted graph has")
    names = {i.name: s.name for i, s in zip(inputs, p.inputs)}
    names.update({o.name: n for o, n in zip(graph.output, p.outputs)})
    for value in list(inputs) + list(graph.output):
        value.name = names[value.name]
    for node in graph.node:
        node.input[:] = [names.get(x, x) for x in node.input]
        node.output[:] = [names.get(x, x) for x in node.output]
    for gi, spec in zip(inputs, p.inputs):
        for d, s in zip(gi.type.tensor_type.shape.dim, spec.shape):
            if isinstance(s, str):
                d.dim_param = s


class TensorFlowReference(Step[ReferenceParams]):
    """reference for a TensorFlow model: TensorFlow's outputs on the seeded inputs, at every shape point."""

    KIND = "reference-tensorflow"
    VERSION = 1
    TOOLS = ("tensorflow", "tensorflow-cpu", "keras", "numpy")
    PARAMS = ReferenceParams

    def run(self) -> StepResult:
        from buildsys.steps.reference import write_reference_outputs

        p = self.params
        fn, _ = model_function(p, self.ctx.workspace, self.ctx.threads)
        n = write_reference_outputs(self.slice, self.ctx.workspace, self.ctx.output("reference"),
                                    lambda feeds: [t.numpy() for t in fn(*(feeds[i.name] for i in p.inputs))])
        return StepResult(summary=f"{n} samples at {', '.join(p.parity.points)} (tensorflow)")
