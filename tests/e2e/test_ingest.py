"""Models that are not PyTorch factories: an existing ONNX file, a TensorFlow model."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import recipe_yaml


def onnx_recipe(path: str, opset: int = 18) -> str:
    """An existing ONNX file as the model, built for ONNX Runtime fp32 and int8."""
    return recipe_yaml(f"{{onnx: {path}}}", export=f"{{opset: {opset}}}", rest="""\
calibration: {data: {kind: normal, mean: 0.0, std: 1.0}, samples: 8}
targets:
  - {backend: onnxruntime, precision: fp32}
  - {backend: onnxruntime, precision: int8}
tolerances:
  int8: {min_cosine: 0.9}
""")


def write_onnx(path: Path, opset: int = 18, external: bool = False, batch: str | int = "batch",
               identity: bool = False) -> np.ndarray:
    """A two-layer MLP [batch, 4] -> [batch, 2] written with onnx.helper; returns its first weight."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w2, b2 = rng.normal(size=(8, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["scores"])]
    if identity:  # a no-op node for the simplifiers to remove
        nodes[2:3] = [helper.make_node("Relu", ["h1"], ["h2a"]), helper.make_node("Identity", ["h2a"], ["h2"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 2])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return w1


def test_onnx_file_builds_through_int8_and_its_digest_is_the_key(workspace):
    write_onnx(workspace.root / "models/mlp.onnx")
    workspace.write("recipes/mlp.yaml", onnx_recipe("models/mlp.onnx"))
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "mlp:export" not in r.states()
    assert {"mlp:check", "mlp:reference", "mlp:simplify", "mlp:parity[fp32]", "mlp:calibrate",
            "mlp:parity[int8]", "mlp:engine[onnxruntime-fp32]", "mlp:engine[onnxruntime-int8]"} <= set(r.ran())
    out = workspace.root / "out/mlp"
    assert (out / "model.onnx").read_bytes() == (workspace.root / "models/mlp.onnx").read_bytes()
    assert json.loads((out / "parity/fp32.json").read_text())["passed"] is True
    assert json.loads((out / "parity/int8.json").read_text())["passed"] is True

    assert workspace.build().ran() == []
    # new weights in the file: checked again, and everything that reads the model re-runs
    import onnx

    m = onnx.load(str(workspace.root / "models/mlp.onnx"))
    m.graph.initializer[1].float_data[:] = []
    m.graph.initializer[1].raw_data = np.ones(8, np.float32).tobytes()
    onnx.save(m, str(workspace.root / "models/mlp.onnx"))
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert {"mlp:check", "mlp:reference", "mlp:simplify"} <= set(r.ran())

    # bench times the artifacts; there is no PyTorch eager row to compare with
    r = workspace.run("bench", "mlp", "--no-build", "--threads", "1")
    assert r.code == 0, r.stderr
    rows = [line.split()[0] for line in r.stdout.splitlines()[2:]]
    assert "pytorch-eager" not in rows and {"onnxruntime-fp32", "onnxruntime-int8"} <= set(rows)
    # the "vs eager" column: n/a on every row (an artifact's name may hold spaces, so find it by its figures)
    assert all(re.search(r"\d \s+n/a\s", line) for line in r.stdout.splitlines()[2:]), r.stdout


def test_onnx_file_with_external_data(workspace):
    write_onnx(workspace.root / "models/mlp.onnx", external=True)
    workspace.write("recipes/mlp.yaml", onnx_recipe("models/mlp.onnx"))
    r = workspace.build()
    assert r.code == 0, r.stderr
    # every tensor is under 1 KiB: the check keeps them in the graph, as onnx and torch.onnx.export save them
    assert not (workspace.root / "out/mlp/model.onnx.data").exists()
    assert workspace.build().ran() == []
    # the external data is part of the key: changed weights re-run the check
    data = workspace.root / "models/weights.bin"
    data.write_bytes(bytes(len(data.read_bytes())))
    r = workspace.build()
    assert "mlp:check" in r.ran(), r.stdout


TORCH_EXPORT = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 256), nn.Linear(256, 2)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.out(h - h.mean(dim=-1, keepdim=True))  # a ReduceMean, whose axes are a constant


torch.manual_seed(0)
torch.onnx.export(Net().eval(), (torch.randn(4, 4),), "models/net.onnx", dynamo=True, opset_version=18,
                  input_names=["x"], output_names=["scores"],
                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},))
