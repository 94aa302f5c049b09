"""The baseline for a clean build: the same library calls in one plain script.

    .venv/bin/python benchmarks/plain_resnet18.py            # time the script alone
    .venv/bin/python benchmarks/plain_resnet18.py --compare  # and `buildsys build resnet18` from scratch

Export (dynamo, opset 18, dynamic batch/height/width) → checker and shape inference →
onnxsim → PyTorch reference at min/opt/max → ONNX Runtime parity → ORT-format engine,
loaded back and run once. With --compare it alternates script and build runs (a fresh
workspace each time, so nothing is cached) and prints the medians and their ratio.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIMS = {"batch": (1, 2, 4), "height": (160, 224, 256), "width": (160, 224, 256)}


def plain(workdir: Path) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np
    import onnx
    import onnxruntime as ort
    import onnxsim
    import torch

    from models.resnet import resnet18

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = resnet18(num_classes=1000).eval()
    shape = lambda i: (DIMS["batch"][i], 3, DIMS["height"][i], DIMS["width"][i])  # noqa: E731
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 1, shape(i)).astype(np.float32) for i in range(3)]
    dyn = {0: torch.export.Dim("batch", min=1, max=4), 2: torch.export.Dim("height", min=160, max=256),
           3: torch.export.Dim("width", min=160, max=256)}
    program = torch.onnx.export(model, (torch.from_numpy(inputs[1]),), f=None, dynamo=True, opset_version=18,
                                input_names=["input"], output_names=["logits"], dynamic_shapes=({**dyn},))
    onnx_path = workdir / "model.onnx"
    program.save(str(onnx_path), external_data=False)
    onnx.checker.check_model(str(onnx_path))
    onnx.shape_inference.infer_shapes_path(str(onnx_path), str(workdir / "inferred.onnx"), True, True)
    simplified, ok = onnxsim.simplify(onnx.load(str(onnx_path)))
    sim_path = workdir / "model.sim.onnx"
    onnx.save(simplified, str(sim_path))
    with torch.inference_mode():
        refs = [model(torch.from_numpy(x)).numpy() for x in inputs]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(sim_path), so, providers=["CPUExecutionProvider"])
    for x, ref in zip(inputs, refs):
        got = session.run(None, {"input": x})[0]
        assert np.allclose(got, ref, atol=1e-4, rtol=1e-3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(workdir / "model.ort")
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(sim_path), so, providers=["CPUExecutionProvider"])
    engine = ort.InferenceSession(str(workdir / "model.ort"), providers=["CPUExecutionProvider"])
    engine.run(None, {"input": inputs[1]})


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        with tempfile.TemporaryDirectory() as d:
            plain(Path(d))
        return 0
    script, build = [], []
    for _ in range(args.runs):
        script.append(timed([sys.executable, __file__, "--inner"]))
        if args.compare:
            with tempfile.TemporaryDirectory() as d:
                ws = Path(d)
                for sub in ("recipes", "models"):
                    shutil.copytree(REPO / sub, ws / sub, ignore=shutil.ignore_patterns("__pycache__"))
                build.append(timed([str(Path(sys.executable).with_name("buildsys")), "-C", str(ws),
                                    "build", "resnet18"]))
    print(f"plain script  median {statistics.median(script):.1f} s  runs {[round(t, 1) for t in script]}")
    if build:
        print(f"buildsys      median {statistics.median(build):.1f} s  runs {[round(t, 1) for t in build]}")
        print(f"ratio         {statistics.median(build) / statistics.median(script):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
