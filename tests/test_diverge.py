"""diverge.first_divergence names the node where a broken model leaves its fp32 reference."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from buildsys.steps.diverge import DivergenceError, first_divergence

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
    found = first_divergence(models["fp32"], models["fp32"], feeds, {"atol": 1e-6, "rtol": 0.0, "min_cosine": 0.9999})
    assert found["verdict"] == "none" and found["compared"] == 11 and found["growth"] == []


def test_a_sound_int8_model_stays_within_cosine(models, feeds):
    found = first_divergence(models["fp32"], models["int8"], feeds, {"min_cosine": 0.99})
    assert found["verdict"] == "none", found
    # rounding is not divergence: a cosine-only tolerance does not judge elementwise
    found = first_divergence(models["fp32"], models["int8"], feeds, {"min_cosine": 0.99, "atol": None, "rtol": None})
    assert found["verdict"] == "none", found


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

    found = first_divergence(models["fp32"], broken, feeds, {"min_cosine": 0.99})

    assert found["verdict"] == "node" and found["node"] in {dq.name, q.name, *consumers}, found
    assert found["node"] == dq.name and found["op_type"] == "DequantizeLinear"
    assert found["reference_output"] == q.input[0] and found["cosine"] < 0.99


def test_corrupted_weight_scale_is_named(models, feeds):
    broken = edited(models["int8"], models["dir"] / "bad-weight.onnx", "conv2.weight_scale", lambda s: s * 0.01)

    found = first_divergence(models["fp32"], broken, feeds, {"min_cosine": 0.99})

    assert found["verdict"] == "node" and found["node"] in {"conv2.weight_DequantizeLinear", "conv2"}, found
    assert found["reference_output"] in {"conv2.weight", "conv2_out"}


def test_perturbed_fp32_conv_weight_is_named(models, feeds):
    def nudge(w):
        w[0, 0, 1, 1] += 0.05
        return w

    broken = edited(models["fp32"], models["dir"] / "perturbed.onnx", "conv2.weight", nudge)

    found = first_divergence(models["fp32"], broken, feeds, {"atol": 1e-4, "rtol": 1e-3})

    assert found["verdict"] == "node"
    assert (found["node"], found["op_type"], found["output"]) == ("conv2", "Conv", "conv2_out")
    assert found["mismatched"] > 0 and found["max_abs"] > 1e-3
    assert found["compared"] == 5  # conv0, relu0, conv1, relu1 agreed before it


def test_missing_feed_is_reported(models):
    with pytest.raises(DivergenceError) as err:
        first_divergence(models["fp32"], models["fp32"], {"other": np.zeros(1, np.float32)}, {"atol": 1e-4, "rtol": 1e-3})
    assert err.value.message == "the reference model needs inputs ['input'], the feeds hold ['other']"


def test_unrelated_models_are_reported_not_passed(models, feeds, tmp_path):
    model = onnx.load(models["fp32"])
    for n in model.graph.node:
        n.output[:] = [f"other_{o}" if o != "logits" else o for o in n.output]
        n.input[:] = [f"other_{i}" if i.endswith("_out") or i in ("pool", "flat") else i for i in n.input]
        n.name = f"other_{n.name}"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    # only `logits` can be matched; it agrees, so nothing diverges
    assert first_divergence(models["fp32"], renamed, feeds, {"atol": 1e-4, "rtol": 1e-3})["verdict"] == "none"
    model.graph.output[0].name = model.graph.node[-1].output[0] = "scores"
    onnx.save(model, renamed)
    with pytest.raises(DivergenceError, match="no tensor of the candidate could be matched"):
        first_divergence(models["fp32"], renamed, feeds, {"atol": 1e-4, "rtol": 1e-3})


def test_unreadable_model_is_reported(models, feeds, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(DivergenceError, match="cannot load"):
        first_divergence(models["fp32"], junk, feeds, {"atol": 1e-4, "rtol": 1e-3})


def test_a_layer_whose_outlier_weight_int8_clips_is_named(tmp_path, feeds):
    """One weight 40x the others: per-tensor int8 rounds the rest of conv2's weights to a few levels."""
    def outlier(w):
        w[0, 0, 1, 1] = 40 * np.abs(w).max()
        return w

    fp32 = edited(tiny_convnet(tmp_path / "clean.onnx"), tmp_path / "fp32.onnx", "conv2.weight", outlier)
    int8 = quantize(fp32, tmp_path / "int8.onnx")

    found = first_divergence(fp32, int8, feeds, {"min_cosine": 0.99})

    assert found["verdict"] == "node", found
    assert (found["node"], found["op_type"], found["reference_output"]) == ("conv2", "Conv", "conv2_out")
    assert found["cosine"] < 0.99 and found["failures"] == [f"cosine {found['cosine']:.6f} < 0.99"]
    # what it computed from held: the activation and the (outlier-dominated) weight
    by_ref = {i["reference_output"]: i for i in found["inputs"]}
    assert by_ref["relu1_out"]["passed"] and by_ref["conv2.weight"]["passed"]
    assert by_ref["conv2.weight"]["cosine"] >= 0.99 and by_ref["relu1_out"]["cosine"] >= 0.99
    assert found["tolerance"] == {"atol": None, "rtol": None, "min_cosine": 0.99, "min_top1": None}
    # a stricter tolerance finds the weight itself out of it first: same metric, other threshold
    strict = first_divergence(fp32, int8, feeds, {"min_cosine": 0.999})
    assert strict["node"] == "conv2.weight_DequantizeLinear" and strict["inputs"] == []
    assert "quantized_input" not in strict and "quantized_input" not in found  # a weight's Q/DQ, a layer

    from buildsys.reports.collect import fmt_divergence

    text = fmt_divergence(found)
    assert text.startswith("first divergence: node conv2 (Conv)")
    assert f"cosine {found['cosine']:.5f}" in text and "against tolerance cosine ≥ 0.99" in text
    assert "its inputs: relu1_out_DequantizeLinear_Output cosine 0.999" in text


