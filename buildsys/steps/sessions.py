"""ONNX Runtime sessions configured for a shared, small machine."""
from __future__ import annotations

from pathlib import Path


def session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # With spinning on, ORT's idle threads keep the cores busy and starve torch
    # when both live in one worker process (3x slower on 2 cores).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def engine_options(threads: int):
    """The session options engine[onnxruntime-*] optimises with (every graph optimisation, for this CPU)."""
    import onnxruntime as ort

    so = session_options(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def cpu_session(path: Path, threads: int, so=None):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), so or session_options(threads), providers=["CPUExecutionProvider"])


# -- ONNX Runtime on the GPU: provider options decided from the target alone -----------------

PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# The wheel that holds ONNX Runtime's CUDA and TensorRT providers; `make` installs it in place of
# `onnxruntime` where nvidia-smi answers (the two ship the same module and cannot be installed together).
GPU_WHEEL = "onnxruntime-gpu"


def shape_list(shapes: dict[str, tuple], point: int) -> str:
    """`x:1x3x224x224,mask:1x16`: one shape point of every input, as the TensorRT provider's profile options take it."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims[point])}" for name, dims in shapes.items())


def cuda_options(precision: str, device_id: int = 0) -> dict[str, str]:
    """CUDA provider options: TF32 off for fp32 (fp32 tolerances are tighter than its 10-bit mantissa)."""
    return {"device_id": str(device_id), "use_tf32": "0" if precision == "fp32" else "1"}


def tensorrt_options(precision: str, shapes: dict[str, tuple], cache: Path, workspace: int | None = None,
                     device_id: int = 0) -> dict[str, str]:
    """TensorRT provider options: precision flags, one explicit profile (min/opt/max) and buildsys's cache folder.

    The engine and timing caches live in `cache`, a folder named by the step's
    key: ONNX Runtime's own cache names collide across models and versions.
    int8 takes the Q/DQ model's scales (no calibration table); fp16 is allowed
    beside it for the layers left unquantized.
    """
    opts = {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if precision in ("fp16", "int8") else "False",
        "trt_int8_enable": "True" if precision == "int8" else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": shape_list(shapes, 0),
        "trt_profile_opt_shapes": shape_list(shapes, 1),
        "trt_profile_max_shapes": shape_list(shapes, 2),
    }
    if workspace:
        opts["trt_max_workspace_size"] = str(workspace)
    return opts


def refuse_fallback(session, provider: str) -> None:
    """Fail when ONNX Runtime dropped the provider: it falls back to the CPU with a warning only."""
    from buildsys.errors import StepError

    name = PROVIDER_NAMES[provider]
    got = list(session.get_providers())
    if name not in got:
        raise StepError(f"ONNX Runtime did not load its {provider} provider ({name}); the session would run on "
                        f"{', '.join(got) or 'nothing'}, and a CPU run is not reported as a {provider} one",
                        hint="the step's log holds ONNX Runtime's warning on why the provider failed to load "
                             "(a missing CUDA, cuDNN or TensorRT library, most often)")


def gpu_session(path: Path, threads: int, providers: list):
    """A session on the GPU providers asked for, preloading the CUDA and cuDNN libraries of NVIDIA's wheels."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA/cuDNN from the nvidia-* wheels
        ort.preload_dlls()
    return ort.InferenceSession(str(path), session_options(threads), providers=providers)
