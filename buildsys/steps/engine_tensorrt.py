"""engine[tensorrt-*]: a serialized TensorRT engine (.plan) built through Polygraphy, and its parity.

The recipe's target becomes builder settings in a pure function
(`builder_settings`), testable without TensorRT; `engine_loader` turns those
settings into Polygraphy's loaders (NetworkFromOnnxPath → CreateConfig →
EngineFromNetwork), the only place that imports polygraphy's TensorRT backend.

Precisions, on TensorRT 10 (weakly typed networks, precision flags):
  fp32  no reduced precision, TF32 off (fp32 tolerances are tighter than TF32's 10-bit mantissa)
  fp16  FP16 + TF32 kernels allowed
  int8  INT8 + TF32, only for an explicitly quantized (Q/DQ) model: TensorRT >= 10
        deprecated implicit calibration, so there is no calibrator here
  best  FP16 + INT8 + TF32 (trtexec's --best): INT8 kernels are taken only where the
        model carries Q/DQ scales (a QAT model); on a plain fp32 model it is fp16
On TensorRT >= 11, which removed the precision flags, networks are strongly typed:
fp32 and int8 (the Q/DQ model) build as written; fp16 and best are unavailable.

The timing cache is persisted per GPU and TensorRT version under
out/.buildsys/tensorrt/. It decides which tactics are re-timed, not what the
engine computes, so like a compiler cache it stays out of the step's key.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys import gpu
from buildsys.canonical import digest_data
from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult

Shape = tuple[int, ...]
# Distributions that can provide the `tensorrt` module; the meta package first.
TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")
TIMING_DIR = ("out", ".buildsys", "tensorrt")
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


def profile_shapes(inputs: list[dict[str, Any]],
                   profile: dict[str, dict[str, int]]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Each input's (min, opt, max) shape: fixed sizes as written, dim names from the profile."""
    shapes = {}
    for spec in inputs:
        shapes[spec["name"]] = tuple(
            tuple(s if isinstance(s, int) else profile[s][point] for s in spec["shape"])
            for point in ("min", "opt", "max"))
    return shapes


def precision_flags(precision: str, tensorrt_major: int) -> dict[str, bool]:
    """Builder flags of a target precision (see the module docstring for the choices)."""
    if tensorrt_major >= FLAGLESS_MAJOR:
        if precision in ("fp16", "best"):
            raise StepError(f"TensorRT {tensorrt_major} builds strongly typed networks only: precision {precision} "
                            "needs an fp16 ONNX model, which buildsys does not produce", field="targets",
                            hint="install TensorRT 10 (pip install '.[gpu]'), or use precision fp32 or int8")
        return {"fp16": False, "int8": False, "tf32": precision != "fp32", "strongly_typed": True}
    return {"fp16": precision in ("fp16", "best"), "int8": precision in ("int8", "best"),
            "tf32": precision != "fp32", "strongly_typed": False}


def builder_settings(params: dict[str, Any], timing_cache: Path, tensorrt_version: str = "10") -> BuilderSettings:
    """The builder configuration of an engine step's params (resolve._engine's slice of the recipe)."""
    target = params["target"]
    flags = precision_flags(target["precision"], _major(tensorrt_version))
    profiles = tuple(profile_shapes(params["inputs"], profile) for profile in params["profiles"])
    return BuilderSettings(profiles=profiles, workspace=target.get("workspace"), timing_cache=timing_cache, **flags)


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


def installed_tensorrt() -> str | None:
    """TensorRT's version from its distribution metadata, without importing it."""
    from buildsys.toolchain import installed

    have = installed()
    return next((have[d] for d in TENSORRT_DISTS if d in have), None)