def chain(path: Path, gains: list[np.ndarray]) -> Path:
    """x * g0 * g1 * ... as a chain of Mul nodes named mul0, mul1, ..."""
    nodes, inits, x = [], [], "x"
    for i, g in enumerate(gains):
        inits.append(numpy_helper.from_array(g.astype(np.float32), f"g{i}"))
        nodes.append(helper.make_node("Mul", [x, f"g{i}"], [f"m{i}"], name=f"mul{i}"))
        x = f"m{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 256])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_error_that_accumulates_is_not_blamed_on_one_node(tmp_path):
    rng = np.random.default_rng(3)
    ones = [np.ones((1, 256)) for _ in range(6)]
    noisy = [1 + 0.08 * rng.standard_normal((1, 256)) for _ in range(6)]  # each Mul adds ~0.3% deficit
    ref, cand = chain(tmp_path / "ref.onnx", ones), chain(tmp_path / "cand.onnx", noisy)
    feeds = {"x": rng.uniform(0.5, 1.5, (1, 256)).astype(np.float32)}

    found = first_divergence(ref, cand, feeds, {"min_cosine": 0.99})

    assert found["verdict"] == "accumulated", found
    assert found["node"] not in ("mul0", "mul1") and found["cosine"] < 0.99
    (upstream,) = found["inputs"]
    assert upstream["passed"] and 1 - upstream["cosine"] > 0.5 * (1 - found["cosine"])
    assert {g["node"] for g in found["growth"]} <= {f"mul{i}" for i in range(6)} and len(found["growth"]) == 3

    from buildsys.reports.collect import fmt_divergence

    text = fmt_divergence(found)
    assert text.startswith("no single node breaks the tolerance: the error accumulates")
    assert f"node {found['node']} (Mul)" in text and "the error grows most at: mul" in text


def input_quantized(fp32: Path, path: Path) -> Path:
    """The fp32 model with only its graph input quantized (uint8, scale 1/255): no layer touched."""
    model = onnx.load(fp32)
    model.graph.initializer.extend([numpy_helper.from_array(np.array(1 / 255, np.float32), "input_scale"),
                                    numpy_helper.from_array(np.array(0, np.uint8), "input_zero_point")])
    qdq = [helper.make_node("QuantizeLinear", ["input", "input_scale", "input_zero_point"], ["input_q"],
                            name="input_QuantizeLinear"),
           helper.make_node("DequantizeLinear", ["input_q", "input_scale", "input_zero_point"], ["input_dq"],
                            name="input_DequantizeLinear")]
    for n in model.graph.node:
        n.input[:] = ["input_dq" if i == "input" else i for i in n.input]
    nodes = qdq + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, path)
    return path


def test_the_inputs_quantization_is_compared_and_named(models, feeds, tmp_path):
    candidate = input_quantized(models["fp32"], tmp_path / "input-q.onnx")

    found = first_divergence(models["fp32"], candidate, feeds, {"min_cosine": 0.999999})

    assert found["verdict"] == "node" and found["node"] == "input_DequantizeLinear", found
    assert found["reference_output"] == "input" and found["cosine"] < 0.999999
    assert found["quantized_input"] == "input" and found["readers"] == ["conv0"]
    assert found["remedy"] == ("keep input input in fp32 with quantization: {exclude: [conv0]}, or loosen the "
                               f"tolerance to what quantizing it costs (cosine {found['cosine']:.7f})")
    assert found["inputs"] == [{"tensor": "input", "node": "(graph input)", "reference_output": "input",
                                "cosine": 1.0, "max_abs": 0.0, "passed": True}]
    # within a tolerance the input's quantization keeps, nothing diverges
    assert first_divergence(models["fp32"], candidate, feeds, {"min_cosine": 0.9999})["verdict"] == "none"


