"""diverge.first_divergence names the node where a broken model leaves its fp32 reference."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from buildsys.diverge import DivergenceError, first_divergence

CHANNELS = [(3, 8), (8, 8), (8, 8), (8, 8)]


def tiny_convnet(path: Path) -> Path:
    """conv → relu, four times, then global pool → flatten → gemm; named nodes, dynamic batch."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i, (cin, cout) in enumerate(CHANNELS):
        w = (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(b, f"conv{i}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}_out"],
                                      name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}_out"], [f"relu{i}_out"], name=f"relu{i}"))
        x = f"relu{i}_out"
    inits += [numpy_helper.from_array((rng.standard_normal((5, 8)) * 0.3).astype(np.float32), "fc.weight"),
              numpy_helper.from_array(np.zeros(5, np.float32), "fc.bias")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"], name="gap"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def quantize(fp32: Path, path: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": rng.random((2, 3, 16, 16), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process
    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("diverge")
    fp32 = tiny_convnet(d / "fp32.onnx")
    return {"fp32": fp32, "int8": quantize(fp32, d / "int8.onnx"), "dir": d}


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(2).random((2, 3, 16, 16), dtype=np.float32)}


def edited(src: Path, dst: Path, initializer: str, change) -> Path:
    model = onnx.load(src)
    (t,) = [t for t in model.graph.initializer if t.name == initializer]
    t.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(t).copy()), t.name))
    onnx.save(model, dst)
    return dst


def test_identical_models_do_not_diverge(models, feeds):
    assert first_divergence(models["fp32"], models["fp32"], feeds, atol=1e-6, rtol=0.0, min_cosine=0.9999) is None


def test_a_sound_int8_model_stays_within_cosine(models, feeds):
    assert first_divergence(models["fp32"], models["int8"], feeds, atol=None, rtol=None, min_cosine=0.99) is None


def test_corrupted_activation_scale_is_named(models, feeds):
    qdq = onnx.load(models["int8"])
    producer = {o: n for n in qdq.graph.node for o in n.output}
    # activation Q/DQ pairs in graph order; take one in the middle of the network
    pairs = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear"
             and producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "QuantizeLinear"]
    dq = pairs[len(pairs) // 2]
    q = producer[dq.input[0]]
    assert dq.input[1] == q.input[1]  # the quantizer shares one scale between the pair
    broken = edited(models["int8"], models["dir"] / "bad-act.onnx", dq.input[1], lambda s: s * 200)
    consumers = [n.name for n in qdq.graph.node if dq.output[0] in n.input]

    found = first_divergence(models["fp32"], broken, feeds, atol=None, rtol=None, min_cosine=0.99)

    assert found is not None and found["node"] in {dq.name, q.name, *consumers}, found
    assert found["node"] == dq.name and found["op_type"] == "DequantizeLinear"
    assert found["reference_output"] == q.input[0] and found["cosine"] < 0.99


def test_corrupted_weight_scale_is_named(models, feeds):
    broken = edited(models["int8"], models["dir"] / "bad-weight.onnx", "conv2.weight_scale", lambda s: s * 0.01)

    found = first_divergence(models["fp32"], broken, feeds, atol=None, rtol=None, min_cosine=0.99)

    assert found is not None and found["node"] in {"conv2.weight_DequantizeLinear", "conv2"}, found
    assert found["reference_output"] in {"conv2.weight", "conv2_out"}


def test_perturbed_fp32_conv_weight_is_named(models, feeds):
    def nudge(w):
        w[0, 0, 1, 1] += 0.05
        return w

    broken = edited(models["fp32"], models["dir"] / "perturbed.onnx", "conv2.weight", nudge)

    found = first_divergence(models["fp32"], broken, feeds, atol=1e-4, rtol=1e-3, min_cosine=None)

    assert found is not None
    assert (found["node"], found["op_type"], found["output"]) == ("conv2", "Conv", "conv2_out")
    assert found["mismatched"] > 0 and found["max_abs"] > 1e-3
    assert found["compared"] == 5  # conv0, relu0, conv1, relu1 agreed before it


def test_missing_feed_is_reported(models):
    with pytest.raises(DivergenceError, match="needs inputs"):
        first_divergence(models["fp32"], models["fp32"], {"other": np.zeros(1, np.float32)}, 1e-4, 1e-3, None)


def test_unrelated_models_are_reported_not_passed(models, feeds, tmp_path):
    model = onnx.load(models["fp32"])
    for n in model.graph.node:
        n.output[:] = [f"other_{o}" if o != "logits" else o for o in n.output]
        n.input[:] = [f"other_{i}" if i.endswith("_out") or i in ("pool", "flat") else i for i in n.input]
        n.name = f"other_{n.name}"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    # only `logits` can be matched; it agrees, so nothing diverges
    assert first_divergence(models["fp32"], renamed, feeds, 1e-4, 1e-3, None) is None
    model.graph.output[0].name = model.graph.node[-1].output[0] = "scores"
    onnx.save(model, renamed)
    with pytest.raises(DivergenceError, match="no tensor of the candidate could be matched"):
        first_divergence(models["fp32"], renamed, feeds, 1e-4, 1e-3, None)


def test_unreadable_model_is_reported(models, feeds, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DivergenceError, match="cannot load"):
        first_divergence(models["fp32"], junk, feeds, 1e-4, 1e-3, None)
