"""npy parity data of one size serves every shape point: first entries or repeats, along named dims only."""
from __future__ import annotations

import numpy as np
import pytest

from buildsys.errors import StepError
from buildsys.inputs import FIT_RULE, fit_to_shape, parity_inputs

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