# -- diagnose: which failing sample is localised ---------------------------------------------


def _parity_files(d: Path, feeds: list[np.ndarray], cosines: list[float | None], max_abs: list[float]):
    """A reference.npz holding one sample per feed, and a parity result whose rows have these figures."""
    import json

    arrays, manifest, rows = {}, [], []
    for i, (x, cos, err) in enumerate(zip(feeds, cosines, max_abs)):
        arrays[f"in{i}"], arrays[f"out{i}"] = x, np.zeros((x.shape[0], 5), np.float32)
        manifest.append({"point": "opt", "sample": i, "inputs": {"input": f"in{i}"}, "outputs": {"logits": f"out{i}"}})
        passed = cos is not None and cos >= 0.999
        rows.append({"point": "opt", "sample": i, "error": None,
                     "outputs": {"logits": {"passed": passed, "cosine": cos, "max_abs": err}}})
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(d / "reference.npz", **arrays)
    (d / "parity.json").write_text(json.dumps({"tolerance": {"min_cosine": 0.999}, "results": rows}))
    return d / "parity.json", d / "reference.npz"


def _samples(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.random((2, 3, 16, 16), dtype=np.float32) * (i + 1) for i in range(n)]


@pytest.mark.parametrize(("cosines", "max_abs", "worst"), [
    ([0.99, 0.5, 0.9, 1.0], [0.1, 0.1, 0.1, 0.0], 1),    # the lowest cosine, neither first nor last failing
    ([0.9, 0.9, 0.95, 1.0], [0.1, 0.3, 0.2, 0.0], 1),    # equal cosines: the larger error
    ([0.9, None, 0.5, 1.0], [0.1, 0.2, 0.1, 0.0], 1),    # no cosine (NaN in the output) is the worst
    ([0.9, 0.9, 1.0], [None, 0.3, 0.0], 1),              # equal cosines, no error figure: the one with an error
    ([0.9, float("nan"), 0.5], [0.1, 0.1, 0.1], 1),      # a NaN cosine is the worst
    ([-1.0, None, 1.0], [0.5, 0.1, 0.0], 0),             # an opposite output ranks with NaN: the larger error
])
def test_diagnose_localises_the_worst_failing_sample_on_its_own_inputs(models, tmp_path, cosines, max_abs, worst):
    from buildsys.steps.diverge import diagnose

    broken = edited(models["fp32"], tmp_path / "broken.onnx", "conv2.weight", lambda w: w * -3.0)
    feeds = _samples(len(cosines))
    result, reference = _parity_files(tmp_path, feeds, cosines, max_abs)
    found = diagnose(models["fp32"], broken, result, reference, threads=1)
    assert (found["point"], found["sample"], found["check_output"]) == ("opt", worst, "logits")
    alone = first_divergence(models["fp32"], broken, {"input": feeds[worst]}, {"min_cosine": 0.999}, threads=1)
    assert found == {**alone, "point": "opt", "sample": worst, "check_output": "logits"}
    others = [first_divergence(models["fp32"], broken, {"input": x}, {"min_cosine": 0.999}, threads=1)
              for i, x in enumerate(feeds) if i != worst]
    assert all(o["cosine"] != found["cosine"] for o in others)  # the samples tell apart


def test_diagnose_says_why_it_cannot_localise(models, tmp_path):
    from buildsys.steps.diverge import diagnose

    result, reference = _parity_files(tmp_path, _samples(2), [1.0, 1.0], [0.0, 0.0])
    assert diagnose(models["fp32"], models["fp32"], result, reference)["error"].startswith(
        "no output failed its tolerance")
    assert diagnose(models["fp32"], models["fp32"], tmp_path / "none.json", reference)["error"].startswith(
        "cannot read the parity result or the reference")
    import json

    doc = json.loads(result.read_text())
    doc["results"][0]["outputs"]["logits"].update(passed=False, cosine=0.2)
    doc["results"][0]["sample"] = 7
    result.write_text(json.dumps(doc))
    assert diagnose(models["fp32"], models["fp32"], result, reference) == {
        "error": "the reference holds no sample opt.7"}


def test_diagnose_skips_rows_that_failed_to_run_and_says_when_nothing_is_left(models, tmp_path):
    import json

    from buildsys.steps.diverge import diagnose

    result, reference = _parity_files(tmp_path, _samples(2), [0.2, 1.0], [0.5, 0.0])
    doc = json.loads(result.read_text())
    doc["results"][0]["error"] = "the session could not run"
    result.write_text(json.dumps(doc))
    nothing = {"error": "no output failed its tolerance (the check failed to run at some point); nothing to localise"}
    assert diagnose(models["fp32"], models["fp32"], result, reference) == nothing
    result.write_text(json.dumps({"tolerance": {"min_cosine": 0.999}}))  # no results at all
    assert diagnose(models["fp32"], models["fp32"], result, reference) == nothing


