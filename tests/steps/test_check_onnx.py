"""check_model: onnx.checker and strict shape inference on a model whose tensors lie in external data."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from buildsys.core.errors import StepError
from buildsys.steps.check_onnx import check_model


def centred(path, size_threshold: int = 0) -> None:
    """x @ w minus its mean over the last axis; the ReduceMean's axes are a constant input."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("ReduceMean", ["h", "axes"], ["m"], keepdims=1),
         helper.make_node("Sub", ["h", "m"], ["y"])],
        "centred", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data",
              size_threshold=size_threshold)


def test_constants_that_inference_reads_by_value_are_read_from_the_data_file(tmp_path):
    centred(tmp_path / "m.onnx")
    with pytest.raises(Exception, match="Cannot parse data from external tensors"):
        onnx.shape_inference.infer_shapes_path(str(tmp_path / "m.onnx"), str(tmp_path / "i.onnx"),
                                               check_type=True, strict_mode=True)
    check_model(tmp_path / "m.onnx", tmp_path)  # passes: the axes are read in


def test_a_truncated_data_file_is_an_invalid_model(tmp_path):
    centred(tmp_path / "m.onnx")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(StepError, match="ONNX model is invalid|ends before"):
        check_model(tmp_path / "m.onnx", tmp_path)


def test_an_external_entry_without_its_length_is_read_by_the_tensors_shape(tmp_path):
    centred(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        kept = [e for e in t.external_data if e.key != "length"]
        del t.external_data[:]
        t.external_data.extend(kept)
    onnx.save(model, str(tmp_path / "m.onnx"))
    check_model(tmp_path / "m.onnx", tmp_path)
