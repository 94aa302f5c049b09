"""engine[torchscript]: the PyTorch model compiled to TorchScript (.pt), checked against eager.

`mode: script` compiles the model's code with torch.jit.script; `mode: trace`
records it at the opt shape and re-traces at min, opt and max to prove the
recording holds there (torch.jit.trace's check_inputs). The saved file is then
loaded back with torch.jit.load and compared with the PyTorch reference at every
shape point and sample, under the fp32 tolerance.

Compilation runs in a fresh interpreter with a fixed string-hash seed.
TorchScript names each class it compiles in a process-wide registry and mangles
a name seen before (`___torch_mangle_7`), so in a long-lived worker the bytes
would depend on what the worker compiled earlier; and it writes class constants
in set order, which Python's per-process hash seed shuffles. The source-location
records (`*.debug_pkl`: absolute paths and line numbers) are dropped, so the same
model gives the same bytes in any checkout and a comment edit is cut off.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
import zipfile
from pathlib import Path
from typing import Any

from buildsys.core.errors import StepError
from buildsys.core.verdict import Verdict
from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import TorchScriptParams, as_dict

_EPOCH = (1980, 1, 1, 0, 0, 0)
_HINT = {"script": "torch.jit.script compiles a subset of Python; try target mode: trace",
         "trace": "the model's Python control flow depends on its input; use target mode: script"}


class TorchScriptEngine(Step[TorchScriptParams]):
    KIND = "engine-torchscript"
    PARAMS = TorchScriptParams
    VERSION = 1
    TOOLS = ("torch",)
    DISCOVERS = True

    def run(self) -> StepResult:
        import torch

        out = self.ctx.output("engine")
        deps = self._compile_in_child(out)
        torch.set_num_threads(self.ctx.threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
                module = torch.jit.load(str(out), map_location="cpu")
        except Exception as exc:  # TorchScript's loader raises RuntimeError and its own kinds
            raise StepError(f"the saved TorchScript file does not load: {_first_lines(exc)}") from None
        module.eval()
        doc = self._parity(module)
        doc["candidate"] = out.name
        self.ctx.output("result").write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n")
        mode = self.params.target.mode
        summary = f"{mode}, {file_size(out)}: {doc['summary']}"
        print(summary)
        return StepResult(deps=deps, verdict=Verdict(Verdict.read(doc).passed, summary), summary=summary)

    def _compile_in_child(self, out: Path) -> dict[str, dict[str, str]]:
        """Run `compile_model` in a fresh interpreter; its output goes to this step's log."""
        with tempfile.TemporaryDirectory(prefix="torchscript-", dir=self.ctx.scratch) as tmp:
            request = Path(tmp) / "request.json"
            answer = Path(tmp) / "answer.json"
            request.write_text(json.dumps({
                "params": self.slice, "workspace": str(self.ctx.workspace),
                "files": {k: str(v) for k, v in self.ctx.files.items()}, "out": str(out),
                "threads": self.ctx.threads, "answer": str(answer)}))
            sys.stdout.flush()
            sys.stderr.flush()
            proc = subprocess.run([sys.executable, "-m", "buildsys.steps.engine_torchscript", str(request)],
                                  cwd=self.ctx.workspace, env=_child_env(), stdin=subprocess.DEVNULL)
            reply = json.loads(answer.read_text()) if answer.is_file() else None
        if reply is None:
            raise StepError(f"the TorchScript compiler process ended with status {proc.returncode} "
                            "before answering", hint="its output is in the step's log")
        if "bug" in reply:
            raise RuntimeError(f"compiling in the child interpreter failed:\n{reply['bug']}")
        if "error" in reply:
            raise StepError(reply["error"], hint=reply.get("hint"), field=reply.get("field"))
        return reply["deps"]

    def _parity(self, module) -> dict[str, Any]:
        import torch

        from buildsys.core.numerics import compare_outputs
        from buildsys.steps.modelload import flatten_outputs
        from buildsys.steps.reference import read_reference

        p = self.params
        tol = as_dict(p.tolerances["fp32"])  # as the numerics read it and the result file records it
        manifest, arrays = read_reference(self.ctx.inputs["reference"])
        results, failed = [], []
        for entry in manifest:
            feeds = [torch.from_numpy(arrays[entry["inputs"][spec.name]]) for spec in p.inputs]
            row = {"point": entry["point"], "sample": entry["sample"],
                   "shapes": {spec.name: list(f.shape) for spec, f in zip(p.inputs, feeds)},
                   "outputs": {}, "error": None}
            results.append(row)
            try:
                with torch.inference_mode():
                    got = flatten_outputs(module(*feeds))
            except Exception as exc:  # a TorchScript interpreter error; report it at its point
                row["error"] = " ".join(str(exc).split())[:800]
                failed.append(f"{entry['point']}: the TorchScript module failed: {row['error'][:300]}")
                continue
            if len(got) != len(p.outputs):
                row["error"] = f"the module returned {len(got)} tensors, the recipe names {len(p.outputs)} outputs"
                failed.append(f"{entry['point']}: {row['error']}")
                continue
            refs = {name: arrays[entry["outputs"][name]] for name in p.outputs}
            gots = {name: value.detach().cpu().numpy() for name, value in zip(p.outputs, got)}
            row["outputs"] = compare_outputs(refs, gots, tol, p.parity.unordered)
            failed += [f"{entry['point']} {name}: {'; '.join(m['failures'])}"
                       for name, m in row["outputs"].items() if not Verdict.from_json(m)]
        passed = not failed
        worst = max((m.get("max_abs", 0.0) for r in results for m in r["outputs"].values()), default=0.0)
        points = sorted({r["point"] for r in results}, key=lambda pt: {"min": 0, "opt": 1, "max": 2}.get(pt, 3))
        summary = (f"matches eager at {', '.join(points)} (max abs error {worst:.3g})" if passed
                   else "parity FAILED: " + " | ".join(failed[:4]))
        return {"precision": "fp32", "tolerance": tol, "results": results,
                **Verdict(passed, summary, tuple(failed)).to_json()}