def test_diagnose_reports_a_model_it_cannot_load(models, tmp_path):
    from buildsys.steps.diverge import diagnose

    result, reference = _parity_files(tmp_path, _samples(2), [0.2, 1.0], [0.5, 0.0])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    found = diagnose(models["fp32"], junk, result, reference)
    assert list(found) == ["error"] and found["error"].startswith("cannot load the models to localise the divergence: ")


# -- small hand-made graphs: what is compared, and how the answer is put together ----------------------


def graph_model(path: Path, nodes, inits: dict[str, np.ndarray], inputs: dict[str, list], outputs: dict[str, list],
                elem: dict[str, int] | None = None) -> Path:
    elem = elem or {}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, elem.get(n, TensorProto.FLOAT), s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, elem.get(n, TensorProto.FLOAT), s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def scored(path: Path, gain, weight) -> Path:
    """x (2, 4) * gain -> h (2, 4) @ weight -> logits (2, 3): a feature tensor, then class scores."""
    nodes = [helper.make_node("Mul", ["x", "gain"], ["h"], name="scale"),
             helper.make_node("MatMul", ["h", "w"], ["logits"], name="fc")]
    return graph_model(path, nodes, {"gain": gain, "w": weight}, {"x": [2, 4]}, {"logits": [2, 3]})


W = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
X = {"x": np.array([[1.0, 1.001, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]], np.float32)}


def test_top1_judges_only_tensors_shaped_like_an_output(tmp_path):
    ref = scored(tmp_path / "ref.onnx", np.ones((1, 4)), W)
    w = W.copy()
    w[3, 2] = 3.0  # the second row's class flips
    cand = scored(tmp_path / "cand.onnx", [[1.002, 1.0, 1.0, 1.0]], w)  # h's first row: another arg-max

    found = first_divergence(ref, cand, X, {"min_top1": 1.0})

    assert (found["verdict"], found["node"], found["op_type"], found["output"]) == ("node", "fc", "MatMul", "logits")
    assert found["top1"] == 0.5 and found["failures"] == ["top-1 agreement 0.5000 < 1.0"]
    assert found["compared"] == 2 and found["shape"] == [2, 3]
    (h,) = found["inputs"]  # the weight is an initializer: nothing to compare it with
    assert h == {"tensor": "h", "node": "scale", "reference_output": "h", "cosine": pytest.approx(1.0, abs=1e-6),
                 "max_abs": pytest.approx(0.002, rel=1e-3), "passed": True}
    # h breaks a cosine tight enough: it is named, and it has no top-1 figure (a feature map's arg-max means nothing)
    found = first_divergence(ref, cand, X, {"min_top1": 1.0, "min_cosine": 1 - 1e-8})
    assert (found["node"], found["output"], found["top1"]) == ("scale", "h", None)
    assert found["inputs"] == [{"tensor": "x", "node": "(graph input)", "reference_output": "x", "cosine": 1.0,
                                "max_abs": 0.0, "passed": True}]


def test_integer_tensors_are_not_compared(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "gain"], ["m"], name="mul"),
             helper.make_node("Cast", ["m"], ["c"], name="to_int", to=TensorProto.INT32),
             helper.make_node("Cast", ["c"], ["y"], name="to_float", to=TensorProto.FLOAT)]
    model = graph_model(tmp_path / "m.onnx", nodes, {"gain": [[2.0, 3.0]]}, {"x": [1, 2]}, {"y": [1, 2]})
    found = first_divergence(model, model, {"x": np.array([[1.5, 2.5]], np.float32)}, {"atol": 0.0, "rtol": 0.0})
    assert found == {"verdict": "none", "tolerance": {"atol": 0.0, "rtol": 0.0, "min_cosine": None, "min_top1": None},
                     "compared": 2, "growth": []}


def test_unnamed_nodes_out_of_file_order_are_walked_in_topological_order(tmp_path):
    def muls(path, g1, named=True):
        nodes = [helper.make_node("Mul", ["x", "g0"], ["a"], name="mul0" if named else ""),
                 helper.make_node("Mul", ["a", "g1"], ["b"], name="mul1" if named else "")]
        return graph_model(path, nodes[::-1] if not named else nodes, {"g0": [[2.0, 2.0]], "g1": g1},
                           {"x": [1, 2]}, {"b": [1, 2]})

    ref = muls(tmp_path / "ref.onnx", [[1.0, 1.0]])
    cand = muls(tmp_path / "cand.onnx", [[1.0, 1.5]], named=False)
    found = first_divergence(ref, cand, {"x": np.array([[1.0, 1.0]], np.float32)}, {"atol": 0.1})
    assert (found["verdict"], found["node"], found["output"], found["compared"]) == ("node", "<unnamed Mul>", "b", 2)
    assert found["max_abs"] == 1.0 and found["mismatched"] == 1 and found["max_rel"] == 0.5
    assert [i["node"] for i in found["inputs"]] == ["<unnamed Mul>"] and found["inputs"][0]["tensor"] == "a"