def qdq_nodes(model: Path) -> int:
    """How many QuantizeLinear/DequantizeLinear nodes the model's main graph has."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)


class TensorRTEngine(Step):
    KIND = "engine-tensorrt"
    VERSION = 1
    TOOLS = (*TENSORRT_DISTS, "polygraphy", "onnx", "numpy")
    DEVICE = "gpu"  # the engine is tuned for, and runs only on, this GPU model and compute capability

    @classmethod
    def unavailable(cls, params: dict[str, Any]) -> str | None:
        reason = gpu.absent_reason()
        if reason:
            return reason
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed (pip install '.[gpu]')"
        version = installed_tensorrt()
        precision = params["target"]["precision"]
        if version and _major(version) >= FLAGLESS_MAJOR and precision in ("fp16", "best"):
            return (f"TensorRT {version} builds strongly typed networks only; precision {precision} needs "
                    "TensorRT 10 (pip install '.[gpu]')")
        return None

    def run(self) -> StepResult:
        p = self.params
        precision = p["target"]["precision"]
        model = self.ctx.inputs["model"]
        quantized = qdq_nodes(model)
        if precision == "int8" and not quantized:
            raise StepError(f"precision int8 needs an explicitly quantized (Q/DQ) model; {model.name} has no "
                            "QuantizeLinear/DequantizeLinear node", field="targets",
                            hint="TensorRT >= 10 deprecated implicit calibration: build the int8 target from the "
                                 "quantize[tensorrt] step's model, or give the recipe a QAT model")
        version = _import_tensorrt()
        settings = builder_settings(p, timing_cache_path(self.ctx.workspace, gpu.gpu(), version), version)
        settings.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        out = self.ctx.output("engine")
        engine = self._build(settings, model, out)
        doc = self._parity(engine, _tolerance(p))
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
        return StepResult(verdict={"passed": doc["passed"], "summary": summary}, summary=summary)

    def _build(self, settings: BuilderSettings, model: Path, out: Path):
        from polygraphy.backend.trt import SaveEngine
        from polygraphy.exception import PolygraphyException

        try:
            return SaveEngine(engine_loader(settings, model), path=str(out))()
        except (PolygraphyException, RuntimeError) as exc:
            text = " ".join(str(exc).split())[:600]
            raise StepError(f"TensorRT could not build the engine: {text}",
                            hint="TensorRT's own messages are in the step's log") from None

    def _parity(self, engine, tol: dict[str, Any]) -> dict[str, Any]:
        """The engine on the reference inputs at every shape point (profile 0 holds them all)."""
        from polygraphy.backend.trt import TrtRunner
        from polygraphy.datatype import DataType

        from buildsys.numerics import compare
        from buildsys.steps.reference import read_reference

        p = self.params
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        results, failed = [], []
        with TrtRunner(engine, optimization_profile=0) as runner:
            meta = runner.get_input_metadata()
            for entry in manifest:
                feeds = {name: arrays[key].astype(DataType.to_dtype(meta[name].dtype, "numpy"), copy=False)
                         for name, key in entry["inputs"].items() if name in meta}
                row = {"point": entry["point"], "sample": entry["sample"],
                       "shapes": {k: list(v.shape) for k, v in feeds.items()}, "outputs": {}, "error": None}
                results.append(row)
                try:
                    got = runner.infer(feeds)
                except Exception as exc:  # TensorRT's and Polygraphy's errors have no common base
                    row["error"] = " ".join(str(exc).split())[:800]
                    failed.append(f"{entry['point']}: TensorRT failed: {row['error'][:300]}")
                    continue
                for name in p["outputs"]:
                    if name not in got:
                        row["error"] = f"the engine has no output {name!r} (it has {sorted(got)})"
                        failed.append(f"{entry['point']}: {row['error']}")
                        continue
                    m = compare(arrays[entry["outputs"][name]], got[name], tol)
                    row["outputs"][name] = m
                    if not m["passed"]:
                        failed.append(f"{entry['point']} {name}: {'; '.join(m['failures'])}")
        return _document(p["target"]["precision"], tol, results, failed)


def _document(precision: str, tol: dict[str, Any], results: list[dict], failed: list[str]) -> dict[str, Any]:
    """The parity result, shaped like parity.py's, with a one-line summary."""
    passed = not failed
    worst = max((m.get("max_abs", 0.0) for r in results for m in r["outputs"].values()), default=0.0)
    points = sorted({r["point"] for r in results}, key=lambda pt: {"min": 0, "opt": 1, "max": 2}.get(pt, 3))
    summary = (f"parity passed at {', '.join(points)} (max abs error {worst:.3g})" if passed
               else "parity FAILED: " + " | ".join(failed[:4]))
    return {"precision": precision, "tolerance": tol, "passed": passed, "failures": failed,
            "results": results, "summary": summary}


def _tolerance(params: dict[str, Any]) -> dict[str, Any]:
    """The precision's tolerance; `best` is judged by fp16's (what resolve passes for it)."""
    tols = params["tolerances"]
    precision = params["target"]["precision"]
    if precision in tols:
        return tols[precision]
    if len(tols) == 1:
        return next(iter(tols.values()))
    raise KeyError(f"no tolerance for precision {precision!r} in {sorted(tols)}")


def _import_tensorrt() -> str:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise StepError(f"TensorRT cannot be imported: {exc}",
                        hint="reinstall it with pip install '.[gpu]'; its libraries come from NVIDIA's index") from None
    return trt.__version__


def file_size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0
