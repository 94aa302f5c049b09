"""compare(): top-1 agreement where the reference is decided, and the min_top1_decided gate."""
from __future__ import annotations

import numpy as np
import pytest

from buildsys.numerics import compare, decided_rows


def test_decided_rows_are_those_whose_softmax_top1_leads_by_a_tenth():
    scores = np.array([[5.0, 0.0, 0.0],     # p ~ (0.99, ...): decided
                       [1.0, 0.9, 0.0],     # p1 - p2 ~ 0.04: undecided
                       [0.0, 0.0, 0.0]])    # a tie: undecided
    assert decided_rows(scores).tolist() == [True, False, False]


def test_min_top1_decided_judges_only_the_rows_the_reference_decides():
    ref = np.array([[5.0, 0.0], [1.0, 0.98], [0.0, 4.0]])
    got = np.array([[4.0, 0.0], [0.9, 1.0], [0.0, 3.0]])  # flips only the undecided row
    m = compare(ref, got, {"min_top1": 0.9, "min_top1_decided": 1.0})
    assert m["top1"] < 0.9 and m["top1_decided"] == 1.0
    assert m["rows"] == 3 and m["decided"] == 2
    assert m["failures"] == [f"top-1 agreement {m['top1']:.4f} < 0.9"]

    got[0] = [0.0, 1.0]  # now a decided row flips too
    m = compare(ref, got, {"min_top1_decided": 1.0})
    assert not m["passed"]
    assert m["failures"] == ["decided top-1 agreement 0.5000 < 1.0 (1 of 2 rows where the reference is decided)"]
    assert set(m["row_cosine"]) == {"min", "p10", "median", "p90", "max"}


def test_max_scaled_error_bounds_the_largest_error_against_the_output_s_largest_value():
    ref = np.array([[40.0, -2.0, 0.001], [3.0, 0.0, -1.0]])
    got = ref + np.array([[0.1, 0.03, 0.02], [0.0, 0.0, 0.0]])  # 0.1 on a scale of 40: 0.25%
    m = compare(ref, got, {"max_scaled_error": 0.003})
    assert m["scale"] == 40.0 and m["scaled_error"] == pytest.approx(0.0025)
    assert m["passed"]  # although |0.02| is 20x the 0.001 it sits on: fp16 errors follow the output's scale
    m = compare(ref, got, {"max_scaled_error": 0.002})
    assert m["failures"] == ["max abs error 0.1 is 0.0025 of the output's scale 40 (its largest |reference|), "
                             "more than 0.002"]


def test_a_value_that_is_not_finite_fails_max_scaled_error():
    ref = np.ones((2, 3))
    got = ref.copy()
    got[0, 1] = np.inf
    m = compare(ref, got, {"max_scaled_error": 1.0})
    assert m["scaled_error"] == np.inf and not m["passed"]
    assert m["failures"][0] == "0 NaN and 1 Inf values"
    zero = compare(np.zeros(3), np.zeros(3), {"max_scaled_error": 0.0})
    assert zero["passed"] and zero["scaled_error"] == 0.0