def test_growth_lists_the_three_nodes_that_add_the_most_deficit(tmp_path):
    from buildsys.core.numerics import cosine

    rng = np.random.default_rng(7)
    noise = [0.01, 0.05, 0.0, 0.02, 0.03]  # mul2 adds nothing
    gains = [(1 + s * rng.standard_normal((1, 256))).astype(np.float32) for s in noise]
    ref = chain(tmp_path / "ref.onnx", [np.ones((1, 256))] * len(noise))
    cand = chain(tmp_path / "cand.onnx", gains)
    x = rng.uniform(0.5, 1.5, (1, 256)).astype(np.float32)

    found = first_divergence(ref, cand, {"x": x}, {"min_cosine": 0.0})

    got, deficits = x, []
    for g in gains:
        got = got * g
        deficits.append(1 - cosine(x.astype(np.float64), got.astype(np.float64)))
    growth = {f"mul{i}": d - (deficits[i - 1] if i else 0.0) for i, d in enumerate(deficits)}
    top = sorted(growth, key=lambda k: -growth[k])[:3]
    assert found["verdict"] == "none" and found["compared"] == 5
    assert [g["node"] for g in found["growth"]] == top == ["mul1", "mul4", "mul3"]
    assert [g["growth"] for g in found["growth"]] == pytest.approx([growth[k] for k in top], rel=1e-6)
    assert found["growth"][0] == {"node": "mul1", "op_type": "Mul", "output": "m1",
                                  "cosine": pytest.approx(1 - deficits[1], abs=1e-12),
                                  "growth": pytest.approx(growth["mul1"], rel=1e-6)}


def two_muls(path: Path, g0, g1, names=("mul0", "mul1"), ops=("Mul", "Mul"), a="a") -> Path:
    nodes = [helper.make_node(ops[0], ["x", "g0"], [a], name=names[0]),
             helper.make_node(ops[1], [a, "g1"], ["b"], name=names[1])]
    return graph_model(path, nodes, {"g0": g0, "g1": g1}, {"x": [1, 2]}, {"b": [1, 2]})


ONES = [[1.0, 1.0]]
X2 = {"x": np.array([[2.0, 2.0]], np.float32)}


def test_a_renamed_tensor_stands_for_its_node_s_output_in_the_reference(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    # the producer has a twin in the reference (same name and operator); the reader has none
    cand = two_muls(tmp_path / "cand.onnx", [[1.0, 1.5]], ONES, names=("mul0", "other"), a="renamed")
    found = first_divergence(ref, cand, X2, {"atol": 0.1})
    assert (found["node"], found["output"], found["reference_output"]) == ("mul0", "renamed", "a")


def test_a_tensor_of_the_same_name_from_another_operator_is_not_its_counterpart(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", [[2.0, 2.0]], ONES)
    cand = two_muls(tmp_path / "cand.onnx", [[2.0, 2.0]], ONES, names=("add0", "other"), ops=("Add", "Mul"))
    found = first_divergence(ref, cand, X2, {"atol": 0.0})  # 2 + 2 == 2 * 2: they agree, but are not the same
    assert found["verdict"] == "none" and found["compared"] == 1


def test_tensors_of_another_shape_are_not_compared(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    cand = two_muls(tmp_path / "cand.onnx", [[1.0, 1.0], [1.0, 1.0]], ONES)  # broadcast to (2, 2)
    with pytest.raises(DivergenceError) as err:
        first_divergence(ref, cand, X2, {"atol": 0.1})
    assert err.value.message == ("no tensor of the candidate could be matched with one of the reference "
                                 "(by name, through its Q/DQ pair, or by node name and position)")


def test_an_initializer_listed_among_the_graph_inputs_is_not_fed_nor_called_an_input(tmp_path):
    ref = scored(tmp_path / "ref.onnx", np.ones((1, 4)), W)
    w = W.copy()
    w[3, 2] = 3.0
    cand = scored(tmp_path / "cand.onnx", np.ones((1, 4)), w)
    model = onnx.load(cand)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3]))  # as IR < 4 wrote it
    onnx.save(model, cand)
    found = first_divergence(ref, cand, X, {"min_top1": 1.0})
    assert found["node"] == "fc" and [i["tensor"] for i in found["inputs"]] == ["h"]


