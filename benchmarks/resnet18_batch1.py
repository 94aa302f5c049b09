"""ResNet-18 at batch 1: PyTorch eager against the built ONNX Runtime engine, in one process.

    .venv/bin/buildsys build resnet18
    .venv/bin/python benchmarks/resnet18_batch1.py --repeat 5

2 threads for both, ORT thread spinning off (as in buildsys's steps: with it on,
torch in the same process slows 2-3x), 40 timed iterations alternating eager and
ORT after a warm-up; each repeat prints the medians and their ratio, and the last
line the median ratio over the repeats.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def once(runs: int) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    sys.path.insert(0, str(REPO))
    from models.resnet import resnet18

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = resnet18(num_classes=1000).eval()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    engine = REPO / "out/resnet18/engines/onnxruntime-fp32.ort"
    if not engine.exists():
        sys.exit(f"{engine} is missing: run `.venv/bin/buildsys build resnet18` first")
    session = ort.InferenceSession(str(engine), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    t = torch.from_numpy(x)
    name = session.get_inputs()[0].name
    eager, onnx = [], []
    with torch.inference_mode():
        for _ in range(5):
            model(t)
            session.run(None, {name: x})
        for _ in range(runs):
            a = time.perf_counter()
            model(t)
            eager.append(time.perf_counter() - a)
            a = time.perf_counter()
            session.run(None, {name: x})
            onnx.append(time.perf_counter() - a)
    e, o = statistics.median(eager) * 1e3, statistics.median(onnx) * 1e3
    print(f"batch 1, 224x224: eager {e:.1f} ms, ONNX Runtime fp32 {o:.1f} ms, {e / o:.2f}x", flush=True)
    return e / o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes, one ratio each")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.once:
        once(args.runs)
        return
    import subprocess

    ratios = []
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, __file__, "--once", "--runs", str(args.runs)],
                             capture_output=True, text=True, check=True).stdout
        print(out.strip())
        ratios.append(float(out.rsplit(",", 1)[1].strip().rstrip("x")))
    print(f"median ratio over {len(ratios)} processes: {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
