"""quantize's integer Pad: a Pad between DequantizeLinear and QuantizeLinear of one scale pads the integers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from buildsys.steps.quantize import integer_pads


def padded(path: Path, value: float | None = None, zero_after: int = 128) -> onnx.ModelProto:
    """x -> Q -> DQ -> Pad (1 pixel each side) -> Q -> DQ -> y, uint8 with scale 1/64 and zero point 128."""
    inits = [numpy_helper.from_array(np.array(1 / 64, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "zp"),
             numpy_helper.from_array(np.array(zero_after, np.uint8), "zp_after"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    pad_inputs = ["xdq", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xdq"], name="dq_in"),
             helper.make_node("Pad", pad_inputs, ["p"], name="pad", mode="constant"),
             helper.make_node("QuantizeLinear", ["p", "s", "zp_after"], ["pq"], name="q_pad"),
             helper.make_node("DequantizeLinear", ["pq", "s", "zp_after"], ["y"], name="dq_out")]
    graph = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_pad_between_dq_and_q_of_one_scale_pads_the_integers_with_the_same_values(tmp_path):
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (1, 2, 4, 4)).astype(np.float32)
    model = padded(tmp_path / "m.onnx")
    want = run(model, x)

    assert integer_pads(model) == 1

    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "Pad", "DequantizeLinear"], ops
    pad = model.graph.node[1]
    assert list(pad.input[:3]) == ["xq", "pads", "zp"] and pad.output[0] == "pq"
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), want)  # the border is 0.0, the rest unchanged


def test_a_pad_that_changes_scale_or_pads_a_non_zero_constant_is_left_in_float(tmp_path):
    other_zero = padded(tmp_path / "a.onnx", zero_after=120)
    assert integer_pads(other_zero) == 0 and [n.op_type for n in other_zero.graph.node].count("QuantizeLinear") == 2
    nonzero = padded(tmp_path / "b.onnx", value=0.5)
    assert integer_pads(nonzero) == 0
    zero = padded(tmp_path / "c.onnx", value=0.0)
    assert integer_pads(zero) == 1
