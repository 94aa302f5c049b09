"""Seeded inputs from files: a file the steps cannot load is a step error naming the field, not a bug;
npy data of one size serves every shape point (first entries or repeats, along named dims only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from buildsys.core.errors import StepError
from buildsys.steps.inputs import FIT_RULE, fit_to_shape, generate, parity_inputs


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


ROWS = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_a_smaller_point_takes_the_first_rows_a_larger_one_repeats_them():
    assert fit_to_shape(ROWS, ["batch", 4], (1, 4)).tolist() == [[0, 1, 2, 3]]
    assert fit_to_shape(ROWS, ["batch", 4], (2, 4)) is ROWS
    assert fit_to_shape(ROWS, ["batch", 4], (5, 4)).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2 + [[0, 1, 2, 3]]
    tokens = np.arange(6).reshape(1, 6)
    assert fit_to_shape(tokens, [1, "seq"], (1, 3)).tolist() == [[0, 1, 2]]


def test_a_fixed_dim_or_rank_that_differs_is_named():
    with pytest.raises(ValueError, match="dim 1 is fixed at 5, found 4"):
        fit_to_shape(ROWS, ["batch", 5], (1, 5))
    with pytest.raises(ValueError, match="rank 2, the input has rank 3"):
        fit_to_shape(ROWS, ["batch", 4, 1], (1, 4, 1))


def test_the_error_names_the_file_and_the_rule(tmp_path):
    np.save(tmp_path / "x.npy", ROWS)
    params = {"parity": {"seed": 0}, "dims": {"batch": {"min": 1, "opt": 2, "max": 4}},
              "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3],
                          "data": {"kind": "npy", "path": "*.npy"}}]}
    with pytest.raises(StepError) as exc:
        parity_inputs(params, tmp_path, "min", 0)
    assert "x.npy: array of shape [2, 4], expected [1, 3]: dim 1 is fixed at 3, found 4" in exc.value.message
    assert exc.value.hint == FIT_RULE and "first entries" in FIT_RULE and "repeated" in FIT_RULE
