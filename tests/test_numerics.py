"""compare(): top-1 agreement where the reference is decided, and the min_top1_decided gate."""
from __future__ import annotations

import numpy as np

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
