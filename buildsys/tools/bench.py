"""`buildsys bench`: latency and throughput of every artifact next to PyTorch eager.

Each candidate runs on the same seeded inputs at each profile's opt shape:
a warm-up, then timed runs until both a minimum count and a minimum time are
reached, so the percentiles rest on enough samples. PyTorch runs first and
ONNX Runtime last, each session released before the next starts, so one
runtime's idle threads never slow another's measurement.

`vs eager` compares like with like: each row names its baseline, PyTorch eager
on the same device at the same precision (baseline_for). On a GPU machine
PyTorch also runs on that GPU at each precision the recipe's GPU targets use:
fp32 with TF32 as PyTorch defaults it (cuDNN convolutions in TF32) and with
TF32 off, and fp16; 4-D inputs in channels_last, the layout its convolutions
are fastest in. GPU rows are timed after the device finished (CUDA events, or
a synchronised run), and come twice: device-resident (inputs and outputs bound
on the GPU) and with the host copies a caller that holds numpy arrays pays.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

WARMUP = 5
MIN_RUNS = 30
MIN_SECONDS = 2.0
DEVICE_RESIDENT = "device-resident"
HOST_COPIES = "host copies"


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
    device: str = "cpu"  # cpu | cuda
    precision: str = "fp32"  # fp32 | fp16 | int8
    io: str = ""  # on the GPU: device-resident, or host copies included
    baseline: str = ""  # the eager row `vs eager` divides by (baseline_for); "" for the eager rows themselves


@dataclass(frozen=True)
class Eager:
    """One PyTorch eager baseline: where it runs and how."""

    artifact: str
    device: str
    precision: str
    tf32: bool = False  # TF32 as PyTorch defaults it (cuDNN convolutions); False: TF32 off everywhere
    channels_last: bool = False


def baseline_for(device: str, precision: str, tf32: bool = False) -> str:
    """The eager row an artifact is compared with: same device, same precision.

    int8 has no eager counterpart: on the CPU it is compared with fp32 eager (what
    quantization gains), on the GPU with fp16 eager (the fastest eager there).
    TensorRT's `best` is compared with fp16.
    """
    if device == "cpu":
        return "pytorch-eager"
    if precision == "fp32":
        return "pytorch-eager-cuda-fp32" + ("-tf32" if tf32 else "")
    return "pytorch-eager-cuda-fp16"


def eager_baselines(gpu_precisions: set[str], on_gpu: bool, four_d: bool) -> list[Eager]:
    """The eager rows to time: the CPU always; on a GPU machine the GPU at each precision its targets use."""
    rows = [Eager("pytorch-eager", "cpu", "fp32")]
    if not on_gpu:
        return rows
    if "fp32" in gpu_precisions:
        rows.append(Eager(baseline_for("cuda", "fp32", True), "cuda", "fp32", tf32=True, channels_last=four_d))
        rows.append(Eager(baseline_for("cuda", "fp32"), "cuda", "fp32", channels_last=four_d))
    if gpu_precisions - {"fp32"}:
        rows.append(Eager(baseline_for("cuda", "fp16"), "cuda", "fp16", channels_last=four_d))
    return rows


def gpu_precisions(recipe) -> set[str]:
    """The precisions the recipe's GPU targets run at (TensorRT, ONNX Runtime's CUDA and TensorRT providers)."""
    return {t.precision for t in recipe.targets
            if t.backend == "tensorrt" or (t.backend == "onnxruntime" and t.provider in ("cuda", "tensorrt"))}


def _stats(times: list[float], batch: int) -> Figures:
    times.sort()
    q = statistics.quantiles(times, n=100, method="inclusive")
    return len(times), times[len(times) // 2] * 1e3, q[89] * 1e3, q[98] * 1e3, batch / statistics.fmean(times)


Figures = tuple[int, float, float, float, float]  # runs, p50, p90, p99 (ms), samples per second


def measure(fn: Callable[[], Any], batch: int, sync: Callable[[], Any] | None = None) -> Figures:
    """Time `fn` by the wall clock; `sync` (if given) runs inside each timed run, so work left on a device counts."""
    for _ in range(WARMUP):
        fn()
    if sync is not None:
        sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MIN_RUNS or time.perf_counter() - started < MIN_SECONDS:
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 2000:
            break
    return _stats(times, batch)


def measure_cuda(fn: Callable[[], Any], batch: int) -> Figures:
    """Time `fn`'s work on the current CUDA stream with CUDA events (each run waited for)."""
    import torch

    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MIN_RUNS or time.perf_counter() - started < MIN_SECONDS:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
        if len(times) >= 2000:
            break
    return _stats(times, batch)


