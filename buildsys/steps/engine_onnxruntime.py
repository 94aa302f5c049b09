"""engine[onnxruntime-*]: an ORT-format model optimised for this CPU, proven to load and run; and
ONNX Runtime on the GPU (the cuda and tensorrt providers), proven within tolerance of the reference."""
from __future__ import annotations

import json
from pathlib import Path

from buildsys.core.errors import StepError
from buildsys.core.verdict import Verdict
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import OrtEngineParams, OrtGpuParams, as_dict


class OrtFormatEngine(Step[OrtEngineParams]):
    KIND = "engine-onnxruntime"
    VERSION = 2
    TOOLS = ("onnxruntime",)
    RESIDENT = True
    PARAMS = OrtEngineParams  # the target alone: what it reads is the model and the reference
    DEVICE = True  # ORT_ENABLE_ALL applies layout optimisations specific to this CPU

    def run(self) -> StepResult:
        import numpy as np

        from buildsys.core.numerics import compare_outputs
        from buildsys.steps import simplify
        from buildsys.steps.reference import read_reference
        from buildsys.steps.sessions import cpu_session, engine_options

        out = self.ctx.output("engine")
        so = engine_options(self.ctx.threads)
        src = self.ctx.inputs["model"]
        data = src.with_name(src.name + ".data")
        big = data.exists() and src.stat().st_size + data.stat().st_size > simplify.TWO_GIB
        if big:
            # The ORT format is one flatbuffer, limited to 2 GiB like a protobuf: a model
            # over it is kept as optimised ONNX with its weights beside it. A smaller model
            # whose weights lie in external data (as torch.onnx.export writes) fits.
            out = out.with_suffix(".onnx")
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                        out.name + ".data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        else:
            so.add_session_config_entry("session.save_model_format", "ORT")
        so.optimized_model_filepath = str(out)
        try:
            cpu_session(self.ctx.inputs["model"], self.ctx.threads, so)
        except Exception as exc:
            raise StepError(f"ONNX Runtime could not optimise the model: {str(exc).strip()[:500]}") from None
        if not out.exists():
            raise StepError("ONNX Runtime wrote no ORT-format model")
        # Prove the artifact works: load it back and run it once at the opt shape.
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        entry = next((e for e in manifest if e["point"] == "opt"), manifest[0])
        feeds = {name: arrays[key] for name, key in entry["inputs"].items()}
        try:
            session = cpu_session(out, self.ctx.threads)
            got = session.run(None, feeds)
        except Exception as exc:
            raise StepError(f"the ORT-format model does not run: {str(exc).strip()[:500]}") from None
        refs = {name: arrays[key] for name, key in entry["outputs"].items()}
        for (name, ref), value in zip(refs.items(), got):
            if value.shape != ref.shape or not np.isfinite(value).all():
                raise StepError(f"the ORT-format model's output {name!r} has shape {list(value.shape)} "
                                f"(reference {list(ref.shape)}) or non-finite values")
        # Information (parity judged the model): rows in any order where the recipe says so.
        figures = compare_outputs(refs, dict(zip(refs, got)), {}, self.params.parity.unordered)
        worst = max((m.get("max_abs", 0.0) for m in figures.values()), default=0.0)
        files = [out.name] + ([out.name + ".data"] if big else [])
        size = sum((out.parent / f).stat().st_size for f in files) / 2**20
        kind = "optimised ONNX with external weights (over 2 GiB)" if big else "ORT format"
        note = (f"the model is over 2 GiB, beyond the ORT format's limit: written as optimised ONNX, {out.name} "
                f"with its weights in {out.name}.data") if big else ""
        return StepResult(outputs={"engine": files}, note=note,
                          summary=f"{kind}, {size:.1f} MiB, ran at {entry['point']} (max abs error {worst:.3g})")


