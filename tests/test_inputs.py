"""Seeded inputs from files: a file the steps cannot load is a step error naming the field, not a bug."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from buildsys.errors import StepError
from buildsys.inputs import generate


@pytest.mark.parametrize("kind", ["objects-npz", "objects-npy", "not-numpy"])
def test_an_unloadable_file_is_a_step_error(tmp_path: Path, kind: str):
    path = tmp_path / "data" / ("x.npz" if kind == "objects-npz" else "x.npy")
    path.parent.mkdir()
    if kind == "objects-npz":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
    elif kind == "objects-npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(b"not numpy")
    spec = {"name": "x", "dtype": "float32", "shape": [1], "data": {"kind": "npy", "path": f"data/{path.name}"}}
    with pytest.raises(StepError) as exc:
        generate(spec, (1,), np.random.default_rng(0), tmp_path, 0, "inputs.0")
    assert f"{path}: not a readable .npy/.npz file" in exc.value.message
    assert exc.value.field == "inputs.0.data.path"
    assert "np.save(path, array.astype('float32'))" in exc.value.hint


def test_an_npz_without_the_inputs_array_is_a_step_error(tmp_path: Path):
    np.savez(tmp_path / "x.npz", other=np.zeros(1, dtype=np.float32))
    spec = {"name": "x", "dtype": "float32", "shape": [1], "data": {"kind": "npy", "path": "x.npz"}}
    with pytest.raises(StepError) as exc:
        generate(spec, (1,), np.random.default_rng(0), tmp_path, 0, "inputs.0")
    assert exc.value.message == f"{tmp_path / 'x.npz'}: no array named 'x' (found other)"
    assert exc.value.field == "inputs.0.data.path"