def _unavailable(name: str, profile: int, shapes, why: str, **labels) -> BenchRow:
    return BenchRow(name, profile, shapes, 0, 0.0, 0.0, 0.0, 0.0, note=f"unavailable: {why}", **labels)


def bench_recipe(recipe, workspace: Path, out: Path, threads: int | None = None) -> list[BenchRow]:
    """Measure every artifact of one built recipe at each profile's opt shape."""
    import numpy as np
    import torch

    from buildsys.core import gpu
    from buildsys.recipe.resolve import model_params
    from buildsys.steps.inputs import generate
    from buildsys.steps.modelload import load_model

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    params = model_params(recipe)
    files = {"checkpoint": workspace / recipe.model.checkpoint} if recipe.model.checkpoint else {}
    # An ONNX or TensorFlow model has no PyTorch eager row: its artifacts are compared with each other.
    model = load_model(params, workspace, files)[0] if recipe.model.kind == "pytorch" else None
    on_gpu = gpu.absent_reason() is None
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

        if model is not None:
            four_d = any(t.dim() == 4 for t in tensors)
            for e in eager_baselines(gpu_precisions(recipe), on_gpu, four_d):
                rows.append(_bench_eager(e, model, tensors, profile, shapes, batch))
        ts = folder / "engines" / "torchscript.pt"
        if ts.exists():
            scripted = torch.jit.load(str(ts))

            def run_ts():
                with torch.inference_mode():
                    scripted(*tensors)  # noqa: B023  (called at once, in this iteration)

            rows.append(BenchRow("torchscript", profile, shapes, *measure(run_ts, batch), baseline="pytorch-eager"))
            del scripted
        for name, path in _onnx_candidates(folder):
            precision = "int8" if name.endswith("-int8") else "fp32"
            rows.append(_bench_ort(name, path, feeds, threads, profile, shapes, batch, precision))
        rows = _int8_against_fp32_engine(rows, folder, feeds, threads)
        for name, model_path, provider, options, precision in _ort_gpu_candidates(folder, workspace, recipe):
            if model_path is None:  # its step did not run: say why rather than leave the target out
                why = gpu.absent_reason() or "its step has not run (see `buildsys status`)"
                rows.append(_unavailable(name, profile, shapes, why, device="cuda", precision=precision))
                continue
            rows.extend(_bench_ort_gpu(name, model_path, provider, options, precision, feeds, threads, profile,
                                       shapes, batch))
        for plan in sorted((folder / "engines").glob("*.plan")):
            rows.extend(_bench_trt(plan, feeds, profile, shapes, batch))
    return rows