def test_a_nan_is_the_whole_deficit(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    cand = two_muls(tmp_path / "cand.onnx", ONES, [[1.0, np.nan]])
    found = first_divergence(ref, cand, X2, {"min_cosine": 0.99})
    assert (found["verdict"], found["node"], found["nan"], found["inf"]) == ("node", "mul1", 1, 0)
    assert found["failures"][0] == "1 NaN and 0 Inf values"
    assert [(g["node"], g["growth"]) for g in found["growth"]] == [("mul1", pytest.approx(1.0))]


def test_a_graph_with_a_cycle_is_reported():
    from buildsys.steps.diverge import _topological

    graph = helper.make_graph([helper.make_node("Mul", ["x", "b"], ["a"], name="m0"),
                               helper.make_node("Mul", ["a", "a"], ["b"], name="m1")], "loop",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    with pytest.raises(DivergenceError) as err:
        _topological(graph)
    assert err.value.message.startswith("the candidate graph has a cycle: [")
    del graph.node[1]
    graph.node[0].input[:] = ["x", "a"]  # a node that reads its own output
    with pytest.raises(DivergenceError, match="the candidate graph has a cycle"):
        _topological(graph)


def test_a_reference_tensor_shape_inference_leaves_untyped_is_still_read(tmp_path):
    import math

    # com.microsoft Gelu: ONNX Runtime runs it, ONNX shape inference does not know it and types nothing after it
    ref = tmp_path / "ref.onnx"
    nodes = [helper.make_node("Gelu", ["x"], ["a"], name="gelu", domain="com.microsoft"),
             helper.make_node("Mul", ["a", "g"], ["b"], name="mul1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(np.ones((1, 2), np.float32), "g")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, ref)
    cand = two_muls(tmp_path / "cand.onnx", ONES, ONES, names=("identity", "mul1"))  # a = x, not Gelu(x)
    x = np.array([[1.0, -1.0]], np.float32)
    found = first_divergence(ref, cand, {"x": x}, {"atol": 1e-3})
    gelu = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x[0]]
    assert (found["node"], found["output"], found["reference_output"]) == ("identity", "a", "a")
    assert found["max_abs"] == pytest.approx(max(abs(v - g) for v, g in zip(x[0], gelu)), rel=1e-4)


def qdq_chain(path: Path, pairs: int, scale: float = 0.01, cast: bool = False) -> Path:
    """x * g0 -> a -> `pairs` QuantizeLinear/DequantizeLinear pairs (renamed, unnamed twins) -> * g1 -> b."""
    nodes = [helper.make_node("Mul", ["x", "g0"], ["a"], name="mul0")]
    t = "a"
    for k in range(pairs):
        nodes += [helper.make_node("QuantizeLinear", [t, "s", "zp"], [f"q{k}"], name=f"quant{k}"),
                  helper.make_node("DequantizeLinear", [f"q{k}", "s", "zp"], [f"dq{k}"], name=f"dequant{k}")]
        t = f"dq{k}"
    nodes.append(helper.make_node("Mul", [t, "g1"], ["b"], name="scale_out"))
    model = onnx.load(graph_model(path, nodes, {"g0": ONES, "g1": ONES, "s": scale}, {"x": [1, 2]}, {"b": [1, 2]}))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "zp"))
    onnx.save(model, path)
    return path


def test_a_dequantized_tensor_stands_for_the_tensor_its_quantizer_took(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)  # mul0 -> a, mul1 -> b
    cand = qdq_chain(tmp_path / "cand.onnx", 1, scale=0.5)  # 2.2 quantized by halves: 2.0
    found = first_divergence(ref, cand, {"x": np.array([[2.2, 1.0]], np.float32)}, {"atol": 0.1})
    # its reader (scale_out) has no twin in the reference, nor has the DequantizeLinear: the pair says what it is
    assert (found["node"], found["op_type"], found["output"], found["reference_output"]) == (
        "dequant0", "DequantizeLinear", "dq0", "a")
    assert found["compared"] == 2 and found["max_abs"] == pytest.approx(0.2, rel=1e-5)
    assert [i["tensor"] for i in found["inputs"]] == ["a"]  # the float the quantizer took, not its int8 output
    assert "quantized_input" not in found  # a layer's output, not a graph input


@pytest.mark.parametrize(("pairs", "compared"), [(5, 7), (6, 7)])
def test_up_to_five_quantizer_pairs_are_traced_back(tmp_path, pairs, compared):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    cand = qdq_chain(tmp_path / "cand.onnx", pairs)
    found = first_divergence(ref, cand, {"x": np.array([[0.5, 1.0]], np.float32)}, {"atol": 0.1})
    # a, the DequantizeLinear outputs within five pairs of a, and b: the sixth pair is not traced
    assert found["verdict"] == "none" and found["compared"] == compared


def test_a_node_reading_a_quantized_tensor_directly_is_judged_on_that_tensor(tmp_path):
    def cast_model(path: Path, quantized: bool) -> Path:
        nodes = ([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="quant")] if quantized else [])
        nodes.append(helper.make_node("Cast", ["xq" if quantized else "x"], ["c"], name="cast", to=TensorProto.FLOAT))
        model = onnx.load(graph_model(path, nodes, {"s": 0.5}, {"x": [1, 2]}, {"c": [1, 2]}))
        model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "zp"))
        onnx.save(model, path)
        return path

    ref, cand = cast_model(tmp_path / "ref.onnx", False), cast_model(tmp_path / "cand.onnx", True)
    found = first_divergence(ref, cand, {"x": np.array([[1.0, 2.0]], np.float32)}, {"atol": 0.1})
    assert (found["node"], found["output"], found["reference_output"], found["max_abs"]) == ("cast", "c", "c", 2.0)
    assert found["inputs"] == []  # its input is the int8 tensor, which has no fp32 counterpart


