"""engine[onnxruntime-*]: an ORT-format model optimised for this machine, proven to load and run."""
from __future__ import annotations

from buildsys.errors import StepError
from buildsys.steps.base import Step, StepResult


class OrtFormatEngine(Step):
    KIND = "engine-onnxruntime"
    VERSION = 1
    TOOLS = ("onnxruntime",)
    DEVICE = True  # ORT_ENABLE_ALL applies layout optimisations specific to this CPU

    def run(self) -> StepResult:
        import numpy as np
        import onnxruntime as ort

        from buildsys.steps._ort import cpu_session, session_options
        from buildsys.steps.reference import read_reference

        out = self.ctx.output("engine")
        so = session_options(self.ctx.threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        src = self.ctx.inputs["model"]
        big = src.with_name(src.name + ".data").exists()
        if big:
            # The ORT format is one flatbuffer, limited to 2 GiB like a protobuf: a model
            # with external data is kept as optimised ONNX with its weights beside it.
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
        worst = 0.0
        for (name, key), value in zip(entry["outputs"].items(), got):
            ref = arrays[key]
            if value.shape != ref.shape or not np.isfinite(value).all():
                raise StepError(f"the ORT-format model's output {name!r} has shape {list(value.shape)} "
                                f"(reference {list(ref.shape)}) or non-finite values")
            worst = max(worst, float(np.abs(value.astype(np.float64) - ref).max(initial=0.0)))
        files = [out.name] + ([out.name + ".data"] if big else [])
        size = sum((out.parent / f).stat().st_size for f in files) / 2**20
        kind = "optimised ONNX with external weights (over 2 GiB)" if big else "ORT format"
        note = (f"the model is over 2 GiB, beyond the ORT format's limit: written as optimised ONNX, {out.name} "
                f"with its weights in {out.name}.data") if big else ""
        return StepResult(outputs={"engine": files}, note=note,
                          summary=f"{kind}, {size:.1f} MiB, ran at {entry['point']} (max abs error {worst:.3g})")