def _bench_eager(e: Eager, model, tensors, profile: int, shapes, batch) -> BenchRow:
    """PyTorch eager on the CPU, or on the GPU at one precision (a copy of the model there)."""
    import torch

    labels: dict[str, Any] = dict(device=e.device, precision=e.precision)
    if e.device == "cpu":
        def eager():
            with torch.inference_mode():
                model(*tensors)

        return BenchRow(e.artifact, profile, shapes, *measure(eager, batch), **labels)
    import copy

    note = ("TF32 as PyTorch defaults it (cuDNN convolutions)" if e.tf32 else
            "TF32 off" if e.precision == "fp32" else "")
    note = "; ".join(x for x in (note, "channels_last" if e.channels_last else "") if x)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        dev = torch.device("cuda")
        layout = torch.channels_last if e.channels_last else torch.contiguous_format
        moved = copy.deepcopy(model).to(dev).to(memory_format=layout)
        inputs = [t.to(dev) for t in tensors]
        if e.precision == "fp16":
            moved = moved.half()
            inputs = [t.half() if t.is_floating_point() else t for t in inputs]
        inputs = [t.contiguous(memory_format=layout) if t.dim() == 4 else t for t in inputs]
        if not e.tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

        def eager():
            with torch.inference_mode():
                moved(*inputs)

        return BenchRow(e.artifact, profile, shapes, *measure_cuda(eager, batch), note=note, io=DEVICE_RESIDENT,
                        **labels)
    except Exception as exc:  # no usable CUDA for torch (a CPU wheel, a driver too old): the row says why
        return _unavailable(e.artifact, profile, shapes, f"PyTorch on the GPU: {' '.join(str(exc).split())[:200]}",
                            **labels)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _ort_gpu_candidates(folder: Path, workspace: Path, recipe) -> list[tuple[str, Path | None, str, dict, str]]:
    """ONNX Runtime's GPU targets: the model and the options the provider ran, as their step's result names
    them; None for the model where the step has not run."""
    found = []
    for t in recipe.targets:
        if t.backend != "onnxruntime" or t.provider not in ("cuda", "tensorrt"):
            continue
        result = folder / "parity" / f"{t.id}.json"
        doc = json.loads(result.read_text()) if result.is_file() else {}
        model = folder / doc["candidate"] if doc.get("candidate") else None
        found.append((t.id, model if model and model.is_file() else None, t.provider, doc.get("options") or {},
                      t.precision))
    return found


def _bench_ort_gpu(name: str, path: Path, provider: str, options: dict, precision: str, feeds, threads: int,
                   profile: int, shapes, batch) -> list[BenchRow]:
    """ONNX Runtime on its CUDA or TensorRT provider with the options its step used, device-resident and with
    host copies; never a CPU run in disguise."""
    from buildsys.core import gpu
    from buildsys.core.errors import StepError
    from buildsys.steps.sessions import PROVIDER_NAMES, gpu_session, refuse_fallback

    options = dict(options)
    cuda = options.pop("cuda", None) if provider == "tensorrt" else None  # the CUDA provider beneath TensorRT's
    tf32 = options.get("use_tf32") == "1"
    labels: dict[str, Any] = dict(device="cuda", precision=precision, baseline=baseline_for("cuda", precision, tf32))
    why = gpu.absent_reason()
    if why is not None:
        return [_unavailable(name, profile, shapes, why, **labels)]
    providers = [(PROVIDER_NAMES[provider], options)]
    if cuda is not None:
        providers.append(("CUDAExecutionProvider", cuda))
    try:
        if provider == "tensorrt":
            import tensorrt  # noqa: F401  (loads TensorRT's libraries for the provider)
        session = gpu_session(path, threads, [*providers, "CPUExecutionProvider"])
        refuse_fallback(session, provider)
        host = BenchRow(name, profile, shapes, *measure(lambda: session.run(None, feeds), batch), io=HOST_COPIES,  # noqa: F821
                        note="numpy in and out", **labels)
        outputs = session.run(None, feeds)
        del session
        resident = _ort_resident(name, path, provider, providers, feeds, outputs, threads, profile, shapes, batch,
                                 labels)
    except StepError as exc:
        return [_unavailable(name, profile, shapes, exc.message[:200], **labels)]
    except Exception as exc:  # the provider could not start or run: say why, with the cause when known
        return [_unavailable(name, profile, shapes, gpu.failure(f"{provider} provider", exc).message[:200], **labels)]
    return [resident, host]


