"""simplify: onnxsim and/or onnxoptimizer on the exported model, in the order the recipe lists them;
each result is checked (dynamic axes still symbolic) and the last re-checked before it is kept.

A model over 2 GiB (external data) is passed through: onnxsim holds a model in
one protobuf, which cannot exceed 2 GiB. The step says so on the console and in
`build --json` (its `note`), and the passed-through graph names its own data
file (model.sim.onnx.data), so that each artifact can be copied with its data alone.

With `simplify: {fallback: true}` onnxsim runs in a child interpreter, so that an
exception, a rejected result or a crash of its native code (a segfault, an abort,
memory exhausted) leaves the exported model in place of the simplified one, and
the step says so. Without it, any of these fails the step.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from buildsys.core.errors import StepError
from buildsys.steps.base import Step, StepResult
from buildsys.steps.export import EXTERNAL_DATA_BYTES
from buildsys.steps.params import SimplifyParams

TWO_GIB = 2**31
HINT = ("set simplify: false in the recipe to build from the exported model, or "
        "simplify: {fallback: true} to fall back to it whenever onnxsim fails")


def symbolic_axes(model) -> dict[tuple[str, int], str]:
    out = {}
    for gi in model.graph.input:
        for axis, d in enumerate(gi.type.tensor_type.shape.dim):
            if d.dim_param:
                out[(gi.name, axis)] = d.dim_param
    return out


class SimplifyOnnx(Step[SimplifyParams]):
    KIND = "simplify"
    PARAMS = SimplifyParams
    VERSION = 2
    TOOLS = ("onnx", "onnxsim", "onnxoptimizer")
    RESIDENT = True

    def run(self) -> StepResult:
        src = self.ctx.inputs["model"]
        out = self.ctx.output("model")
        data = src.with_name(src.name + ".data")
        if data.exists() and data.stat().st_size + src.stat().st_size > TWO_GIB:
            # onnxsim works on one in-memory protobuf, which cannot exceed 2 GiB.
            why = ("onnxsim skipped: the model is over 2 GiB and onnxsim cannot hold it in one protobuf; "
                   "the exported model is passed through unchanged")
            return StepResult(outputs={"model": _pass_through(src, out)}, summary=why, note=why)
        spec = self.params.simplify
        passes, optimizer = spec.passes, spec.onnxoptimizer
        if not spec.fallback:
            files, summary = simplify(src, out, self.ctx.scratch, passes, optimizer)
            return StepResult(outputs={"model": files}, summary=summary)
        proc = subprocess.run([sys.executable, "-m", "buildsys.steps.simplify", str(src), str(out),
                               str(self.ctx.scratch), ",".join(passes), ",".join(optimizer)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            files = proc.stdout.strip().splitlines()[-1].split("\t")
            return StepResult(outputs={"model": files[1:]}, summary=files[0])
        why = _failure(proc)
        print(f"onnxsim did not give a usable model: {why}")
        for name in (out.name, out.name + ".data"):
            (self.ctx.scratch / name).unlink(missing_ok=True)
        said = f"fell back to the exported model (simplify.fallback): {why}"
        return StepResult(outputs={"model": _pass_through(src, out)}, summary=said, note=said)


def _pass_through(src: Path, out: Path) -> list[str]:
    """The exported model (and its external data) as this step's output, unchanged but for the data's name."""
    data = src.with_name(src.name + ".data")
    if not data.exists():
        os.link(src, out)
        return [out.name]
    return [out.name, *own_external_data(src, out)]


def own_external_data(src: Path, out: Path) -> list[str]:
    """Write `src`'s graph to `out` with its external data linked beside it under `out`'s own name.

    The bytes of the data file do not change, only the name the graph gives it:
    model.sim.onnx names model.sim.onnx.data, so the pair can be copied on its own.
    Returns the data files written. Several data files become `<out>.<i>.data`.
    """
    import onnx

    from buildsys.steps.check_onnx import external_tensors

    model = onnx.load(str(src), load_external_data=False)
    tensors = external_tensors(model.graph)
    locations = sorted({e.value for t in tensors for e in t.external_data if e.key == "location"})
    rename = ({locations[0]: out.name + ".data"} if len(locations) == 1
              else {loc: f"{out.name}.{i}.data" for i, loc in enumerate(locations)})
    for t in tensors:
        for e in t.external_data:
            if e.key == "location":
                e.value = rename[e.value]
    onnx.save(model, str(out))
    for old, new in rename.items():
        os.link(src.parent / old, out.parent / new)
    return list(rename.values())


def _failure(proc: subprocess.CompletedProcess) -> str:
    import signal

    lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return f"onnxsim crashed ({name})" + (f"; last output: {lines[-1][:300]}" if lines else "")
    return lines[-1][:400] if lines else f"onnxsim exited with status {proc.returncode}"


def _loadable(src: Path, scratch: Path) -> Path:
    """`src`, or a private copy of it with its external data: onnx refuses to read external data
    through a file with several hard links, and the store hands artifacts out as hard links."""
    import shutil

    data = src.with_name(src.name + ".data")
    if not data.exists():
        return src
    folder = scratch / ".input"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(src, folder / src.name)
    shutil.copyfile(data, folder / data.name)
    return folder / src.name


def simplify(src: Path, out: Path, scratch: Path, passes: tuple[str, ...] = ("onnxsim",),
             optimizer: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """Run `passes` (onnxsim, onnxoptimizer) in order on `src` into `out`, each result checked."""
    import onnx

    from buildsys.steps.check_onnx import check_model

    model = onnx.load(str(_loadable(src, scratch)))
    before = symbolic_axes(model)
    nodes_before = len(model.graph.node)
    simplified = model
    for name in passes:
        simplified = _PASSES[name](simplified, optimizer)
        after = symbolic_axes(simplified)
        frozen = sorted(f"{n}[{axis}] ({dim})" for (n, axis), dim in before.items() if (n, axis) not in after)
        if frozen:
            raise StepError(f"{name} froze dynamic axes: {', '.join(frozen)}", field="simplify",
                            hint=HINT)
    files = [out.name]
    if simplified.ByteSize() > EXTERNAL_DATA_BYTES or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in simplified.graph.initializer
    ):
        onnx.save(simplified, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=out.name + ".data")
        files.append(out.name + ".data")
    else:
        onnx.save(simplified, str(out))
    check_model(out, scratch)
    nodes = len(simplified.graph.node)
    return files, f"{' + '.join(passes)}: {nodes_before} → {nodes} nodes"


def _onnxsim(model, optimizer: tuple[str, ...]):
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:
        raise StepError(f"onnxsim failed: {type(exc).__name__}: {str(exc).strip()[:400]}", field="simplify",
                        hint=HINT) from None
    if not ok:
        raise StepError("onnxsim could not validate the simplified model", field="simplify", hint=HINT)
    return simplified


def _onnxoptimizer(model, optimizer: tuple[str, ...]):
    import onnx
    import onnxoptimizer

    passes = list(optimizer) or onnxoptimizer.get_fuse_and_elimination_passes()
    try:
        optimized = onnxoptimizer.optimize(model, passes)
        onnx.checker.check_model(optimized)
    except Exception as exc:
        raise StepError(f"onnxoptimizer failed: {type(exc).__name__}: {str(exc).strip()[:400]}",
                        field="simplify.onnxoptimizer", hint=HINT) from None
    return optimized


_PASSES = {"onnxsim": _onnxsim, "onnxoptimizer": _onnxoptimizer}


if __name__ == "__main__":
    try:
        written, summary = simplify(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                                    tuple(sys.argv[4].split(",")), tuple(filter(None, sys.argv[5].split(","))))
    except StepError as exc:
        print(exc.message, file=sys.stderr)
        sys.exit(2)
    print("\t".join([summary, *written]))
