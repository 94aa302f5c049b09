"""engine[tensorrt-*]: a serialized TensorRT engine (.plan) built through Polygraphy, and its parity.

The recipe's target becomes builder settings in a pure function
(`builder_settings`), testable without TensorRT; `engine_loader` turns those
settings into Polygraphy's loaders (NetworkFromOnnxPath → CreateConfig →
EngineFromNetwork), the only place that imports polygraphy's TensorRT backend.

Every precision but `best` builds a strongly typed network, whose types are the
model's own: TensorRT 11 builds nothing else, and TensorRT 10 recommends it for
explicitly quantized models. So one recipe gives the same engine on both majors:
  fp32  the fp32 model, TF32 off (fp32 tolerances are tighter than TF32's 10-bit mantissa)
  fp16  the fp16 ONNX of convert[fp16] (float32 inputs and outputs kept), TF32 allowed
        for what stayed fp32; its parity on the CPU is parity[fp16]
  int8  the Q/DQ model of quantize[tensorrt], TF32 allowed; TensorRT >= 10 deprecated
        implicit calibration and the INT8 flag, so there is no calibrator here
  best  FP16 + INT8 + TF32 flags on a weakly typed network (trtexec's --best): TensorRT 10
        only; INT8 kernels are taken where the model carries Q/DQ scales (a QAT model)

The timing cache is persisted per GPU and TensorRT version under
out/.buildsys/tensorrt/. It decides which tactics are re-timed, not what the
engine computes, so like a compiler cache it stays out of the step's key.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.core import gpu
from buildsys.core.canonical import digest_data
from buildsys.core.errors import StepError
from buildsys.core.verdict import Verdict
from buildsys.recipe.model import Dim, InputSpec, Tolerance
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import OrtGpuParams, TensorRTParams, as_dict, from_slice

Shape = tuple[int, ...]
# Distributions that can provide the `tensorrt` module; the meta package first.
TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")
TIMING_DIR = ("out", ".buildsys", "tensorrt")
_CU_SUFFIX = re.compile(r"-cu(\d+)(?:-|$)")
FLAGLESS_MAJOR = 11  # TensorRT 11 removed BuilderFlag.FP16/INT8: strongly typed networks only


@dataclass(frozen=True)
class BuilderSettings:
    """What TensorRT is asked to build, decided from the recipe alone."""

    # one optimization profile per recipe profile: input name -> (min, opt, max) shape
    profiles: tuple[dict[str, tuple[Shape, Shape, Shape]], ...]
    fp16: bool
    int8: bool
    tf32: bool
    strongly_typed: bool
    workspace: int | None  # bytes of the WORKSPACE memory pool; None: TensorRT's default
    timing_cache: Path


def profile_shapes(inputs: tuple[InputSpec, ...],
                   profile: dict[str, Dim]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Each input's (min, opt, max) shape: fixed sizes as written, dim names from the profile."""
    shapes = {}
    for spec in inputs:
        low, opt, high = (tuple(s if isinstance(s, int) else profile[s].at(point) for s in spec.shape)
                          for point in ("min", "opt", "max"))
        shapes[spec.name] = (low, opt, high)
    return shapes


def precision_flags(precision: str, tensorrt_major: int) -> dict[str, bool]:
    """Builder flags of a target precision (see the module docstring for the choices)."""
    if precision != "best":
        return {"fp16": False, "int8": False, "tf32": precision != "fp32", "strongly_typed": True}
    if tensorrt_major >= FLAGLESS_MAJOR:
        raise StepError(f"TensorRT {tensorrt_major} builds strongly typed networks only, and precision best "
                        "asks for precision flags", field="targets",
                        hint="use precision fp16 (built from an fp16 ONNX) or int8 (from the Q/DQ model), "
                             f"or install TensorRT 10 ({INSTALL})")
    return {"fp16": True, "int8": True, "tf32": True, "strongly_typed": False}


def builder_settings(params: TensorRTParams, timing_cache: Path, tensorrt_version: str = "10") -> BuilderSettings:
    """The builder configuration of an engine step's params (resolve._engine's slice of the recipe)."""
    flags = precision_flags(params.target.precision, _major(tensorrt_version))
    profiles = tuple(profile_shapes(params.inputs, profile) for profile in params.profiles)
    return BuilderSettings(profiles=profiles, workspace=params.target.workspace, timing_cache=timing_cache, **flags)