def _ort_resident(name: str, path: Path, provider: str, providers: list, feeds, outputs, threads: int, profile: int,
                  shapes, batch, labels: dict) -> BenchRow:
    """The same session with inputs and outputs bound on the GPU (IOBinding), replayed as a CUDA graph where the
    CUDA provider can capture the whole run (fixed shapes, every node on the GPU); without one where it cannot."""
    import onnxruntime as ort

    from buildsys.steps.sessions import cuda_graph_options, gpu_session

    def bound(session):
        binding = session.io_binding()
        kept = []  # the device buffers must outlive every run: a CUDA graph replays their addresses
        for meta in session.get_inputs():
            value = ort.OrtValue.ortvalue_from_numpy(feeds[meta.name], "cuda", 0)
            kept.append(value)
            binding.bind_ortvalue_input(meta.name, value)
        for meta, host in zip(session.get_outputs(), outputs):
            value = ort.OrtValue.ortvalue_from_shape_and_type(host.shape, host.dtype, "cuda", 0)
            kept.append(value)
            binding.bind_ortvalue_output(meta.name, value)
        return binding, kept

    attempts: list[tuple[list[Any], str]] = []
    if provider == "cuda":
        attempts.append(([(providers[0][0], cuda_graph_options(providers[0][1]))], "IOBinding, CUDA graph"))
    attempts.append(([*providers, "CPUExecutionProvider"], "IOBinding"))
    failure = ""
    for chosen, how in attempts:
        try:
            session = gpu_session(path, threads, chosen)
            binding, kept = bound(session)

            def run():
                session.run_with_iobinding(binding)  # noqa: B023, F821  (called at once, before `del session`)

            figures = measure(run, batch, sync=binding.synchronize_outputs)
        except Exception as exc:  # a graph the CUDA provider cannot capture: timed without it, and said so
            failure = f"; no CUDA graph: {' '.join(str(exc).split())[:120]}"
            continue
        del session, kept
        return BenchRow(name, profile, shapes, *figures, io=DEVICE_RESIDENT, note=how + failure, **labels)
    return _unavailable(name, profile, shapes, f"device-resident run failed{failure}", io=DEVICE_RESIDENT, **labels)


def _bench_trt(plan: Path, feeds, profile: int, shapes, batch) -> list[BenchRow]:
    """A TensorRT engine through Polygraphy's TrtRunner: inputs and outputs on the GPU, and with host copies."""

    from buildsys.core import gpu
    from buildsys.steps.engine_tensorrt import pin_cuda_runtime, tensorrt_missing

    precision = plan.stem.rsplit("-", 1)[-1]
    labels: dict[str, Any] = dict(device="cuda", precision=precision, baseline=baseline_for("cuda", precision))
    why = gpu.absent_reason() or tensorrt_missing()
    if why is not None:
        return [_unavailable(plan.stem, profile, shapes, why, **labels)]
    try:
        pin_cuda_runtime()
    except Exception as exc:
        return [_unavailable(plan.stem, profile, shapes,
                             gpu.failure('the CUDA runtime could not be loaded', exc).message[:200], **labels)]
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.datatype import DataType

    try:
        with TrtRunner(EngineFromBytes(BytesFromPath(str(plan))), optimization_profile=profile) as runner:
            meta = runner.get_input_metadata()
            cast = {k: v.astype(DataType.to_dtype(meta[k].dtype, "numpy"), copy=False)
                    for k, v in feeds.items() if k in meta}
            host = BenchRow(plan.stem, profile, shapes, *measure(lambda: runner.infer(cast), batch), io=HOST_COPIES,
                            note="numpy in and out", **labels)
            resident = _trt_resident(runner, cast, plan.stem, profile, shapes, batch, labels)
            return [resident, host]
    except Exception as exc:  # an engine built for another GPU or TensorRT version, out of GPU memory, say
        err = gpu.failure("TensorRT could not run the engine", exc)
        note = err.message + (f" (hint: {err.hint})" if err.hint and gpu.failure_cause(str(exc)) else "")
        return [_unavailable(plan.stem, profile, shapes, note[:300], **labels)]


