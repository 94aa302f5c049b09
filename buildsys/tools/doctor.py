"""`buildsys doctor`: the GPU, its driver, and whether torch, ONNX Runtime and TensorRT can use it.

One table: for each library its version, the CUDA runtime it loads (read from
the process's mapped libraries after a tiny run), whether that run worked, and
the fix for each problem. Each library is probed in a child process of its own:
a library that crashes or hangs while CUDA starts cannot take the doctor down,
and CUDA is never initialised in this process. Without a GPU the answer is one
line and exit status 0.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

from buildsys.core import gpu

LIBRARIES = ("torch", "onnxruntime", "tensorrt")
PROBE_TIMEOUT = 180.0  # seconds: a first CUDA start can compile kernels for a new GPU
_CUDART = re.compile(r"libcudart(?:-[0-9a-f]+)?\.so\.(\d+(?:\.\d+)*)")
# How each library is installed where the registry answers; the GPU packages' notes say the rest.
INSTALL = {
    "torch": "pip install torch (its Linux wheel brings the CUDA 13 runtime as wheels)",
    "onnxruntime": "pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1' after pip uninstall onnxruntime",
    "tensorrt": "PIP_EXTRA_INDEX_URL=https://pypi.nvidia.com pip install tensorrt-cu13==10.16.1.11 "
                "(its libraries are on NVIDIA's index only), or use NVIDIA's TensorRT container",
}


@dataclass(frozen=True)
class Row:
    library: str
    version: str  # "" when not installed
    cuda: str  # the CUDA runtime it loaded, "" when unknown
    works: bool
    detail: str  # what the tiny run did or why it failed
    fix: str  # "" when nothing is to fix


def probe(library: str) -> dict:
    """In this (child) process: the library's version, a tiny run on the GPU, and the CUDA runtime it loaded."""
    out = {"version": "", "cuda": "", "works": False, "detail": ""}
    try:
        out.update(_PROBES[library]())
    except ModuleNotFoundError as exc:
        out["detail"] = f"not installed ({exc.name})"
    except Exception as exc:  # the probe reports any failure of the library as its answer
        out["detail"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    if not out["cuda"]:
        out["cuda"] = loaded_cudart()
    return out


def loaded_cudart() -> str:
    """The version of the libcudart this process has mapped, from /proc/self/maps ("" when none)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            found = sorted({m[1] for m in _CUDART.finditer(maps.read())})
    except OSError:
        return ""
    return ", ".join(found)


def _torch() -> dict:
    import torch

    out = {"version": torch.__version__, "cuda": torch.version.cuda or ""}
    if not torch.cuda.is_available():
        return {**out, "detail": f"torch.cuda.is_available() is False (built for CUDA {torch.version.cuda or 'none'})"}
    x = torch.arange(4.0, device="cuda")
    ok = float((x * 2).sum().item()) == 12.0
    return {**out, "works": ok, "detail": f"a sum on {torch.cuda.get_device_name(0)}" + ("" if ok else " gave a wrong answer")}


def _onnxruntime() -> dict:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    out = {"version": ort.__version__}
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return {**out, "detail": f"no CUDA provider (this is the CPU wheel; providers: {', '.join(providers)})"}
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "doctor",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    y = session.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
    used = session.get_providers()[0]
    ok = used == "CUDAExecutionProvider" and y.tolist() == [0.0, 2.0, 4.0, 6.0]
    return {**out, "works": ok, "detail": f"an Add on the {used}"}


def _tensorrt() -> dict:
    import tensorrt as trt

    out = {"version": trt.__version__}
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    x = network.add_input("x", trt.float32, (4,))
    network.mark_output(network.add_identity(x).get_output(0))
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    ok = plan is not None and trt.Runtime(logger).deserialize_cuda_engine(plan) is not None
    return {**out, "works": ok, "detail": "an identity engine built and loaded" if ok else "the engine did not build"}


_PROBES = {"torch": _torch, "onnxruntime": _onnxruntime, "tensorrt": _tensorrt}


def run_probe(library: str) -> dict:
    """probe(library) in a child process."""
    try:
        proc = subprocess.run([sys.executable, "-m", "buildsys.tools.doctor", library], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"version": "", "cuda": "", "works": False, "detail": f"no answer within {PROBE_TIMEOUT:g}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " ".join((proc.stderr or "").split())[-300:]
        return {"version": "", "cuda": "", "works": False,
                "detail": f"the probe exited with status {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def diagnose(library: str, found: dict, device: dict) -> Row:
    """A table row: what the probe found and, for a problem, its fix."""
    version, cuda, works, detail = found["version"], found["cuda"], found["works"], found["detail"]
    fix = ""
    driver_cuda = device.get("cuda", "unknown").split(".")[0]
    majors = [int(v.split(".")[0]) for v in cuda.split(", ") if v and v.split(".")[0].isdigit()]
    if not version:
        fix = INSTALL[library]
    elif majors and driver_cuda.isdigit() and max(majors) > int(driver_cuda):
        floor = gpu.MIN_DRIVER.get(max(majors))
        fix = (f"the driver supports CUDA {device.get('cuda')} and {library} loads CUDA {max(majors)}: update the "
               f"NVIDIA driver{f' to {floor} or newer' if floor else ''}, or install {library}'s CUDA "
               f"{driver_cuda} build")
    elif not works:
        cause = gpu.failure_cause(detail)
        fix = {"driver": "update the NVIDIA driver (see the CUDA runtime column)",
               "device": "check that nvidia-smi lists the GPU and CUDA_VISIBLE_DEVICES names it "
                         "(in a container: docker run --gpus all)",
               "memory": "free the GPU: nvidia-smi lists what holds it",
               "busy": "the GPU is held in exclusive mode by another process",
               }.get(cause or "", "")
        if not fix and library == "onnxruntime" and "no CUDA provider" in detail:
            fix = INSTALL["onnxruntime"]
        fix = fix or "see the detail; `python -m buildsys.tools.doctor " + library + "` prints the probe's answer"
    return Row(library, version, cuda, works, detail, fix)


def render(device: dict, rows: list[Row]) -> str:
    """The GPU line and the table (plain text, one row per library)."""
    head = (f"GPU: {device.get('name', '?')}, compute capability {device.get('compute_cap', '?')}, "
            f"driver {device.get('driver', '?')} (CUDA {device.get('cuda', 'unknown')})"
            + (f", MIG {device['mig']}" if device.get("mig") else ""))
    table = [("library", "version", "CUDA runtime", "tiny run", "fix")]
    for r in rows:
        table.append((r.library, r.version or "not installed", r.cuda or "—",
                      ("ok: " if r.works else "FAILED: " if r.version else "") + r.detail, r.fix or "—"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [head, ""]
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def doctor() -> int:
    """The `doctor` command: 0 when every library works on the GPU (or there is no GPU), else 1."""
    reason = gpu.absent_reason()
    if reason is not None:
        print(f"doctor: {reason}; nothing to check (the GPU steps are unavailable here)")
        return 0
    device = gpu.gpu()
    rows = [diagnose(lib, run_probe(lib), device) for lib in LIBRARIES]
    print(render(device, rows))
    return 0 if all(r.works for r in rows) else 1


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