# -- in the child interpreter -------------------------------------------------------


def compile_model(params: dict[str, Any], workspace: Path, files: dict[str, Path], out: Path):
    """Load, compile and save the model; return the discovered dependencies."""
    import torch

    from buildsys.steps.modelload import example_inputs, load_model

    model, deps = load_model(params, workspace, files)
    mode = params["target"]["mode"]
    if mode == "script":
        compiled = _script(model)
    else:
        points = [example_inputs(params, workspace, point) for point in ("min", "opt", "max")]
        compiled = _trace(model, points[1], points)
    buf = io.BytesIO()
    torch.jit.save(compiled, buf)
    write_without_debug_records(buf.getvalue(), out)
    return deps


def _script(model):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still supported
        try:
            return torch.jit.script(model)
        except Exception as exc:  # the frontend raises NotSupportedError, RuntimeError, and more
            raise StepError(f"torch.jit.script cannot compile the model: {_first_lines(exc)}",
                            field="targets", hint=_HINT["script"]) from None


def _trace(model, example: tuple, check: list[tuple]):
    import torch

    from buildsys.steps.diagnose import TRACER_FREEZING

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_inputs=check)
            error = None
        except torch.jit.TracingCheckError as exc:
            error = " ".join(_first_lines(exc, 2).split())
        except Exception as exc:  # the tracer raises RuntimeError, TypeError, ... for what it cannot record
            raise StepError(f"torch.jit.trace cannot record the model: {_first_lines(exc)}",
                            field="targets", hint=_HINT["trace"]) from None
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for w in tracer:
        print(f"TracerWarning: {w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}", flush=True)
    # A tensor turned into a Python value freezes a branch or a size at the traced input.
    frozen = [w for w in tracer if any(t in str(w.message) for t in TRACER_FREEZING)]
    where = (f" ({Path(frozen[0].filename).name}:{frozen[0].lineno}: "
             f"{str(frozen[0].message).split('. ')[0].rstrip('.')})" if frozen else "")
    if error is not None:
        raise StepError(f"the trace does not hold at every shape point (checked at min, opt, max): {error}{where}",
                        field="targets", hint=_HINT["trace"])
    if frozen:
        raise StepError(f"the tracer froze a value into the graph{where}"
                        + (f" (and {len(frozen) - 1} more)" if len(frozen) > 1 else ""),
                        field="targets", hint=_HINT["trace"])
    return traced


def write_without_debug_records(data: bytes, out: Path) -> None:
    """Rewrite a TorchScript archive without its `*.debug_pkl` records, with fixed timestamps.

    The archive's serialization id hashes every record, the dropped ones too, so
    it is recomputed from the records kept (same form: 40 decimal digits).
    """
    import hashlib

    with zipfile.ZipFile(io.BytesIO(data)) as src:
        records = [(i.filename, src.read(i)) for i in src.infolist() if not i.filename.endswith(".debug_pkl")]
    h = hashlib.sha256()
    for name, body in records:
        if not name.endswith("/.data/serialization_id"):
            h.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    ident = b"%040d" % (int.from_bytes(h.digest(), "big") % 10**40)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name, body in records:
            body = ident if name.endswith("/.data/serialization_id") else body
            dst.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), body)


def file_size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _first_lines(exc: BaseException, n: int = 6) -> str:
    lines = [line.rstrip() for line in str(exc).strip().splitlines() if line.strip()]
    text = "\n".join(lines[:n]) if lines else type(exc).__name__
    return text[:1200]


def _child_env() -> dict[str, str]:
    """The worker's environment (buildsys is importable the way the worker imported it), unbuffered."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # torch.jit.script walks sets of attribute names (a module's __constants__): with
    # Python's per-process string hashing, the class source's line order would vary.
    env["PYTHONHASHSEED"] = "0"
    env.pop("BUILDSYS_WORKER_FD", None)  # the worker's channel to the orchestrator is not the child's
    return env


def _child_main(request_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    warnings.filterwarnings("ignore", message="`torch.jit", category=DeprecationWarning)  # deprecated, supported
    import torch

    torch.set_num_threads(req["threads"])
    try:
        deps = compile_model(req["params"], Path(req["workspace"]),
                             {k: Path(v) for k, v in req["files"].items()}, Path(req["out"]))
        answer = {"deps": deps}
    except StepError as exc:
        answer = {"error": exc.message, "hint": exc.hint, "field": exc.field}
    except Exception:  # a bug: the worker re-raises it with this traceback
        answer = {"bug": traceback.format_exc()}
    Path(req["answer"]).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