def _trt_resident(runner, cast, name: str, profile: int, shapes, batch, labels: dict) -> BenchRow:
    """TensorRT with device buffers: torch tensors on the GPU in, outputs left there; timed with CUDA events."""
    try:
        import torch

        on_gpu = {k: torch.from_numpy(v).cuda() for k, v in cast.items()}
        figures = measure_cuda(lambda: runner.infer(on_gpu, copy_outputs_to_host=False), batch)
    except Exception as exc:  # torch without CUDA beside TensorRT, or a Polygraphy without device feeds
        return _unavailable(name, profile, shapes, f"device-resident run failed: {' '.join(str(exc).split())[:160]}",
                            io=DEVICE_RESIDENT, **labels)
    return BenchRow(name, profile, shapes, *figures, io=DEVICE_RESIDENT, note="device buffers", **labels)


def _onnx_candidates(folder: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
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


def _bench_ort(name: str, path: Path, feeds, threads: int, profile: int, shapes, batch, precision: str) -> BenchRow:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    row = BenchRow(name, profile, shapes, *measure(lambda: session.run(None, feeds), batch), precision=precision,  # noqa: F821
                   baseline=baseline_for("cpu", precision))
    del session
    return row


def render(recipe: str, rows: list[BenchRow]) -> str:
    """The table: each row's ratio to its own baseline (same device, same precision), which it names."""
    base = {(r.profile, r.artifact): r.p50_ms for r in rows if not r.baseline and r.runs}
    lines = [f"{recipe}: latency at each profile's opt shape (ms), throughput in samples/s; "
             "vs eager: PyTorch eager on the same device at the same precision",
             f"{'artifact':<34} {'profile':>7} {'p50':>9} {'p90':>9} {'p99':>9} {'samples/s':>10} {'vs eager':>9}  "
             f"{'baseline':<28} note"]
    for r in rows:
        labelled = r.io and r.baseline  # a GPU artifact's two rows
        name = f"{r.artifact} [{'device' if r.io == DEVICE_RESIDENT else 'host'}]" if labelled else r.artifact
        if not r.runs:
            lines.append(f"{name:<34} {r.profile:>7}  {r.note}")
            continue
        b = base.get((r.profile, r.baseline))
        speed = f"{b / r.p50_ms:8.2f}x" if b and r.p50_ms else f"{'-' if not r.baseline else 'n/a':>9}"
        how = "; ".join(x for x in (r.io, r.note) if x)
        lines.append(f"{name:<34} {r.profile:>7} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.p99_ms:9.2f} "
                     f"{r.throughput:10.1f} {speed}  {r.baseline or '-':<28} {how}".rstrip())
    return "\n".join(lines)


def write_json(path: Path, recipe: str, rows: list[BenchRow], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"recipe": recipe, **meta, "rows": [asdict(r) for r in rows]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def run(recipe, root: Path, threads: int | None) -> Path:
    """`buildsys bench`: time every built artifact of `recipe`, print the table, write out/<recipe>/bench.json."""
    import sys

    from buildsys import __version__
    from buildsys.core import gpu, toolchain
    rows = bench_recipe(recipe, root, root / "out", threads)
    print(render(recipe.name, rows))
    target = root / "out" / recipe.name / "bench.json"
    write_json(target, recipe.name, rows, {"buildsys": __version__, "cpu": toolchain.cpu(), "gpu": gpu.gpu(),
                                           "threads": threads or os.cpu_count(),
                                           "tools": toolchain.versions(("torch", "onnxruntime", "numpy"))})
    print(f"written: {target}", file=sys.stderr)
    return target
