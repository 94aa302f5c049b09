"""`buildsys bench`: latency and throughput of every artifact next to PyTorch eager.

Each candidate runs on the same seeded inputs at each profile's opt shape:
a warm-up, then timed runs until both a minimum count and a minimum time are
reached, so the percentiles rest on enough samples. PyTorch runs first and
ONNX Runtime last, each session released before the next starts, so one
runtime's idle threads never slow another's measurement.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

WARMUP = 5
MIN_RUNS = 30
MIN_SECONDS = 2.0


@dataclass(frozen=True)
class BenchRow:
    artifact: str
    profile: int
    shapes: dict[str, list[int]]
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float  # samples (batch rows) per second
    note: str = ""


def measure(fn: Callable[[], Any], batch: int) -> tuple[int, float, float, float, float]:
    for _ in range(WARMUP):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MIN_RUNS or time.perf_counter() - started < MIN_SECONDS:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 2000:
            break
    times.sort()
    q = statistics.quantiles(times, n=100, method="inclusive")
    return len(times), times[len(times) // 2] * 1e3, q[89] * 1e3, q[98] * 1e3, batch / statistics.fmean(times)


def bench_recipe(recipe, workspace: Path, out: Path, threads: int | None = None) -> list[BenchRow]:
    """Measure every artifact of one built recipe at each profile's opt shape."""
    import numpy as np
    import torch

    from buildsys.inputs import generate
    from buildsys.resolve import model_params
    from buildsys.steps.modelload import load_model

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    params = model_params(recipe)
    files = {"checkpoint": workspace / recipe.model.checkpoint} if recipe.model.checkpoint else {}
    # An ONNX or TensorFlow model has no PyTorch eager row: its artifacts are compared with each other.
    model = load_model(params, workspace, files)[0] if recipe.model.kind == "pytorch" else None
    folder = out / recipe.name
    rows: list[BenchRow] = []
    for profile in range(1 + len(recipe.profiles)):
        dims = recipe.profile_dims(profile)
        feeds = {}
        for i, spec in enumerate(params["inputs"]):
            shape = tuple(s if isinstance(s, int) else dims[s].opt for s in spec["shape"])
            feeds[spec["name"]] = generate(spec, shape, np.random.default_rng([0, profile, i]), workspace)
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        tensors = [torch.from_numpy(feeds[i["name"]]) for i in params["inputs"]]

        def eager():
            with torch.inference_mode():
                model(*tensors)

        if model is not None:
            rows.append(BenchRow("pytorch-eager", profile, shapes, *measure(eager, batch)))
        ts = folder / "engines" / "torchscript.pt"
        if ts.exists():
            scripted = torch.jit.load(str(ts))

            def run_ts():
                with torch.inference_mode():
                    scripted(*tensors)

            rows.append(BenchRow("torchscript", profile, shapes, *measure(run_ts, batch)))
            del scripted
        for name, path in _onnx_candidates(folder):
            rows.append(_bench_ort(name, path, feeds, threads, profile, shapes, batch))
        rows = _int8_against_fp32_engine(rows, folder, feeds, threads)
        for name, model, provider, options in _ort_gpu_candidates(folder, workspace, recipe):
            rows.append(_bench_ort_gpu(name, model, provider, options, feeds, threads, profile, shapes, batch))
        for plan in sorted((folder / "engines").glob("*.plan")):
            rows.append(_bench_trt(plan, feeds, profile, shapes, batch))
    return rows


def _ort_gpu_candidates(folder: Path, workspace: Path, recipe) -> list[tuple[str, Path, str, list]]:
    """ONNX Runtime's GPU targets whose step has run: their result names the model the provider ran."""
    found = []
    for t in recipe.targets:
        if t.backend != "onnxruntime" or t.provider not in ("cuda", "tensorrt"):
            continue
        result = folder / "parity" / f"{t.id}.json"
        if not result.is_file():
            continue
        doc = json.loads(result.read_text())
        model = folder / doc.get("candidate", "")
        if model.is_file():
            found.append((t.id, model, t.provider, doc.get("options") or {}))
    return found


def _bench_ort_gpu(name: str, path: Path, provider: str, options: dict, feeds, threads: int, profile: int,
                   shapes, batch) -> BenchRow:
    """ONNX Runtime on its CUDA or TensorRT provider with the options its step used; never a CPU run in disguise."""
    from buildsys import gpu
    from buildsys.errors import StepError
    from buildsys.steps.sessions import PROVIDER_NAMES, cuda_options, gpu_session, refuse_fallback

    why = gpu.absent_reason()
    if why is not None:
        return BenchRow(name, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0, note=f"unavailable: {why}")
    providers = [(PROVIDER_NAMES[provider], options)]
    if provider == "tensorrt":
        providers.append(("CUDAExecutionProvider", cuda_options("fp16")))
    try:
        if provider == "tensorrt":
            import tensorrt  # noqa: F401  (loads TensorRT's libraries for the provider)
        session = gpu_session(path, threads, [*providers, "CPUExecutionProvider"])
        refuse_fallback(session, provider)
        row = BenchRow(name, profile, shapes, *measure(lambda: session.run(None, feeds), batch),
                       note="host-device copies included")
    except StepError as exc:
        return BenchRow(name, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0, note=f"unavailable: {exc.message[:200]}")
    except Exception as exc:  # the provider could not start or run: say why, with the cause when known
        err = gpu.failure(f"{provider} provider", exc)
        return BenchRow(name, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0, note=f"unavailable: {err.message[:200]}")
    del session
    return row