def test_every_reader_of_every_quantized_copy_of_an_input_is_named(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="quant_x"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xdq"], name="dequant_x"),
             helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq2"], name="quant_x2"),
             helper.make_node("DequantizeLinear", ["xq2", "s", "zp"], ["xdq2"], name="dequant_x2"),
             helper.make_node("Mul", ["xdq", "g0"], ["a"], name="mul0"),
             helper.make_node("Mul", ["a", "g1"], ["b"], name="mul1"),
             helper.make_node("Relu", ["xdq2"], ["side"], name="side_relu"),
             helper.make_node("QuantizeLinear", ["xdq", "s", "zp"], ["again"], name="requant")]
    cand = graph_model(tmp_path / "cand.onnx", nodes, {"g0": ONES, "g1": ONES, "s": 0.5}, {"x": [1, 2]},
                       {"b": [1, 2]})
    model = onnx.load(cand)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "zp"))
    onnx.save(model, cand)
    found = first_divergence(ref, cand, {"x": np.array([[2.2, 1.0]], np.float32)}, {"atol": 0.1})
    assert (found["node"], found["quantized_input"], found["readers"]) == ("dequant_x", "x", ["mul0", "side_relu"])
    assert found["remedy"].startswith("keep input x in fp32 with quantization: {exclude: [mul0, side_relu]}, ")


def test_a_node_s_later_output_is_compared_when_its_first_has_no_counterpart(tmp_path):
    def split(path: Path, first: str, name: str) -> Path:
        nodes = [helper.make_node("Split", ["x"], [first, "s1"], name=name, axis=1)]
        return graph_model(path, nodes, {}, {"x": [1, 4]}, {first: [1, 2], "s1": [1, 2]})

    ref, cand = split(tmp_path / "ref.onnx", "s0", "split"), split(tmp_path / "cand.onnx", "other", "split_c")
    found = first_divergence(ref, cand, {"x": np.arange(4, dtype=np.float32)[None]}, {"atol": 0.0})
    assert found["verdict"] == "none" and found["compared"] == 1


def test_a_dequantized_tensor_that_keeps_the_reference_s_name_is_its_counterpart(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    nodes = [helper.make_node("Mul", ["x", "g0"], ["pre"], name="pre_mul"),
             helper.make_node("QuantizeLinear", ["pre", "s", "zp"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["a"], name="dequant"),
             helper.make_node("Mul", ["a", "g1"], ["b"], name="scale_out")]
    cand = graph_model(tmp_path / "cand.onnx", nodes, {"g0": ONES, "g1": ONES, "s": 0.5}, {"x": [1, 2]}, {"b": [1, 2]})
    model = onnx.load(cand)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "zp"))
    onnx.save(model, cand)
    found = first_divergence(ref, cand, {"x": np.array([[2.2, 1.0]], np.float32)}, {"atol": 0.1})
    assert (found["node"], found["output"], found["reference_output"], found["compared"]) == ("dequant", "a", "a", 1)


def test_an_input_the_reference_node_does_not_have_is_not_matched_through_it(tmp_path):
    ref = graph_model(tmp_path / "ref.onnx", [helper.make_node("Clip", ["x"], ["y"], name="clip")], {},
                      {"x": [1, 2]}, {"y": [1, 2]})
    nodes = [helper.make_node("ReduceMin", ["x"], ["lo"], name="lowest", keepdims=0),
             helper.make_node("Clip", ["x", "lo"], ["y"], name="clip")]
    cand = graph_model(tmp_path / "cand.onnx", nodes, {}, {"x": [1, 2]}, {"y": [1, 2]})
    found = first_divergence(ref, cand, {"x": np.array([[1.0, 2.0]], np.float32)}, {"atol": 0.0})
    assert found["verdict"] == "none" and found["compared"] == 1  # y; lo has no counterpart


