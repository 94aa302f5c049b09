"""An ONNX file on disk, checked: onnx.checker and strict shape inference, external data included;
and the element type of each of a model's tensors.

Shared by the steps that write or take in an ONNX model (export, check, simplify, quantize, the fp16
conversion) and by the first-divergence search.
"""
from __future__ import annotations

from pathlib import Path

from buildsys.core.errors import StepError

# External tensors up to this many bytes are read into the model before strict shape inference: the
# constants that inference reads by value (a ReduceMean's axes, a Reshape's shape) are small, and the
# weights keep only their shapes, so a model over 2 GiB is still inferred in one protobuf.
_INFERENCE_VALUE_BYTES = 64 * 1024


def check_model(path: Path, scratch: Path) -> None:
    """onnx.checker and strict shape inference on a model file, whose tensors may lie in external data.

    `onnx.shape_inference.infer_shapes_path` reads no external data: a constant that
    inference needs by value and finds only in the data file fails it ("Cannot parse
    data from external tensors"), as torch.onnx.export's default output does when
    re-saved with its small tensors outside. Such a model is inferred in memory with
    its small external tensors read in.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
        if not _read_small_external_tensors(model, path.parent):
            inferred = scratch / ".inferred.onnx"
            onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True, strict_mode=True)
            inferred.unlink(missing_ok=True)
        else:
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(f"the ONNX model is invalid: {str(exc).strip().splitlines()[0][:500]}") from None


def _read_small_external_tensors(model, folder: Path) -> bool:
    """Read every external tensor of at most _INFERENCE_VALUE_BYTES into `model`; whether it has external data.

    The location must name a file in `folder` (onnx.checker has already refused one
    that leaves it or is reached through a link).
    """
    import onnx

    tensors = external_tensors(model.graph)
    base = folder.resolve()
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        length = int(info["length"]) if "length" in info else _nbytes(t)
        if not 0 <= length <= _INFERENCE_VALUE_BYTES:
            continue
        where = (folder / info["location"]).resolve()
        if not where.is_relative_to(base) or not where.is_file():
            raise StepError(f"tensor {t.name!r} names external data {info['location']!r}, which is not a file "
                            "beside the model", hint="keep the model's data files beside it")
        with open(where, "rb") as f:
            f.seek(int(info.get("offset", 0)))
            raw = f.read(length)
        if len(raw) != length:
            raise StepError(f"tensor {t.name!r}: its external data {info['location']!r} ends before its "
                            f"{length} bytes", hint="the data file is truncated: copy it again beside the model")
        t.raw_data = raw
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
    return bool(tensors)


def _nbytes(tensor) -> int:
    """The size of a tensor's data from its shape and type (an external entry may leave its length out)."""
    import numpy as np
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return int(np.prod(tensor.dims, dtype=np.int64)) * tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):  # no fixed item size (strings): not a constant shapes depend on
        return -1


def external_tensors(graph) -> list:
    """Every tensor of `graph` (initializers, node attributes, subgraphs) whose data lies in an external file."""
    import onnx

    found = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                found.append(attr.t)
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found.extend(external_tensors(g))
    return found


def tensor_types(model) -> dict[str, int]:
    """Tensor name -> element type, from shape inference, the graph's inputs and outputs and its initializers."""
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