def _bench_trt(plan: Path, feeds, profile: int, shapes, batch) -> BenchRow:
    """A TensorRT engine through Polygraphy's TrtRunner (host-device copies included), or why not."""

    from buildsys import gpu

    from buildsys.steps.engine_tensorrt import pin_cuda_runtime, tensorrt_missing

    why = gpu.absent_reason() or tensorrt_missing()
    if why is not None:
        return BenchRow(plan.stem, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0, note=f"unavailable: {why}")
    try:
        pin_cuda_runtime()
    except Exception as exc:
        return BenchRow(plan.stem, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0,
                        note=f"unavailable: {gpu.failure('the CUDA runtime could not be loaded', exc).message[:200]}")
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.datatype import DataType

    try:
        with TrtRunner(EngineFromBytes(BytesFromPath(str(plan))), optimization_profile=profile) as runner:
            meta = runner.get_input_metadata()
            cast = {k: v.astype(DataType.to_dtype(meta[k].dtype, "numpy"), copy=False)
                    for k, v in feeds.items() if k in meta}
            return BenchRow(plan.stem, profile, shapes, *measure(lambda: runner.infer(cast), batch),
                            note="host-device copies included")
    except Exception as exc:  # an engine built for another GPU or TensorRT version, out of GPU memory, say
        err = gpu.failure("TensorRT could not run the engine", exc)
        note = err.message + (f" (hint: {err.hint})" if err.hint and gpu.failure_cause(str(exc)) else "")
        return BenchRow(plan.stem, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0, note=f"unavailable: {note[:300]}")


def _onnx_candidates(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for label, rel in (("onnx fp32 (onnxruntime)", "model.sim.onnx"), ("onnx fp32 (onnxruntime)", "model.onnx")):
        if (folder / rel).exists() and not any(n == label for n, _ in found):
            found.append((label, folder / rel))
    for engine in sorted((folder / "engines").glob("onnxruntime-*")):
        if engine.suffix in (".ort", ".onnx"):
            found.append((engine.name.split(".")[0], engine))
    return found


def _int8_against_fp32_engine(rows: list[BenchRow], folder: Path, feeds, threads: int) -> list[BenchRow]:
    """The int8 engine's row notes its speed-up over the fp32 engine of the same export, measured as
    parity[int8] does (steps.latency: CPU time per run at 1 thread, interleaved); the fp32 engine is
    made for the comparison where the recipe has no fp32 target."""
    import dataclasses
    import tempfile

    from buildsys.steps.latency import int8_against_fp32

    int8 = next((r for r in rows if r.artifact == "onnxruntime-int8" and r.runs), None)
    engine = folder / "engines" / "onnxruntime-int8.ort"
    source = next((folder / n for n in ("model.int8.fallback.onnx", "model.int8.onnx") if (folder / n).exists()), None)
    if int8 is None or not engine.exists() or source is None or not (folder / "model.sim.onnx").exists():
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        lat = int8_against_fp32(folder / "model.sim.onnx", source, feeds, threads, Path(tmp))
    cpu = lat["cpu_ms"]
    note = (f"{lat['speedup']:.2f}x the fp32 engine in CPU time per run at 1 thread "
            f"({cpu['int8']['median']:.2f} vs {cpu['fp32']['median']:.2f} ms, median of {lat['runs']})")
    return [dataclasses.replace(r, note=note) if r is int8 else r for r in rows]


def _bench_ort(name: str, path: Path, feeds, threads: int, profile: int, shapes, batch) -> BenchRow:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    row = BenchRow(name, profile, shapes, *measure(lambda: session.run(None, feeds), batch))
    del session
    return row


def render(recipe: str, rows: list[BenchRow]) -> str:
    base = {r.profile: r.p50_ms for r in rows if r.artifact == "pytorch-eager"}
    lines = [f"{recipe}: latency at each profile's opt shape (ms), throughput in samples/s",
             f"{'artifact':<28} {'profile':>7} {'p50':>9} {'p90':>9} {'p99':>9} {'samples/s':>10} {'vs eager':>9}"]
    for r in rows:
        if not r.runs:
            lines.append(f"{r.artifact:<28} {r.profile:>7}  {r.note}")
            continue
        speed = f"{base[r.profile] / r.p50_ms:8.2f}x" if r.p50_ms and r.profile in base else f"{'n/a':>9}"
        lines.append(f"{r.artifact:<28} {r.profile:>7} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.p99_ms:9.2f} "
                     f"{r.throughput:10.1f} {speed}" + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


def write_json(path: Path, recipe: str, rows: list[BenchRow], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"recipe": recipe, **meta, "rows": [asdict(r) for r in rows]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