def test_a_candidate_onnx_runtime_cannot_run_is_reported_on_one_line_and_at_most_500_characters(tmp_path):
    ref = graph_model(tmp_path / "ref.onnx", [helper.make_node("Mul", ["x", "gain"], ["y"], name="mul")],
                      {"gain": [[2.0, 3.0]]}, {"x": [1, 2]}, {"y": [1, 2]})
    long = "reshape_" + "x" * 600
    nodes = [helper.make_node("Mul", ["x", "gain"], ["m"], name="mul"),
             helper.make_node("Reshape", ["m", "shape"], ["y"], name=long)]
    cand = graph_model(tmp_path / "cand.onnx", nodes, {"gain": [[2.0, 3.0]]}, {"x": [1, 2]}, {"y": [1, 2]})
    model = onnx.load(cand)
    model.graph.initializer.append(numpy_helper.from_array(np.array([3, 3], np.int64), "shape"))
    onnx.save(model, cand)
    with pytest.raises(DivergenceError) as err:
        first_divergence(ref, cand, {"x": np.ones((1, 2), np.float32)}, {"atol": 0.0})
    prefix = "ONNX Runtime cannot run the candidate model with its intermediate tensors exposed: "
    detail = err.value.message[len(prefix):]
    assert err.value.message.startswith(prefix) and len(detail) == 500
    assert "reshape_xxx" in detail and "\n" not in detail and "  " not in detail and "XX" not in detail


def test_a_node_s_later_output_is_compared_when_an_earlier_one_has_another_shape(tmp_path):
    def split(path: Path, sizes: list[int]) -> Path:
        nodes = [helper.make_node("Split", ["x", "sizes"], ["s0", "s1", "s2"], name="split", axis=1)]
        model = onnx.load(graph_model(path, nodes, {}, {"x": [1, 5]}, {f"s{i}": [1, n] for i, n in enumerate(sizes)}))
        model.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        onnx.save(model, path)
        return path

    ref, cand = split(tmp_path / "ref.onnx", [2, 1, 2]), split(tmp_path / "cand.onnx", [1, 2, 2])
    found = first_divergence(ref, cand, {"x": np.arange(5, dtype=np.float32)[None]}, {"atol": 0.0})
    assert found["verdict"] == "none" and found["compared"] == 1  # s2, the last two values in both


def test_a_single_value_out_of_tolerance_after_a_noisy_input_is_named_not_accumulated(tmp_path):
    # one value has no direction: its cosine is 1 and its deficit 0, whatever its inputs carried
    rng = np.random.default_rng(11)

    def summed(path: Path, gain) -> Path:
        nodes = [helper.make_node("Mul", ["x", "g"], ["a"], name="mul"),
                 helper.make_node("ReduceSum", ["a"], ["s"], name="sum", keepdims=1)]
        return graph_model(path, nodes, {"g": gain}, {"x": [1, 256]}, {"s": [1, 1]})

    ref = summed(tmp_path / "ref.onnx", np.ones((1, 256)))
    cand = summed(tmp_path / "cand.onnx", 1 + 0.004 * rng.standard_normal((1, 256)))
    found = first_divergence(ref, cand, {"x": np.ones((1, 256), np.float32)}, {"atol": 0.02})
    (a,) = found["inputs"]
    assert a["passed"] and a["cosine"] < 1.0  # the input carried some deficit, within tolerance
    assert (found["verdict"], found["node"]) == ("node", "sum") and found["cosine"] == pytest.approx(1.0)


def test_a_weight_quantized_under_another_name_stands_for_the_weight_its_reader_takes(tmp_path):
    ref = two_muls(tmp_path / "ref.onnx", ONES, ONES)
    nodes = [helper.make_node("Mul", ["x", "g0"], ["a"], name="mul0"),
             helper.make_node("QuantizeLinear", ["g1_renamed", "s", "zp"], ["g1_q"], name="g1_quant"),
             helper.make_node("DequantizeLinear", ["g1_q", "s", "zp"], ["g1_dq"], name="g1_dequant"),
             helper.make_node("Mul", ["a", "g1_dq"], ["b"], name="mul1")]
    cand = graph_model(tmp_path / "cand.onnx", nodes, {"g0": ONES, "g1_renamed": ONES, "s": 0.5}, {"x": [1, 2]},
                       {"b": [1, 2]})
    model = onnx.load(cand)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "zp"))
    onnx.save(model, cand)
    found = first_divergence(ref, cand, X2, {"atol": 0.0})
    assert found["verdict"] == "none" and found["compared"] == 3  # a, g1_dq (as the reference's g1), b