def timing_cache_path(workspace: Path, device: dict[str, str], tensorrt_version: str) -> Path:
    """Where the timing cache of this GPU and TensorRT version lives: one file per pair."""
    tag = digest_data({"gpu": device, "tensorrt": tensorrt_version})[:16]
    return workspace.joinpath(*TIMING_DIR) / f"timing-{tag}.cache"


def engine_loader(settings: BuilderSettings, model: Path):
    """Polygraphy's loader chain for `settings`: calling it builds the engine."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile

    profiles = []
    for shapes in settings.profiles:
        profile = Profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.add(name, min=lo, opt=opt, max=hi)
        profiles.append(profile)
    pools = {trt.MemoryPoolType.WORKSPACE: settings.workspace} if settings.workspace else None
    cache = str(settings.timing_cache) if settings.timing_cache.is_file() else None
    config = CreateConfig(profiles=profiles, tf32=settings.tf32, fp16=settings.fp16, int8=settings.int8,
                          memory_pool_limits=pools, load_timing_cache=cache)
    network = NetworkFromOnnxPath(str(model), strongly_typed=settings.strongly_typed or None)
    return EngineFromNetwork(network, config=config, save_timing_cache=str(settings.timing_cache))


# TensorRT's libraries are not on PyPI: the packages there download them from NVIDIA's index at
# install time, so a plain `pip install '.[gpu]'` fails. The command that works, in every message.
NVIDIA_INDEX = "https://pypi.nvidia.com"
INSTALL = (f"its libraries come from NVIDIA's index, not PyPI: PIP_EXTRA_INDEX_URL={NVIDIA_INDEX} make GPU=1 "
           f"(or pip install --extra-index-url {NVIDIA_INDEX} '.[gpu]')")


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot be loaded here, or None; asks no GPU and imports nothing.

    `make` leaves a note when it could not install the GPU packages. The
    `tensorrt` module (the bindings) can be present without its libraries: the
    libraries package is a placeholder that downloads from NVIDIA's index at
    install time, and where that index cannot be reached only the bindings land.
    """
    note = gpu.packages_note()
    if note:
        return note
    if importlib.util.find_spec("tensorrt") is None:
        return f"TensorRT is not installed; {INSTALL}"
    if importlib.util.find_spec("tensorrt_libs") is None and not _system_nvinfer():
        version = installed_tensorrt() or ""
        return ("TensorRT's Python bindings are installed but not its libraries (no tensorrt_libs package, no "
                f"libnvinfer on the loader path): pip install --extra-index-url {NVIDIA_INDEX} "
                f"'{libs_requirement(version)}'")
    short = gpu.cuda_shortfall(cuda, f"TensorRT {installed_tensorrt()}") if (cuda := needed_cuda()) else None
    return short


def _system_nvinfer() -> bool:
    """Whether libnvinfer is on the loader path (a TensorRT installed from NVIDIA's packages or tar file)."""
    import ctypes.util

    return ctypes.util.find_library("nvinfer") is not None


def libs_requirement(version: str) -> str:
    """The libraries distribution that matches the installed TensorRT distribution."""
    from buildsys.core.toolchain import installed

    dist = next((d for d in TENSORRT_DISTS if d in installed()), "tensorrt-cu12")
    base = "tensorrt-cu12" if dist == "tensorrt" else dist
    return f"{base}-libs=={version}" if version else f"{base}-libs"


def needed_cuda() -> int | None:
    """The CUDA major the installed TensorRT and CUDA runtime wheels are built for (cu12 → 12), if named."""
    from buildsys.core.toolchain import installed

    for dist in installed():
        m = _CU_SUFFIX.search(dist)
        if m and (dist.startswith("tensorrt") or dist.startswith("nvidia-cuda-runtime")):
            return int(m[1])
    return None


def cuda_runtime_dir() -> Path | None:
    """The folder of the CUDA runtime wheel (nvidia-cuda-runtime-cuXX) that the pinned TensorRT goes with."""
    import sys

    for entry in sys.path:
        lib = Path(entry or ".") / "nvidia" / "cuda_runtime" / "lib"
        if any(lib.glob("libcudart.so*")):
            return lib
    return None


