"""The first steps of a recipe whose model is not a PyTorch factory.

`model: {onnx: FILE}` starts at `check` (the file verified as an export is) with
ONNX Runtime on it as the reference; `model: {tensorflow: ...}` starts at
`convert` (tf2onnx) with TensorFlow itself as the reference. Both produce
`out/<recipe>/model.onnx`, so everything downstream is the same as for an export.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from buildsys.recipe.model import Recipe
from buildsys.steps import KINDS


def model_files(r: Recipe, root: Path) -> dict[str, str]:
    """The workspace files the model is made of, by content in the keys: the ONNX file, or every
    file of the SavedModel folder, or the .keras file."""
    if r.model.onnx:
        return {"model": r.model.onnx}
    tf = r.model.tensorflow
    if tf.keras:
        return {"model": tf.keras}
    folder = root / tf.saved_model
    found = sorted(Path(d, f) for d, _, names in os.walk(folder) for f in names)
    return {f"model.{i:04d}": p.relative_to(root).as_posix() for i, p in enumerate(found)}


def ingest_steps(r: Recipe, root: Path, base: dict[str, Any], parity: dict[str, Any], extra_files: dict[str, str]):
    """(the step that yields model.onnx, the reference step) for an ONNX or TensorFlow model."""
    from buildsys.resolve import StepSpec

    n = r.name
    files = model_files(r, root)
    params = {**base, "export": {"opset": r.export.opset}}
    if r.model.onnx:
        first = StepSpec(id=f"{n}:check", recipe=n, name="check", kind_path=KINDS["check"], params=params,
                         outputs={"model": f"{n}/model.onnx"}, files=files)
        reference = StepSpec(id=f"{n}:reference", recipe=n, name="reference",
                             kind_path=KINDS["reference-onnxruntime"],
                             params={**base, "parity": parity}, inputs={"model": f"{first.id}#model"},
                             outputs={"reference": f"{n}/reference.npz"}, files=extra_files)
        return first, reference
    first = StepSpec(id=f"{n}:convert", recipe=n, name="convert", kind_path=KINDS["convert"], params=params,
                     outputs={"model": f"{n}/model.onnx"}, files=files)
    reference = StepSpec(id=f"{n}:reference", recipe=n, name="reference", kind_path=KINDS["reference-tensorflow"],
                         params={**base, "parity": parity}, outputs={"reference": f"{n}/reference.npz"},
                         files={**files, **extra_files})
    return first, reference
