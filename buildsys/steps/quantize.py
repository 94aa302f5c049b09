"""quantize[flavour]: the explicitly quantized (Q/DQ) ONNX model for one backend, from stored ranges.

Calibration ran once (`calibrate`, which wrote `calib.json`); each flavour turns
those ranges into its own Q/DQ model with `onnxruntime.quantization.quantize_static`,
handed the ranges through its calibration-cache file (`calibration_cache_path`,
written with `save_tensors_data`) so that the model never runs again here.

The flavours differ in what their runtime executes fast or at all:

- `onnxruntime` (CPU): unsigned (QUInt8, asymmetric) activations with signed
  (QInt8) weights, the pair ONNX Runtime's x86 integer kernels are fast with
  (ResNet-18 on a VNNI CPU, 2 threads: about 3x fp32 at batch 1, 3.5x at batch 8), where signed activations gain nothing over
  fp32. How many bits the weights keep follows the CPU class (`quantization.cpu`,
  `auto` being the building machine's), which is part of the step's key:
  - `avx2`: 7 bits (`reduce_range`). AVX2 kernels sum pairs of u8 x s8 products in
    16 bits (`vpmaddubsw`), which saturates with 8-bit weights: on EfficientNet-Lite0
    8-bit weights give a median cosine to fp32 of 0.94 in those kernels where the
    model's own Q/DQ arithmetic gives 0.99.
  - `vnni`: 8 bits, for CPUs with AVX-512 VNNI, AVX-VNNI or AMX, whose `vpdpbusd`
    accumulates u8 x s8 products in 32 bits and never saturates. On EfficientNet-Lite0
    (48 held-out views of photographs, benchmarks/bench_int8.py) 8-bit per-channel
    weights raise the median cosine to fp32 from 0.965 to 0.990 and top-1 agreement
    where fp32 is decided from 85% to 96%, at the same speed.
  A `vnni` model still runs on an AVX2-only CPU, with the saturation above: the
  class is in the report ("int8 for VNNI CPUs") so that nobody ships it there.
- `tensorrt`: signed, symmetric int8 activations and weights (zero point 0), the
  only int8 TensorRT's explicit quantization accepts; biases stay float (TensorRT
  fuses them into the convolution and has no int32 dequantization).

A QAT model (`calib.json` says `qat`) already carries its Q/DQ nodes and is copied
unchanged.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from buildsys.core.errors import StepError
from buildsys.core.flavours import CPU_CLASSES, CPU_LABELS, FLAVOURS, Flavour, flavour_for  # noqa: F401 (the steps' names)
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import QuantizeParams


class QuantizeQdq(Step[QuantizeParams]):
    KIND = "quantize"
    PARAMS = QuantizeParams
    VERSION = 2
    TOOLS = ("onnx", "onnxruntime", "numpy")
    RESIDENT = True

    def run(self) -> StepResult:
        from buildsys.steps.calibrate import FORMAT
        from buildsys.steps.check_onnx import check_model

        p = self.params
        q = p.quantization
        flavour = flavour_for(p.flavour, q.cpu)
        exclude = q.exclude
        model = self.ctx.inputs["model"]
        out = self.ctx.output("model")
        calib = json.loads(self.ctx.inputs["ranges"].read_text())
        if calib.get("format") != FORMAT:
            raise StepError(f"{self.ctx.inputs['ranges'].name} has format {calib.get('format')}, expected {FORMAT}")
        if calib["qat"]:
            written = _copy_model(model, out)
            summary = (f"quantization-aware trained (Q/DQ from the model): its {calib['qdq_nodes']} "
                       "QuantizeLinear/DequantizeLinear nodes are kept, the model is copied unchanged")
            return StepResult(outputs={"model": written}, summary=summary)

        with tempfile.TemporaryDirectory(dir=self.ctx.scratch) as tmp:
            written = quantize(model, calib, flavour, p.calibration.per_channel, out, Path(tmp), exclude)
        check_model(out, self.ctx.scratch)
        counts = _q_dq_counts(out)
        bits = "7-bit " if flavour.reduce_range else ""
        kinds = f"{flavour.activations} activations{' (symmetric)' if flavour.symmetric_activations else ''}, " \
                f"{bits}{flavour.weights} {'per-channel' if p.calibration.per_channel else 'per-tensor'} weights"
        label = CPU_LABELS[q.cpu] if p.flavour == "onnxruntime" else p.flavour
        summary = (f"{label}: {counts['QuantizeLinear']} QuantizeLinear, {counts['DequantizeLinear']} "
                   f"DequantizeLinear ({kinds}) from {calib['method']} ranges")
        if exclude:
            summary += f"; {len(exclude)} {'node' if len(exclude) == 1 else 'nodes'} kept in fp32"
        if calib.get("random_data"):
            summary += " of random data"
        return StepResult(outputs={"model": written}, summary=summary)


def quantize(model: Path, calib: dict, flavour: Flavour, per_channel: bool, out: Path, tmp: Path,
             exclude: tuple[str, ...] = ()) -> list[str]:
    """Write the Q/DQ model to `out` (and its external data beside it); return the files written.

    The nodes named in `exclude` stay in fp32: they read fp32 tensors (see
    `float_inputs`), not the Q/DQ pairs the quantizer leaves on their inputs.
    """
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    from buildsys.steps.calibrate import METHODS, has_external_data, stage_model
    from buildsys.steps.export import EXTERNAL_DATA_BYTES

    method = getattr(CalibrationMethod, METHODS[calib["method"]])
    ranges = TensorsData(method, {name: TensorData(lowest=np.float32(r["min"]), highest=np.float32(r["max"]))
                                  for name, r in calib["tensors"].items()})
    cache = tmp / "ranges.json"
    save_tensors_data(ranges, cache)
    staged = stage_model(model, tmp)
    _check_exclude(staged, exclude)
    external = has_external_data(staged) or staged.stat().st_size > EXTERNAL_DATA_BYTES
    options = {
        "ActivationSymmetric": flavour.symmetric_activations,
        "WeightSymmetric": True,
        "QuantizeBias": flavour.quantize_bias,
    }
    # ORT's logged advice to run quant_pre_process is not followed: torch.onnx.export folds
    # BatchNorm and onnxsim folds constants, and pre-processing changed no node of the sample
    # models (measured); without it, calibrate and quantize read the very same graph, so
    # the tensor names in calib.json are the quantizer's.
    print("quantize_static: ranges from calib.json (the model is not run again)", flush=True)
    try:
        quantize_static(
            staged, out, calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            per_channel=per_channel, reduce_range=flavour.reduce_range,
            activation_type=getattr(QuantType, flavour.activations), weight_type=getattr(QuantType, flavour.weights),
            calibrate_method=method, calibration_cache_path=cache, use_external_data_format=external,
            nodes_to_exclude=list(exclude), extra_options=options,
        )
    except Exception as exc:
        raise StepError(f"ONNX Runtime's quantizer failed: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}") \
            from None
    if exclude or flavour.integer_pad:
        detached = onnx.load(str(out))
        if exclude:
            float_inputs(detached, exclude, onnx.load(str(staged)))
        if flavour.integer_pad:
            print(f"{integer_pads(detached)} Pad nodes run on the integers", flush=True)
        onnx.save(detached, str(out), save_as_external_data=external, all_tensors_to_one_file=True,
                  location=out.name + ".data")
    files = [out.name] + ([out.name + ".data"] if (out.parent / (out.name + ".data")).exists() else [])
    _check_ranges_matched(onnx.load(str(out), load_external_data=False), calib)
    return files


def float_inputs(model, names, fp32) -> None:
    """Make the nodes `names` of a Q/DQ model read fp32 tensors, in place, and drop the Q/DQ left unused.

    An activation fed through QuantizeLinear -> DequantizeLinear is read before the
    QuantizeLinear instead, and a dequantized weight is replaced by its initializer in
    `fp32` (the model before quantization). ONNX Runtime's optimizer quantizes the
    float weights of a Conv/Gemm whose input comes from a DequantizeLinear (its
    weight/bias quantization pass), so an excluded node must not read one: the
    quantizer's own `nodes_to_exclude` leaves such inputs, and with them the node
    ran in int8 all the same (measured: cosine 0.93 instead of 0.998).

    The quantizer also removes a Relu/Clip in front of a QuantizeLinear, whose clamp
    does its work. An fp32 reader of that tensor gets the activation back, as a copy
    of the fp32 model's node, so that it reads what the fp32 model computes.
    """
    import onnx

    producer = {o: n for n in model.graph.node for o in n.output}
    present = {n.name for n in model.graph.node}
    taken = {t.name for t in model.graph.initializer} | set(producer)
    weights = {t.name: t for t in fp32.graph.initializer}
    originals = {n.name: n for n in fp32.graph.node}
    fp32_producer = {o: n for n in fp32.graph.node for o in n.output}
    nodes, restored = list(model.graph.node), {}

    def fresh(name: str) -> str:
        while name in taken:
            name += "_fp32"
        taken.add(name)
        return name

    def initializer(name: str) -> str:
        copy = onnx.TensorProto()
        copy.CopyFrom(weights[name])
        copy.name = fresh(name)
        model.graph.initializer.append(copy)
        return copy.name

    for node in list(nodes):
        original = originals.get(node.name)
        if node.name not in names or original is None:
            continue
        for i, tensor in enumerate(node.input):
            dq = producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear" or i >= len(original.input):
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                if original.input[i] in weights:
                    node.input[i] = initializer(original.input[i])
                continue
            source = q.input[0]
            act = fp32_producer.get(original.input[i])
            if act is not None and act.op_type in ("Relu", "Clip") and act.name not in present:
                if source not in restored:
                    again = onnx.NodeProto()
                    again.CopyFrom(act)
                    again.name = fresh(act.name)
                    again.input[0] = source
                    for j in range(1, len(again.input)):  # Clip's min and max
                        if again.input[j] in weights:
                            again.input[j] = initializer(again.input[j])
                    again.output[0] = fresh(source + "_activated")
                    nodes.insert(nodes.index(node), again)
                    restored[source] = again.output[0]
                source = restored[source]
            node.input[i] = source
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_qdq(model)


def integer_pads(model) -> int:
    """Make each Pad that sits between a DequantizeLinear and a QuantizeLinear of the same scale and
    zero point pad the integers, in place; return how many.

    DequantizeLinear(x) -> Pad(constant 0) -> QuantizeLinear becomes Pad(x, constant = zero point):
    the same values (0.0 quantizes to the zero point exactly, and the other values come back
    unchanged), without the float round trip ONNX Runtime otherwise runs the Pad in.
    """
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}

    def same(a: str, b: str) -> bool:
        return a == b or (a in consts and b in consts and consts[a].shape == consts[b].shape
                          and consts[a].dtype == consts[b].dtype and bool((consts[a] == consts[b]).all()))

    done = 0
    for pad in list(model.graph.node):
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        dq = producer.get(pad.input[0]) if pad.op_type == "Pad" and pad.input else None
        after = consumers.get(pad.output[0], []) if dq is not None else []
        if dq is None or dq.op_type != "DequantizeLinear" or mode != b"constant" or len(after) != 1 \
                or after[0].op_type != "QuantizeLinear" or pad.output[0] in outputs:
            continue
        quant = after[0]
        value = pad.input[2] if len(pad.input) > 2 else ""
        if value and not (value in consts and not consts[value].any()):
            continue  # a non-zero constant need not be representable exactly
        scale, zero = (list(dq.input) + [""])[1:3]
        if not zero or len(quant.input) < 3 or not (same(scale, quant.input[1]) and same(zero, quant.input[2])) \
                or consts.get(zero) is None or consts[zero].size != 1:
            continue  # per-axis or implicit zero points: left as they are
        pad.input[0] = dq.input[0]
        while len(pad.input) < 3:
            pad.input.append("")
        pad.input[2] = zero
        pad.output[0] = quant.output[0]
        model.graph.node.remove(quant)
        done += 1
    _drop_unused_qdq(model)
    return done


def _drop_unused_qdq(model) -> None:
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for t in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(t)


def _check_exclude(model_path: Path, exclude: tuple[str, ...]) -> None:
    """Every name in quantization.exclude names a node of the model, or the step says which do not."""
    import difflib

    import onnx

    if not exclude:
        return
    names = [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node if n.name]
    unknown = [x for x in exclude if x not in set(names)]
    if unknown:
        near = difflib.get_close_matches(unknown[0], names, n=3)
        raise StepError(f"quantization.exclude names {len(unknown)} {'node' if len(unknown) == 1 else 'nodes'} "
                        f"the model does not have: {', '.join(map(repr, unknown[:5]))}", field="quantization.exclude",
                        hint=f"did you mean {', '.join(map(repr, near))}?" if near else
                        "use node names of the simplified model (out/<recipe>/model.sim.onnx), as fallback prints them")


def _copy_model(model: Path, out: Path) -> list[str]:
    from buildsys.steps.calibrate import has_external_data

    if not has_external_data(model):
        shutil.copyfile(model, out)
        return [out.name]
    import onnx

    # Re-saved rather than copied: the external data file is named after the output.
    onnx.save(onnx.load(str(model)), str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location=out.name + ".data")
    return [out.name, out.name + ".data"]


def _check_ranges_matched(model, calib: dict) -> None:
    """A Q/DQ model without any quantized activation means the ranges named other tensors."""
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    if calib["tensors"] and not quantized & set(calib["tensors"]):
        raise StepError("none of the calibrated tensors was quantized: calib.json does not describe this model",
                        hint="rebuild with the calibrate step (buildsys clean, then build)")


def _q_dq_counts(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