def pin_cuda_runtime() -> Path | None:
    """Make Polygraphy load the CUDA runtime of the pinned wheel, not the first libcudart it meets.

    Polygraphy looks in LD_LIBRARY_PATH, then /usr/local/cuda/lib64, /usr/lib and
    /lib before the wheel; a system toolkit newer than the driver then stops every
    CUDA call with error 35. Its wrapper is made once per process, here, with the
    wheel's folder first on its search path. Returns the folder used, if any.
    """
    import os

    from polygraphy import cuda

    folder = cuda_runtime_dir()
    if folder is None:
        return None
    saved = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(folder), *([saved] if saved else [])])
    try:
        cuda.wrapper()
    finally:
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved
    return folder


def installed_tensorrt() -> str | None:
    """TensorRT's version from its distribution metadata, without importing it."""
    from buildsys.core.toolchain import installed

    have = installed()
    return next((have[d] for d in TENSORRT_DISTS if d in have), None)


def qdq_nodes(model: Path) -> int:
    """How many QuantizeLinear/DequantizeLinear nodes the model's main graph has."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)


class TensorRTEngine(Step[TensorRTParams]):
    KIND = "engine-tensorrt"
    VERSION = 1
    TOOLS = (*TENSORRT_DISTS, "polygraphy", "onnx", "numpy")
    PARAMS = TensorRTParams
    DEVICE = "gpu"  # the engine is tuned for, and runs only on, this GPU model and compute capability

    @classmethod
    def unavailable(cls, params: dict[str, Any]) -> str | None:
        reason = gpu.absent_reason() or tensorrt_missing()
        if reason:
            return reason
        version = installed_tensorrt()
        if version and _major(version) >= FLAGLESS_MAJOR and from_slice(cls.PARAMS, params).target.precision == "best":
            return (f"TensorRT {version} builds strongly typed networks only; precision best needs "
                    f"TensorRT 10 ({INSTALL}), or use fp16 or int8")
        return None

    def run(self) -> StepResult:
        p = self.params
        precision = p.target.precision
        model = self.ctx.inputs["model"]
        quantized = qdq_nodes(model)
        if precision == "int8" and not quantized:
            raise StepError(f"precision int8 needs an explicitly quantized (Q/DQ) model; {model.name} has no "
                            "QuantizeLinear/DequantizeLinear node", field="targets",
                            hint="TensorRT >= 10 deprecated implicit calibration: build the int8 target from the "
                                 "quantize[tensorrt] step's model, or give the recipe a QAT model")
        version = import_tensorrt()
        short = gpu.cuda_shortfall(cuda, f"TensorRT {version}") if (cuda := needed_cuda()) else None
        if short:
            raise StepError(f"TensorRT cannot run here: {short}",
                            hint="update the NVIDIA driver, or install the TensorRT build for the driver's CUDA")
        try:
            pin_cuda_runtime()
        except Exception as exc:
            raise gpu.failure("the CUDA runtime could not be loaded", exc, needed_cuda()) from None
        settings = builder_settings(p, timing_cache_path(self.ctx.workspace, gpu.gpu(), version), version)
        settings.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        out = self.ctx.output("engine")
        engine = self._build(settings, model, out)
        doc = self._parity(engine, as_dict(target_tolerance(p)))
        doc.update(candidate=out.name, model=model.name, tensorrt=version,
                   builder={"fp16": settings.fp16, "int8": settings.int8, "tf32": settings.tf32,
                            "strongly_typed": settings.strongly_typed, "workspace": settings.workspace,
                            "profiles": len(settings.profiles), "qdq_nodes": quantized})
        self.ctx.output("result").write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n")
        kernels = "+".join(k for k in ("fp16", "int8", "tf32") if getattr(settings, k)) or "fp32"
        n = len(settings.profiles)
        head = f"{precision} ({kernels}, {n} profile{'s' if n != 1 else ''}, {file_size(out)})"
        summary = f"{head}: {doc['summary']}"
        print(summary)
        return StepResult(verdict=Verdict(Verdict.read(doc).passed, summary), summary=summary)

    def _build(self, settings: BuilderSettings, model: Path, out: Path):
        from polygraphy.backend.trt import SaveEngine
        from polygraphy.exception import PolygraphyException

        try:
            return SaveEngine(engine_loader(settings, model), path=str(out))()
        except Exception as exc:  # TensorRT's errors have no common base; a CUDA failure is a TypeError
            if not isinstance(exc, (PolygraphyException, RuntimeError)) and gpu.failure_cause(str(exc)) is None:
                raise
            raise gpu.failure("TensorRT could not build the engine", exc, needed_cuda()) from None

    def _parity(self, engine, tol: dict[str, Any]) -> dict[str, Any]:
        """The engine on the reference inputs at every shape point (profile 0 holds them all)."""
        from polygraphy.backend.trt import TrtRunner
        from polygraphy.datatype import DataType

        from buildsys.core.numerics import compare_outputs
        from buildsys.steps.reference import read_reference

        p = self.params
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        results, failed = [], []
        runner = TrtRunner(engine, optimization_profile=0)
        try:
            runner.activate()
        except Exception as exc:
            raise gpu.failure("TensorRT could not load the engine to check it", exc, needed_cuda()) from None
        try:
            meta = runner.get_input_metadata()
            for entry in manifest:
                feeds = {name: arrays[key].astype(DataType.to_dtype(meta[name].dtype, "numpy"))
                         for name, key in entry["inputs"].items() if name in meta}
                row = {"point": entry["point"], "sample": entry["sample"],
                       "shapes": {k: list(v.shape) for k, v in feeds.items()}, "outputs": {}, "error": None}
                results.append(row)
                try:
                    got = runner.infer(feeds)
                except Exception as exc:  # TensorRT's and Polygraphy's errors have no common base
                    if gpu.failure_cause(str(exc)) is not None:  # the GPU failed, not the engine
                        raise gpu.failure(f"TensorRT failed at {entry['point']}", exc, needed_cuda()) from None
                    row["error"] = " ".join(str(exc).split())[:800]
                    failed.append(f"{entry['point']}: TensorRT failed: {row['error'][:300]}")
                    continue
                missing = [name for name in p.outputs if name not in got]
                if missing:
                    row["error"] = f"the engine has no output {missing[0]!r} (it has {sorted(got)})"
                    failed.append(f"{entry['point']}: {row['error']}")
                    continue
                refs = {name: arrays[entry["outputs"][name]] for name in p.outputs}
                gots = {name: got[name] for name in p.outputs}
                row["outputs"] = compare_outputs(refs, gots, tol, p.parity.unordered)
                failed += [f"{entry['point']} {name}: {'; '.join(m['failures'])}"
                           for name, m in row["outputs"].items() if not Verdict.from_json(m)]
        finally:
            runner.deactivate()
        return parity_document(p.target.precision, tol, results, failed)


def parity_document(precision: str, tol: dict[str, Any], results: list[dict], failed: list[str]) -> dict[str, Any]:
    """The parity result, shaped like parity.py's, with a one-line summary."""
    passed = not failed
    worst = max((m.get("max_abs", 0.0) for r in results for m in r["outputs"].values()), default=0.0)
    # the drawn points (random1, random2, ...) after min, opt and max, in their order: the same summary every run
    points = sorted({r["point"] for r in results}, key=lambda pt: ({"min": 0, "opt": 1, "max": 2}.get(pt, 3), pt))
    summary = (f"parity passed at {', '.join(points)} (max abs error {worst:.3g})" if passed
               else "parity FAILED: " + " | ".join(failed[:4]))
    return {"precision": precision, "tolerance": tol, "results": results,
            **Verdict(passed, summary, tuple(failed)).to_json()}


def target_tolerance(params: OrtGpuParams) -> Tolerance:
    """The precision's tolerance; `best` is judged by fp16's (what resolve passes for it)."""
    tols = params.tolerances
    precision = params.target.precision
    if precision in tols:
        return tols[precision]
    if len(tols) == 1:
        return next(iter(tols.values()))
    raise KeyError(f"no tolerance for precision {precision!r} in {sorted(tols)}")


def import_tensorrt() -> str:
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:
        raise StepError(f"TensorRT cannot be imported: {exc}",
                        hint=f"reinstall it: {INSTALL}") from None
    return trt.__version__


def file_size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0
