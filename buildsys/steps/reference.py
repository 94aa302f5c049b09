"""reference: PyTorch outputs on the seeded parity inputs at every shape point.

Inputs from `npy` files are fitted to each shape point by `inputs.FIT_RULE`
(first entries along a named dim, or repeats), and the step's note says how.
Stored with the inputs in one `.npz` (written with fixed zip timestamps, so the
same outputs give the same bytes), which lets parity run without torch.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from buildsys.steps.base import Step, StepResult
from buildsys.steps.params import ReferenceParams

_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict) -> None:
    """np.savez, but byte-for-byte reproducible."""
    import numpy as np

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[key]), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH), buf.getvalue())


def read_reference(path: Path):
    """(manifest, arrays) of a reference file: manifest lists each sample's keys."""
    import numpy as np

    data = np.load(path, allow_pickle=False)
    manifest = json.loads(bytes(data["manifest"]).decode())
    return manifest, data


class ReferenceOutputs(Step[ReferenceParams]):
    KIND = "reference"
    PARAMS = ReferenceParams
    VERSION = 3  # 3: images as parity data (seeded views)
    TOOLS = ("torch", "numpy")
    DISCOVERS = True

    def run(self) -> StepResult:
        import copy

        import numpy as np
        import torch

        from buildsys.steps.export import outputs_mismatch
        from buildsys.steps.inputs import fit_notes, parity_inputs
        from buildsys.steps.modelload import flatten_outputs, load_model

        torch.set_num_threads(self.ctx.threads)
        p = self.params
        pristine, deps = load_model(self.slice, self.ctx.workspace, self.ctx.files)
        arrays, manifest, fits = {}, [], []
        for point in p.parity.points:
            # A model may change itself when it runs (a window size clamped to a small
            # input, a cache filled): every point starts from the model as built.
            for sample in range(p.parity.samples):
                model = copy.deepcopy(pristine)
                inputs = parity_inputs(self.slice, self.ctx.workspace, point, sample)
                fits += [f for f in fit_notes(self.slice, self.ctx.workspace, point, sample) if f not in fits]
                tag = f"{point}.{sample}"
                with torch.inference_mode():
                    try:
                        result = model(*(torch.from_numpy(inputs[i.name]) for i in p.inputs))
                    except Exception as exc:
                        raise model_failed("the PyTorch model", point, inputs, p.dims, p.parity.shapes, exc) from None
                outs = flatten_outputs(result)
                if len(outs) != len(p.outputs):
                    raise outputs_mismatch(len(outs), len(p.outputs))
                entry: dict[str, Any] = {"point": point, "sample": sample, "inputs": {}, "outputs": {}}
                for j, spec in enumerate(p.inputs):
                    key = f"{tag}.in{j}"
                    arrays[key] = inputs[spec.name]
                    entry["inputs"][spec.name] = key
                for j, name in enumerate(p.outputs):
                    key = f"{tag}.out{j}"
                    arrays[key] = outs[j].detach().cpu().numpy()
                    entry["outputs"][name] = key
                manifest.append(entry)
        arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
        write_npz(self.ctx.output("reference"), arrays)
        note = ""
        if fits:
            # The same arrays feed every parity and engine check: said once, here.
            note = "npy data fitted to the shape points (first entries, or repeated): " + "; ".join(fits)
            print(note, flush=True)
        return StepResult(deps=deps, note=note,
                          summary=f"{len(manifest)} samples at {', '.join(p.parity.points)}")


def model_failed(what: str, point: str, inputs: dict, dims: dict, drawn: dict[str, dict[str, int]], exc: Exception):
    """The reference model raised at a shape point; at a seeded random shape, how to keep it to the sizes it takes."""
    from buildsys.core.errors import StepError

    shapes = {k: list(v.shape) for k, v in inputs.items()}
    message = f"{what} failed at the {point} shape {shapes}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if point not in drawn:
        return StepError(message, field="dims")
    sizes = drawn[point]
    corners = {n: {_sizes(d)[p] for p in ("min", "opt", "max")} for n, d in dims.items()}
    name = next((n for n, s in sizes.items() if s not in corners.get(n, ())), next(iter(sizes)))
    d = _sizes(dims[name])
    return StepError(f"{message}\n  {point} is a seeded random shape inside the declared ranges "
                     f"({', '.join(f'{n} {s}' for n, s in sizes.items())})", field="dims",
                     hint=f"if the model takes only some sizes, say which in the dim, e.g. dims.{name}: "
                          f"{{min: {d['min']}, opt: {d['opt']}, max: {d['max']}, multiple_of: 8}}; or set "
                          "parity.random_shapes: 0 to check only at min, opt and max")


def _sizes(d) -> dict[str, int]:
    return d if isinstance(d, dict) else {"min": d.min, "opt": d.opt, "max": d.max}


def write_reference_outputs(p: dict, workspace: Path, out: Path, run) -> int:
    """Reference outputs of a model that is not PyTorch: `run(inputs)` answers one array per output.

    The same seeded inputs and manifest as ReferenceOutputs, so parity reads both alike;
    returns the number of samples written.
    """
    import numpy as np

    from buildsys.core.errors import StepError
    from buildsys.steps.export import outputs_mismatch
    from buildsys.steps.inputs import parity_inputs

    arrays, manifest = {}, []
    for point in p["parity"]["points"]:
        for sample in range(p["parity"]["samples"]):
            inputs = parity_inputs(p, workspace, point, sample)
            try:
                outs = run(inputs)
            except StepError:
                raise
            except Exception as exc:
                raise model_failed("the model", point, inputs, p["dims"], p["parity"].get("shapes", {}), exc) from None
            if len(outs) != len(p["outputs"]):
                raise outputs_mismatch(len(outs), len(p["outputs"]))
            entry = {"point": point, "sample": sample, "inputs": {}, "outputs": {}}
            for j, spec in enumerate(p["inputs"]):
                entry["inputs"][spec["name"]] = key = f"{point}.{sample}.in{j}"
                arrays[key] = inputs[spec["name"]]
            for j, name in enumerate(p["outputs"]):
                entry["outputs"][name] = key = f"{point}.{sample}.out{j}"
                arrays[key] = np.asarray(outs[j])
            manifest.append(entry)
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    write_npz(out, arrays)
    return len(manifest)