class _OrtGpuEngine(Step[OrtGpuParams]):
    """ONNX Runtime on one GPU provider: the model as that provider runs it, against the reference.

    The artifact is the parity result: ONNX Runtime compiles for the GPU when a
    session starts (the TensorRT provider keeps its engines in a cache folder
    named by this step's inputs), so what is proven is that the provider loads,
    runs every shape point and stays within the precision's tolerance.
    """
    PROVIDER = ""
    VERSION = 2  # 2: the CUDA provider's speed options; node placement checked and reported
    DEVICE = "gpu"
    PARAMS = OrtGpuParams

    @classmethod
    def unavailable(cls, params):
        from buildsys.core import gpu
        from buildsys.core.toolchain import installed
        from buildsys.steps.sessions import GPU_WHEEL

        reason = gpu.absent_reason()
        if reason:
            return reason
        if GPU_WHEEL not in installed():  # make's note says why, where it tried
            return gpu.packages_note() or (f"ONNX Runtime's CPU wheel is installed; the {cls.PROVIDER} provider needs {GPU_WHEEL} in its "
                    f"place (make does the swap where nvidia-smi answers: make GPU=1)")
        return None

    def providers(self, model) -> list:
        raise NotImplementedError

    def run(self) -> StepResult:
        from buildsys.core import gpu
        from buildsys.core.numerics import compare_outputs
        from buildsys.steps.engine_tensorrt import parity_document, target_tolerance
        from buildsys.steps.reference import read_reference
        from buildsys.steps.sessions import gpu_session, node_placement, placement_record, refuse_fallback

        p = self.params
        model = self.ctx.inputs["model"]
        action = f"ONNX Runtime could not start its {self.PROVIDER} provider"
        try:
            # Profiled: the profile says which provider ran each node (a partial CPU fallback shows there only).
            session = gpu_session(model, self.ctx.threads, self.providers(model),
                                  profile=self.ctx.scratch / "placement")
        except Exception as exc:
            raise gpu.failure(action, exc) from None
        refuse_fallback(session, self.PROVIDER)
        tol = as_dict(target_tolerance(p))  # as the numerics read it and the result file records it
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        results, failed = [], []
        for entry in manifest:
            feeds = {name: arrays[key] for name, key in entry["inputs"].items()}
            row = {"point": entry["point"], "sample": entry["sample"],
                   "shapes": {k: list(v.shape) for k, v in feeds.items()}, "outputs": {}, "error": None}
            results.append(row)
            try:
                got = session.run(list(p.outputs), feeds)
            except Exception as exc:
                if gpu.failure_cause(str(exc)) is not None:  # the GPU failed, not the model
                    raise gpu.failure(f"ONNX Runtime failed at {entry['point']}", exc) from None
                row["error"] = " ".join(str(exc).split())[:800]
                failed.append(f"{entry['point']}: ONNX Runtime failed: {row['error'][:300]}")
                continue
            refs = {name: arrays[entry["outputs"][name]] for name in p.outputs}
            row["outputs"] = compare_outputs(refs, dict(zip(p.outputs, got)), tol, p.parity.unordered)
            failed += [f"{entry['point']} {name}: {'; '.join(m['failures'])}"
                       for name, m in row["outputs"].items() if not Verdict.from_json(m)]
        profile = Path(session.end_profiling())
        placement = node_placement(profile)
        profile.unlink()
        allowed = tuple(p.target.cpu_nodes)
        record = placement_record(placement, allowed)
        print(f"node placement: {json.dumps(record)}")
        refuse_fallback(session, self.PROVIDER, placement, allowed)
        doc = parity_document(p.target.precision, tol, results, failed)
        doc.update(candidate=model.name, providers=list(session.get_providers()), provider=self.PROVIDER,
                   options=self.options_record(), placement=record)
        self.ctx.output("result").write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n")
        on = ", ".join(f"{n} on {k.replace('ExecutionProvider', '')}" for k, n in sorted(record["nodes"].items()))
        summary = f"{p.target.precision} on {self.PROVIDER}: {doc['summary']} (nodes: {on or 'none profiled'})"
        print(summary)
        return StepResult(verdict=Verdict(Verdict.read(doc).passed, summary), summary=summary)

    def options_record(self) -> dict:
        return {}


class OrtCudaEngine(_OrtGpuEngine):
    KIND = "engine-onnxruntime-cuda"
    PROVIDER = "cuda"
    TOOLS = ("onnxruntime", "onnxruntime-gpu", "numpy")

    def providers(self, model) -> list:
        return [("CUDAExecutionProvider", dict(self.params.provider_options or {})), "CPUExecutionProvider"]

    def options_record(self) -> dict:
        return dict(self.params.provider_options or {})


class OrtTensorRTEngine(_OrtGpuEngine):
    KIND = "engine-onnxruntime-tensorrt"
    PROVIDER = "tensorrt"
    TOOLS = ("onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu13", "tensorrt-cu12", "numpy")

    @classmethod
    def unavailable(cls, params):
        from buildsys.steps.engine_tensorrt import tensorrt_missing

        return super().unavailable(params) or tensorrt_missing()

    def providers(self, model) -> list:
        # TensorRT's libraries are loaded by its module; the provider then finds them in the process.
        from buildsys.steps.engine_tensorrt import import_tensorrt

        import_tensorrt()
        self._cache = self.cache_dir(model)
        self._cache.mkdir(parents=True, exist_ok=True)
        return [("TensorrtExecutionProvider", self.options(self._cache)),
                ("CUDAExecutionProvider", dict(self.params.provider_options or {})), "CPUExecutionProvider"]

    def options(self, cache: Path) -> dict[str, str]:
        from buildsys.steps.engine_tensorrt import profile_shapes
        from buildsys.steps.sessions import tensorrt_options

        p = self.params
        shapes = profile_shapes(p.inputs, p.profiles[0])
        return tensorrt_options(p.target.precision, shapes, cache, p.target.workspace)

    def cache_dir(self, model: Path) -> Path:
        return ort_tensorrt_cache(self.ctx.workspace, model, self.slice)

    def options_record(self) -> dict:
        return {**self.options(self._cache), "cuda": dict(self.params.provider_options or {})}


ORT_TENSORRT_DIR = ("out", ".buildsys", "onnxruntime-tensorrt")


def ort_tensorrt_cache(workspace: Path, model: Path, params: dict) -> Path:
    # `params` is the plain slice: its target and profiles name the folder as they always have
    """The TensorRT provider's cache folder: named by the model's digest, the tool versions, the GPU and the target.

    ONNX Runtime names its cached engines by a hash of the graph that omits the
    weights and the TensorRT version, so two models or two TensorRT versions can
    collide in one folder; here each key has its own folder.
    """
    from buildsys.core import gpu
    from buildsys.core.canonical import digest_data, digest_file
    from buildsys.core.toolchain import versions

    tools = versions(OrtTensorRTEngine.TOOLS)
    tag = digest_data({"model": digest_file(model), "tools": tools, "gpu": gpu.gpu(), "target": params["target"],
                       "profiles": params["profiles"]})[:16]
    return workspace.joinpath(*ORT_TENSORRT_DIR) / tag
