"""ONNX Runtime sessions configured for a shared, small machine."""
from __future__ import annotations

from pathlib import Path

from buildsys.core.gpu import cuda_options  # noqa: F401  (decided from the target alone: resolve puts them in the key)


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


def cuda_graph_options(options: dict[str, str]) -> dict[str, str]:
    """`options` with a CUDA graph: the whole run replayed as one launch; fixed shapes and bound buffers only."""
    return {**options, "enable_cuda_graph": "1"}


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


def refuse_fallback(session, provider: str, placement: dict | None = None, allowed: tuple[str, ...] = ()) -> None:
    """Fail when ONNX Runtime dropped the provider, wholly or for nodes the recipe did not allow on the CPU.

    ONNX Runtime falls back to the CPU with a warning only: the whole session when
    the provider fails to load, single nodes when it has no kernel for them. The
    provider list shows the first; `placement` (node_placement, from a profiled
    run) shows the second.
    """
    from buildsys.core.errors import StepError

    name = PROVIDER_NAMES[provider]
    got = list(session.get_providers())
    if name not in got:
        raise StepError(f"ONNX Runtime did not load its {provider} provider ({name}); the session would run on "
                        f"{', '.join(got) or 'nothing'}, and a CPU run is not reported as a {provider} one",
                        hint="the step's log holds ONNX Runtime's warning on why the provider failed to load "
                             "(a missing CUDA, cuDNN or TensorRT library, most often)")
    fallen = cpu_fallback(placement or {}, allowed)
    if fallen:
        shown = ", ".join(fallen[:8]) + (f" and {len(fallen) - 8} more" if len(fallen) > 8 else "")
        raise StepError(f"ONNX Runtime ran {len(fallen)} node(s) on the CPU instead of its {provider} provider: "
                        f"{shown}; a partial CPU run is not reported as a {provider} one",
                        field="targets",
                        hint="the provider has no kernel for them at this precision or shape: change the model, "
                             "or allow them on the CPU with the target's cpu_nodes (op types or node names)")


def node_placement(profile: Path) -> dict[str, dict]:
    """Where each node ran, from an ONNX Runtime profile: node name -> {op, provider, float}.

    `float` says whether the node read or wrote a floating-point tensor (the
    model's data) rather than only integers (shape arithmetic, which the CUDA
    provider keeps on the CPU by design: the values are needed there to size
    the next kernels).
    """
    import json

    placement: dict[str, dict] = {}
    for event in json.loads(profile.read_text()):
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "provider" not in args or not event.get("name", "").endswith("_kernel_time"):
            continue
        types = {t for entry in (*args.get("input_type_shape", []), *args.get("output_type_shape", []))
                 for t in entry}
        node = event["name"][: -len("_kernel_time")]
        placement[node] = {"op": args.get("op_name", "?"), "provider": args["provider"],
                           "float": any(t in ("float", "float16", "double", "bfloat16") for t in types)}
    return placement


def cpu_fallback(placement: dict[str, dict], allowed: tuple[str, ...]) -> list[str]:
    """The nodes that computed on the model's data on the CPU and the recipe did not allow there: `name (Op)`."""
    return [f"{node} ({p['op']})" for node, p in sorted(placement.items())
            if p["provider"] == "CPUExecutionProvider" and p["float"]
            and p["op"] not in allowed and node not in allowed]


def placement_record(placement: dict[str, dict], allowed: tuple[str, ...]) -> dict:
    """What the report says of where nodes ran: a count per provider and every node on the CPU, with why."""
    counts: dict[str, int] = {}
    for p in placement.values():
        counts[p["provider"]] = counts.get(p["provider"], 0) + 1
    cpu = [{"node": node, "op": p["op"],
            "why": ("allowed by the target's cpu_nodes" if p["op"] in allowed or node in allowed
                    else "a fallback" if p["float"] else "shape arithmetic (integers), kept on the CPU by design")}
           for node, p in sorted(placement.items()) if p["provider"] == "CPUExecutionProvider"]
    return {"nodes": counts, "cpu": cpu}


def gpu_session(path: Path, threads: int, providers: list, profile: Path | None = None):
    """A session on the GPU providers asked for, preloading the CUDA and cuDNN libraries of NVIDIA's wheels.

    With `profile` (a file name prefix), ONNX Runtime records every node's run and
    provider: session.end_profiling() names the file node_placement reads.
    """
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA/cuDNN from the nvidia-* wheels
        ort.preload_dlls()
    so = session_options(threads)
    if profile is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile)
    return ort.InferenceSession(str(path), so, providers=providers)