"""


def test_onnx_file_as_torch_onnx_export_writes_it_by_default(workspace):
    """torch.onnx.export(dynamo=True) writes the weights beside the graph in net.onnx.data by default."""
    import subprocess
    import sys

    import onnx

    (workspace.root / "models").mkdir()
    subprocess.run([sys.executable, "-c", TORCH_EXPORT], cwd=workspace.root, check=True, capture_output=True)
    data = workspace.root / "models/net.onnx.data"
    assert data.stat().st_size > 4096  # the exporter's own default: weights outside the graph
    recipe = onnx_recipe("models/net.onnx")
    workspace.write("recipes/net.yaml", recipe)
    # and built without onnxsim, so that quantize and the engines read the model with its data file
    workspace.write("recipes/raw.yaml", recipe + "simplify: false\n")
    r = workspace.build()
    assert r.code == 0, r.stdout + r.stderr
    steps = {"check", "reference", "simplify", "calibrate", "quantize[onnxruntime]", "parity[fp32]", "parity[int8]",
             "engine[onnxruntime-fp32]", "engine[onnxruntime-int8]"}
    assert {f"net:{s}" for s in steps} | {f"raw:{s}" for s in steps - {"simplify"}} == set(r.ran())
    out = workspace.root / "out/raw"
    weights = {t.name for t in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.initializer
               if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {"fc.weight", "out.weight"} <= weights and (out / "model.onnx.data").is_file()
    assert (out / "model.int8.onnx.data").is_file()
    assert (out / "engines/onnxruntime-fp32.ort").is_file() and (out / "engines/onnxruntime-int8.ort").is_file()
    for name in ("net", "raw"):
        for precision in ("fp32", "int8"):
            assert json.loads((workspace.root / f"out/{name}/parity/{precision}.json").read_text())["passed"]

    assert workspace.build().ran() == []
    # the data's content is in the keys: new weights re-run the check and what reads the model
    weights = bytearray(data.read_bytes())
    weights[:4] = np.float32(3.0).tobytes()
    data.write_bytes(bytes(weights))
    r = workspace.build()
    assert r.code == 0, r.stdout + r.stderr
    assert {"net:check", "net:reference", "raw:check", "raw:reference"} <= set(r.ran())


def test_onnx_file_whose_small_constants_lie_in_its_external_data(workspace):
    """Another writer may put every tensor outside, a ReduceMean's axes included: ONNX Runtime refuses
    such a file, strict shape inference cannot read it; the check keeps small tensors in the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("ReduceMean", ["h", "axes"], ["m"], keepdims=1),
         helper.make_node("Sub", ["h", "m"], ["scores"])],
        "centred", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])], [w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    (workspace.root / "models").mkdir()
    onnx.save(model, str(workspace.root / "models/c.onnx"), save_as_external_data=True, location="c.bin",
              size_threshold=0)
    workspace.write("recipes/c.yaml", onnx_recipe("models/c.onnx").replace(
        "  int8: {min_cosine: 0.9}", "  int8: {min_cosine: 0.5}"))
    r = workspace.build()
    assert r.code == 0, r.stdout + r.stderr
    assert json.loads((workspace.root / "out/c/parity/fp32.json").read_text())["passed"]


def test_onnx_file_outside_the_workspace_is_a_recipe_error(workspace, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "m.onnx"
    write_onnx(elsewhere)
    workspace.write("recipes/mlp.yaml", onnx_recipe(f"../{elsewhere.parent.name}/m.onnx"))
    r = workspace.run("validate")
    assert r.code == 2
    assert "recipes/mlp.yaml:2:15: model.onnx: '../" in r.stderr and "is outside the workspace" in r.stderr

    # nor through a symlink inside it
    (workspace.root / "models").mkdir()
    (workspace.root / "models/link.onnx").symlink_to(elsewhere)
    workspace.write("recipes/mlp.yaml", onnx_recipe("models/link.onnx"))
    r = workspace.run("validate")
    assert r.code == 2
    assert "model.onnx: 'models/link.onnx' is outside the workspace" in r.stderr


def test_onnx_file_with_another_opset_or_frozen_axis_fails_the_check_naming_the_field(workspace):
    write_onnx(workspace.root / "models/mlp.onnx", opset=17)
    workspace.write("recipes/mlp.yaml", onnx_recipe("models/mlp.onnx"))
    r = workspace.build()
    assert r.code == 3
    assert "mlp:check" in r.stderr and "export.opset" in r.stderr
    assert "the ONNX file models/mlp.onnx has opset 17, the recipe asks for 18" in r.stderr

    write_onnx(workspace.root / "models/mlp.onnx", batch=4)
    r = workspace.build()
    assert r.code == 3
    assert "dims.batch" in r.stderr and "is fixed to 4" in r.stderr


def test_torchscript_target_needs_a_pytorch_model(workspace):
    write_onnx(workspace.root / "models/mlp.onnx")
    text = onnx_recipe("models/mlp.onnx") + "  - {backend: torchscript}\n"
    workspace.write("recipes/mlp.yaml", text.replace("tolerances:\n  int8: {min_cosine: 0.9}\n", "") +
                    "tolerances:\n  int8: {min_cosine: 0.9}\n")
    r = workspace.run("validate")
    assert r.code == 2
    assert "torchscript compiles a PyTorch model" in r.stderr


HAS_TF = importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("tf2onnx") is not None


def tf_recipe(kind: str, path: str) -> str:
    """A TensorFlow model (keras or saved_model) as the model."""
    return recipe_yaml(f"{{tensorflow: {{{kind}: {path}}}}}", features=8, data=False, output="logits",
                       batch=(1, 2, 4), export="{opset: 18}")


def _keras_model(folder: Path) -> None:
    """A small Keras MLP, saved as a .keras file and exported as a SavedModel."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input(shape=(8,), name="x")
    hidden = tf.keras.layers.Dense(16, activation="relu")(inp)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(3)(hidden))
    folder.mkdir(parents=True, exist_ok=True)
    model.save(str(folder / "mlp.keras"))
    model.export(str(folder / "mlp_saved"), verbose=False)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TF, reason="the tensorflow extra (tensorflow, tf2onnx) is not installed")
def test_keras_file_and_saved_model_convert_with_tf2onnx_and_pass_parity_against_tensorflow(workspace):
    _keras_model(workspace.root / "models")
    workspace.write("recipes/k.yaml", tf_recipe("keras", "models/mlp.keras"))
    workspace.write("recipes/s.yaml", tf_recipe("saved_model", "models/mlp_saved"))
    r = workspace.build()
    assert r.code == 0, r.stderr + r.stdout
    assert {"k:convert", "k:reference", "k:parity[fp32]", "s:convert", "s:reference", "s:parity[fp32]"} <= set(r.ran())
    import onnx

    m = onnx.load(str(workspace.root / "out/k/model.onnx"))
    assert [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for name in ("k", "s"):
        parity = json.loads((workspace.root / f"out/{name}/parity/fp32.json").read_text())
        assert parity["passed"] is True
    assert workspace.build().ran() == []


def test_tensorflow_model_without_the_extra_is_a_recipe_error_naming_it(workspace):
    (workspace.root / "models").mkdir()
    (workspace.root / "models/m.keras").write_bytes(b"")
    workspace.write("recipes/k.yaml", tf_recipe("keras", "models/m.keras"))
    # a Python that cannot import tensorflow or tf2onnx: stand-ins on the path that are not importable
    blocker = workspace.root / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.machinery as m\n_find = m.PathFinder.find_spec\n"
        "def find_spec(name, path=None, target=None):\n"
        "    return None if name.partition('.')[0] in ('tensorflow', 'tf2onnx') else _find(name, path, target)\n"
        "m.PathFinder.find_spec = staticmethod(find_spec)\n")
    import os

    r = workspace.run("validate", env={"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert r.code == 2, r.stderr
    assert "model.tensorflow: needs the tensorflow extra" in r.stderr
    assert "pip install 'buildsys[tensorflow]'" in r.stderr


def test_simplify_runs_onnxsim_then_onnxoptimizer_in_the_order_written(workspace):
    import onnx

    write_onnx(workspace.root / "models/mlp.onnx", identity=True)
    text = onnx_recipe("models/mlp.onnx")
    # onnxoptimizer alone with a pass list that leaves the Identity node
    workspace.write("recipes/mlp.yaml", text + "simplify: {passes: [onnxoptimizer], "
                                               "onnxoptimizer: [eliminate_nop_dropout]}\n")
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "onnxoptimizer: 6 → 6 nodes" in (workspace.root / "out/mlp/logs/simplify.log").read_text()
    m = onnx.load(str(workspace.root / "out/mlp/model.sim.onnx"))
    assert "Identity" in [n.op_type for n in m.graph.node]

    # both, in the order written, onnxoptimizer with its own default passes: simplify re-runs, check does not
    workspace.write("recipes/mlp.yaml", text + "simplify: {passes: [onnxsim, onnxoptimizer]}\n")
    r = workspace.build()
    assert r.code == 0, r.stderr
    assert "mlp:simplify" in r.ran() and "mlp:check" not in r.ran()
    assert "onnxsim + onnxoptimizer: 6 → 5 nodes" in (workspace.root / "out/mlp/logs/simplify.log").read_text()
    m = onnx.load(str(workspace.root / "out/mlp/model.sim.onnx"))
    assert [n.op_type for n in m.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert json.loads((workspace.root / "out/mlp/parity/fp32.json").read_text())["passed"] is True


def test_unknown_onnxoptimizer_pass_is_a_recipe_error(workspace):
    write_onnx(workspace.root / "models/mlp.onnx")
    workspace.write("recipes/mlp.yaml", onnx_recipe("models/mlp.onnx")
                    + "simplify: {passes: [onnxoptimizer], onnxoptimizer: [fuse_everything]}\n")
    r = workspace.run("validate")
    assert r.code == 2
    assert "simplify.onnxoptimizer.0" in r.stderr and "fuse_everything" in r.stderr
