"""compare(): top-1 agreement where the reference is decided, and the min_top1_decided gate."""
from __future__ import annotations

import numpy as np
import pytest

from buildsys.core.numerics import compare, decided_rows


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


# -- rows in any order (parity.unordered) ------------------------------------------------------------

from buildsys.core.numerics import compare_outputs  # noqa: E402

TOL = {"atol": 1e-4, "rtol": 1e-3}
DETECTIONS = ["boxes", "scores", "labels"]


def detections(n: int = 12):
    rng = np.random.default_rng(0)
    scores = np.repeat(np.array([0.9, 0.7, 0.5], np.float32), n // 3)  # ties, as near-tied scores sort
    return {"boxes": rng.uniform(0, 300, (n, 4)).astype(np.float32), "scores": scores,
            "labels": rng.integers(0, 80, n)}


def permuted(refs: dict, order) -> dict:
    return {k: v[order] for k, v in refs.items()}


def test_detections_in_another_order_pass_as_rows_and_fail_element_wise_naming_the_setting():
    refs = detections()
    got = permuted(refs, [3, 2, 1, 0, 4, 5, 6, 7, 11, 10, 9, 8])  # tied rows reordered
    m = compare_outputs(refs, got, TOL, DETECTIONS)
    assert all(o["passed"] for o in m.values())
    assert m["boxes"]["unordered"] == {"outputs": DETECTIONS, "rows": 12, "matched": 12}
    assert m["boxes"]["max_abs"] == 0.0  # figures on the rows as paired

    m = compare_outputs(refs, got, TOL)
    assert not m["boxes"]["passed"] and not m["labels"]["passed"]
    assert m["scores"]["passed"]  # tied scores are equal in any order
    assert m["boxes"]["failures"][-1] == (
        "its 12 rows match the reference's in another order: if the order carries no meaning (detections), "
        "compare them as rows in any order with parity: {unordered: [boxes, scores, labels]}")


def test_a_wrong_detection_fails_as_rows():
    refs = detections()
    got = permuted(refs, list(range(12))[::-1])
    got["boxes"] = got["boxes"].copy()
    got["boxes"][5, 2] += 1.0
    m = compare_outputs(refs, got, TOL, DETECTIONS)
    assert not m["boxes"]["passed"] and m["boxes"]["unordered"]["matched"] == 11
    assert m["boxes"]["failures"] == [  # the rows left unpaired first, then the figures on the rows as paired
        "1 of 12 reference rows have no candidate row within atol 0.0001 + rtol 0.001·|ref| across boxes, scores, "
        "labels (rows compared in any order)",
        "1 of 48 values off by more than atol 0.0001 + rtol 0.001·|ref| (max abs 1)"]
    # labels swapped between two rows: every box and every label is there, but two rows are wrong
    got = permuted(refs, list(range(12)))
    i, j = 0, next(k for k in range(1, 12) if refs["labels"][k] != refs["labels"][0])
    got["labels"][[i, j]] = refs["labels"][[j, i]]
    m = compare_outputs(refs, got, TOL, DETECTIONS)
    assert not m["boxes"]["passed"] and m["boxes"]["unordered"]["matched"] == 10
    # an element-wise failure whose rows are not the reference's says nothing of the setting
    assert not any("unordered" in f for f in compare_outputs(refs, got, TOL)["boxes"]["failures"])


def test_detection_counts_must_agree():
    refs = detections()
    got = {k: v[:-1] for k, v in refs.items()}
    m = compare_outputs(refs, got, TOL, DETECTIONS)
    assert not any(o["passed"] for o in m.values())
    assert m["scores"]["failures"] == [
        "11 rows, the reference has 12 (parity.unordered pairs the rows one to one: the counts must agree)"]


def test_outputs_that_do_not_share_their_first_axis_cannot_be_rows():
    refs = detections()
    got = dict(refs, labels=refs["labels"][:-1])
    m = compare_outputs(refs, got, TOL, DETECTIONS)
    assert not m["boxes"]["passed"]
    assert m["boxes"]["failures"][0].startswith("parity.unordered needs outputs that share their first axis; "
                                                "the candidate has boxes [12, 4], scores [12], labels [11]")


def test_rows_are_matched_as_a_set_where_a_greedy_pairing_would_leave_one_out():
    # greedy by error pairs a with c first (0.5), leaving b only d (off by 1.9); a matching pairs a-d, b-c
    refs = {"v": np.array([[0.0], [1.0]])}
    got = {"v": np.array([[0.5], [-0.9]])}
    m = compare_outputs(refs, got, {"atol": 1.0, "rtol": 0.0}, ["v"])
    assert m["v"]["passed"], m["v"]["failures"]
    assert m["v"]["unordered"]["matched"] == 2


def test_rows_are_paired_by_nearness_under_a_cosine_tolerance():
    refs = detections()
    got = permuted(refs, list(range(12))[::-1])
    got["boxes"] = got["boxes"] * 1.001
    m = compare_outputs(refs, got, {"min_cosine": 0.999}, DETECTIONS)
    assert m["boxes"]["passed"] and m["boxes"]["cosine"] > 0.9999


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


# -- parity's decided top-1 gate over every row ------------------------------------------------------


class _Scores:
    """A stand-in ONNX Runtime session that answers each input with the scores stored for it."""

    def __init__(self, answers: dict):
        self.answers = answers

    def run(self, outputs, feeds):
        return [self.answers[int(feeds["x"][0])]]


def _judged(flip_at_min: bool, low: float):
    from buildsys.steps.parity import judge

    decided = np.array([[6.0, 0.0]], np.float32)  # softmax top-1 far ahead of the second
    manifest, arrays, answers = [], {}, {}
    for i in range(10):  # one single-row sample at the min point, nine at opt
        point = "min" if i == 0 else "opt"
        arrays[f"in{i}"], arrays[f"out{i}"] = np.array([i], np.float32), decided
        manifest.append({"point": point, "sample": i, "inputs": {"x": f"in{i}"}, "outputs": {"s": f"out{i}"}})
        answers[i] = decided[:, ::-1].copy() if (flip_at_min and i == 0) else decided
    return judge(_Scores(answers), manifest, arrays, ["s"], {"min_top1_decided": low})


def test_min_top1_decided_counts_every_decided_row_of_every_point_together():
    results, failed = _judged(flip_at_min=True, low=0.9)  # 9 of 10: the lone min view is not 0 %
    assert failed == []
    assert results[0]["outputs"]["s"]["top1_decided"] == 0.0 and results[0]["outputs"]["s"]["passed"]
    results, failed = _judged(flip_at_min=True, low=1.0)
    assert failed == ["s: decided top-1 agreement 0.9000 < 1.0 (9 of 10 rows where the reference is decided, "
                      "over every point and sample)"]
    assert _judged(flip_at_min=False, low=1.0)[1] == []


def test_the_reports_say_the_decided_gate_counts_every_row():
    from buildsys.reports.collect import fmt_tolerance

    assert fmt_tolerance({"min_cosine": 0.97, "min_top1_decided": 1.0}) == \
        "cosine ≥ 0.97, decided top-1 ≥ 1 over all rows"


# -- the figures, checked against numpy by hand --------------------------------------------------------

from buildsys.core.numerics import cosine, histogram, scaled_error, top1_agreement  # noqa: E402


def test_compare_reports_every_figure_as_numpy_computes_it():
    ref = np.array([[1.0, -2.0, 0.0], [4.0, 0.5, -0.25]])
    err = np.array([[0.01, 0.0, 0.002], [-0.05, 0.0, 0.0]])
    got = ref + err
    m = compare(ref, got, {"atol": 0.001, "rtol": 0.01})
    d = np.abs(got - ref)
    assert m["shape"] == m["reference_shape"] == [2, 3]
    assert m["nan"] == 0 and m["inf"] == 0
    assert m["max_abs"] == d.max() and m["mean_abs"] == pytest.approx(d.mean())
    # |ref| floored at max(atol, 1e-3 · largest |ref|) = 0.004: the 0.002 on the 0.0 is half of it
    assert m["max_rel"] == pytest.approx(0.5)
    assert m["worst"] == {"index": [1, 0], "reference": 4.0, "candidate": got[1, 0]}
    assert m["scale"] == 4.0 and m["scaled_error"] == pytest.approx(d.max() / 4.0)
    assert m["cosine"] == pytest.approx(float(np.dot(ref.ravel(), got.ravel())
                                              / np.linalg.norm(ref) / np.linalg.norm(got)), abs=1e-15)
    allowed = 0.001 + 0.01 * np.abs(ref)
    assert m["mismatched"] == int((d > allowed).sum()) == 2
    assert m["histogram"]["counts"] == [3, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0]
    assert m["failures"] == ["2 of 6 values off by more than atol 0.001 + rtol 0.01·|ref| (max abs 0.05)"]
    assert not m["passed"]
    # class scores: each row's top-1, decided rows, and the quantiles of the rows' cosines
    assert m["top1"] == 1.0 and m["rows"] == 2 and m["decided"] == 2
    assert m["top1_decided"] == 1.0 and m["agree_decided"] == 2
    rows = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ref, got)]
    assert m["row_cosine"] == pytest.approx({"min": min(rows), "p10": rows[0] + 0.1 * (rows[1] - rows[0]),
                                             "median": sum(rows) / 2, "p90": rows[0] + 0.9 * (rows[1] - rows[0]),
                                             "max": max(rows)}, abs=1e-15)


def test_the_relative_error_floor_is_the_atol_or_a_thousandth_of_the_largest_reference():
    ref = np.array([0.0, 10.0])
    got = np.array([0.001, 10.0])
    assert compare(ref, got, {})["max_rel"] == pytest.approx(0.1)  # 0.001 / (1e-3 · 10)
    assert compare(ref, got, {"atol": 0.05})["max_rel"] == pytest.approx(0.02)  # 0.001 / 0.05
    # an all-zero reference: the floor is 1e-12, not zero
    assert compare(np.zeros(2), np.array([0.0, 1e-13]), {})["max_rel"] == pytest.approx(0.1)
    # values away from zero divide by themselves
    assert compare(np.array([2.0, 100.0]), np.array([2.5, 100.0]), {})["max_rel"] == pytest.approx(0.25)
    # the scale ignores a reference value that is not finite
    assert compare(np.array([np.inf, -3.0]), np.array([np.inf, -3.0]), {})["scale"] == 3.0
    assert compare(np.array([np.nan, np.inf]), np.array([np.nan, np.inf]), {})["scale"] == 0.0


def test_an_error_exactly_at_the_allowance_passes_and_a_tolerance_left_unset_allows_nothing():
    ref = np.array([0.0, 2.0])
    assert compare(ref, np.array([0.5, 2.0]), {"atol": 0.5})["passed"]
    assert compare(ref, np.array([0.0, 2.5]), {"rtol": 0.25})["passed"]
    assert compare(ref, np.array([0.6, 2.9]), {"atol": 0.5, "rtol": 0.25})["mismatched"] == 1  # 0.6 > 0.5, 0.9 <= 1
    m = compare(ref, np.array([0.0, 2.5]), {"atol": None, "rtol": 0.0})
    assert m["mismatched"] == 1 and m["failures"] == [
        "1 of 2 values off by more than atol 0 + rtol 0·|ref| (max abs 0.5)"]
    m = compare(ref, np.array([0.5, 2.0]), {"atol": 0.0, "rtol": None})
    assert m["mismatched"] == 1
    assert "mismatched" not in compare(ref, ref + 1, {}) and compare(ref, ref + 1, {})["passed"]


def test_values_that_are_not_finite_are_counted_and_fail():
    ref = np.array([[1.0, -2.0, 3.0], [4.0, 0.5, 0.0]])
    got = ref.copy()
    got[0, 1], got[1, 2] = np.nan, -np.inf
    m = compare(ref, got, {"atol": 1.0})
    assert m["nan"] == 1 and m["inf"] == 1
    assert m["max_abs"] == np.inf and m["max_rel"] == np.inf and m["scaled_error"] == np.inf
    assert m["mean_abs"] == np.inf and np.isnan(m["cosine"])
    assert m["worst"]["index"] == [0, 1] and np.isnan(m["worst"]["candidate"])
    assert m["histogram"]["non_finite"] == 2 and sum(m["histogram"]["counts"]) == 4
    assert "top1" not in m
    assert m["failures"] == ["1 NaN and 1 Inf values",
                             "2 of 6 values off by more than atol 1 + rtol 0·|ref| (max abs inf)"]
    # NaN alone: the mean is over the values that are there
    got = ref.copy()
    got[0, 0] = np.nan
    got[1, 0] = 4.5
    m = compare(ref, got, {})
    assert m["nan"] == 1 and m["inf"] == 0 and m["mean_abs"] == pytest.approx(0.1)
    assert m["failures"] == ["1 NaN and 0 Inf values"]
    assert compare(ref, np.full_like(ref, np.nan), {})["mean_abs"] == np.inf


def test_outputs_of_another_shape_fail_with_both_shapes():
    m = compare(np.zeros((2, 3)), np.zeros((3, 2)), {"atol": 1.0})
    assert m == {"shape": [3, 2], "reference_shape": [2, 3], "passed": False,
                 "failures": ["shape [3, 2] != reference [2, 3]"]}


def test_empty_outputs_compare_equal_with_zero_error():
    for shape in [(0,), (0, 4), (2, 0, 3)]:
        m = compare(np.zeros(shape), np.zeros(shape), {"atol": 0.0, "rtol": 0.0, "min_cosine": 1.0,
                                                      "min_top1": 1.0, "max_scaled_error": 0.0})
        assert m["passed"], (shape, m["failures"])
        assert (m["max_abs"], m["mean_abs"], m["max_rel"], m["scale"], m["scaled_error"]) == (0, 0, 0, 0, 0)
        assert m["cosine"] == 1.0 and m["mismatched"] == 0 and "worst" not in m and "top1" not in m


def test_cosine_gate_holds_at_its_bound_and_fails_below_it_or_on_nan():
    a = np.array([3.0, 4.0])
    assert compare(a, a, {"min_cosine": 1.0})["passed"]
    m = compare(a, np.array([4.0, 3.0]), {"min_cosine": 0.97})  # cosine 24/25
    assert m["cosine"] == pytest.approx(0.96)
    assert m["failures"] == ["cosine 0.960000 < 0.97"]
    assert compare(a, np.array([4.0, 3.0]), {"min_cosine": 0.96})["passed"]
    m = compare(a, np.array([np.nan, 4.0]), {"min_cosine": -1.0})
    assert m["failures"][-1] == "cosine nan < -1.0"


def test_top1_gates_hold_at_their_bound():
    ref = np.array([[5.0, 0.0], [0.0, 5.0]])
    got = np.array([[5.0, 0.0], [5.0, 0.0]])
    m = compare(ref, got, {"min_top1": 0.5, "min_top1_decided": 0.5})
    assert m["top1"] == 0.5 and m["top1_decided"] == 0.5 and m["agree_decided"] == 1 and m["passed"]
    m = compare(ref, got, {"min_top1": 0.6})
    assert m["failures"] == ["top-1 agreement 0.5000 < 0.6"]
    m = compare(ref, got, {"min_top1_decided": 0.6})
    assert m["failures"] == ["decided top-1 agreement 0.5000 < 0.6 (1 of 2 rows where the reference is decided)"]
    # no row decided: nothing to judge
    tied = np.zeros((2, 2))
    m = compare(tied, got, {"min_top1_decided": 1.0})
    assert m["decided"] == 0 and m["top1_decided"] is None and m["agree_decided"] == 0 and m["passed"]


def test_row_cosines_are_the_quantiles_over_every_row():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(2, 11, 4))
    got = ref + rng.normal(scale=0.3, size=ref.shape)
    m = compare(ref, got, {})
    rows = np.array([np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
                     for a, b in zip(ref.reshape(-1, 4), got.reshape(-1, 4))])
    assert m["rows"] == 22
    assert m["row_cosine"] == pytest.approx({"min": rows.min(), "p10": np.quantile(rows, 0.1),
                                             "median": np.median(rows), "p90": np.quantile(rows, 0.9),
                                             "max": rows.max()}, abs=1e-12)
    assert m["top1"] == pytest.approx(float(np.mean(ref.reshape(-1, 4).argmax(1) == got.reshape(-1, 4).argmax(1))))


def test_scaled_error_is_the_share_of_the_scale_and_inf_when_unbounded():
    assert scaled_error(0.5, 4.0, 0) == 0.125
    assert scaled_error(0.5, 4.0, 1) == np.inf
    assert scaled_error(np.inf, 4.0, 0) == np.inf
    assert scaled_error(np.nan, 4.0, 0) == np.inf
    assert scaled_error(0.0, 0.0, 0) == 0.0
    assert scaled_error(1e-30, 0.0, 0) == np.inf
    assert compare(np.array([4.0]), np.array([4.5]), {"max_scaled_error": 0.125})["passed"]


def test_cosine_of_flattened_tensors_and_of_zero_and_non_finite_ones():
    a = np.array([[1.0, 2.0], [3.0, -1.0]])
    b = np.array([[2.0, 1.0], [-1.0, 0.5]])
    assert cosine(a, b) == pytest.approx(float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b)))
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, 3 * a) == pytest.approx(1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), np.ones(3)) == 0.0 and cosine(np.ones(3), np.zeros(3)) == 0.0
    assert np.isnan(cosine(np.array([np.inf, 1.0]), np.ones(2)))
    assert np.isnan(cosine(np.ones(2), np.array([1.0, np.nan])))
    assert np.isnan(cosine(np.zeros(2), np.array([np.nan, 0.0])))  # not 0: a zero vector against a NaN
    assert np.isnan(cosine(np.array([np.inf, 0.0]), np.zeros(2)))


def test_top1_agreement_only_for_class_scores():
    ref = np.array([[[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], [[0.0, 0.0, 1.0], [0.2, 0.3, 0.5]]])
    got = np.array([[[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]], [[0.0, 0.1, 0.9], [0.6, 0.3, 0.1]]])
    assert top1_agreement(ref, got) == 0.5
    assert top1_agreement(ref[0], got[0]) == 0.5 and top1_agreement(ref[1], got[1]) == 0.5
    assert top1_agreement(np.array([0.0, 1.0]), np.array([0.0, 1.0])) is None  # one axis: no classes
    assert top1_agreement(np.ones((3, 1)), np.ones((3, 1))) is None  # a single class
    assert top1_agreement(np.ones((3, 2)), np.ones((3, 2))) == 1.0
    bad = got.copy()
    bad[0, 0, 0] = np.inf
    assert top1_agreement(ref, bad) is None
    assert top1_agreement(np.zeros((0, 3)), np.zeros((0, 3))) is None  # no rows


def test_histogram_counts_errors_in_decades():
    d = np.array([0.0, 5e-10, 1e-9, 3e-4, 0.05, 0.5, 2.0, 20.0, np.inf, np.nan])
    h = histogram(d)
    assert h["edges"] == ["0", "1e-9", "1e-8", "1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1e0",
                          "1e1", "inf"]
    expected, _ = np.histogram(d[np.isfinite(d)], bins=[0.0, *(10.0**e for e in range(-9, 2)), np.inf])
    assert h["counts"] == expected.tolist() == [2, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1]
    assert h["non_finite"] == 2
    assert histogram(np.zeros((0,))) == {"edges": h["edges"], "counts": [0] * 12, "non_finite": 0}


def test_no_detections_on_either_side_pass_as_rows_and_element_wise():
    refs = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros((0,), np.float32)}
    for unordered in (["boxes", "scores"], []):
        m = compare_outputs(refs, dict(refs), TOL, unordered)
        assert all(o["passed"] for o in m.values()), m
        assert m["boxes"]["shape"] == [0, 4] and m["boxes"]["max_abs"] == 0.0 and "top1" not in m["boxes"]
    assert m["boxes"].get("unordered") is None
    m = compare_outputs(refs, dict(refs), TOL, ["boxes", "scores"])
    assert m["scores"]["unordered"] == {"outputs": ["boxes", "scores"], "rows": 0, "matched": 0}


# -- rows in any order: the pairing, the problems, the element-wise hint ---------------------------

from buildsys.core import numerics  # noqa: E402
from buildsys.core.numerics import _pair_costs, match_rows  # noqa: E402


def test_greedy_pairing_takes_the_nearest_pair_first_each_row_and_candidate_once():
    cost = np.array([[0.1, 0.2], [0.3, 0.6]], np.float32)
    pair, matched = match_rows(cost, cost <= 1.0)  # greedy: (0, 0) then (1, 1); both feasible
    assert pair.tolist() == [0, 1] and matched == 2
    pair, matched = match_rows(cost, None)
    assert pair.tolist() == [0, 1] and matched == 2


def test_tied_costs_pair_rows_in_order_of_reference_row_then_candidate():
    n = 8
    cost = np.full((n, n), 0.5, np.float32)
    cost[:, ::2] = 0.25  # every row is as near to each even candidate
    pair, matched = match_rows(cost, None)
    assert pair.tolist() == [0, 2, 4, 6, 1, 3, 5, 7] and matched == n


def test_rows_left_without_a_feasible_candidate_take_the_free_ones_nearest_first():
    cost = np.array([[0.0, 9, 9], [9, 7, 5], [9, 8, 6]], np.float32)
    feasible = np.zeros((3, 3), bool)
    feasible[0, 0] = True
    pair, matched = match_rows(cost, feasible)
    # candidate 2 is nearer to some row (5) than candidate 1 (7): the first row left over takes it
    assert pair.tolist() == [0, 2, 1] and matched == 1
    n = 20
    cost = np.full((n, n), 0.5, np.float32)
    cost[:, ::2] = 0.25
    pair, matched = match_rows(cost, np.zeros((n, n), bool))
    assert matched == 0 and pair.tolist() == [*range(0, n, 2), *range(1, n, 2)]


def test_an_augmenting_path_moves_a_paired_row_to_its_next_candidate():
    # greedy pairs row 0 with candidate 0 (0.5); row 1 can only have candidate 0: row 0 moves to candidate 1
    cost = np.array([[0.5, 0.9], [0.5, 1.9]], np.float32)
    pair, matched = match_rows(cost, cost <= 1.0)
    assert pair.tolist() == [1, 0] and matched == 2
    # three deep: row 2 takes candidate 0 from row 0, which takes 1 from row 1, which takes 2
    cost = np.array([[0.1, 0.5, 9], [9, 0.1, 0.5], [0.5, 9, 9]], np.float32)
    pair, matched = match_rows(cost, cost <= 1.0)
    assert pair.tolist() == [1, 2, 0] and matched == 3
    # no path: the row is left over and takes the free candidate
    cost = np.array([[0.1, 9], [0.2, 9]], np.float32)
    pair, matched = match_rows(cost, cost <= 1.0)
    assert pair.tolist() == [0, 1] and matched == 1


def test_pair_costs_are_the_worst_error_over_its_allowance_across_outputs_in_float32():
    refs = {"a": np.array([[0.0, 10.0], [1.0, 20.0]]), "b": np.array([2.0, 4.0])}
    gots = {"a": np.array([[1.0, 20.0], [0.5, 11.0]]), "b": np.array([4.5, 2.5])}
    cost, feasible = _pair_costs(refs, gots, {"atol": 0.5, "rtol": 0.1})

    def by_hand(i, j):
        ea = np.abs(gots["a"][j] - refs["a"][i]) / (0.5 + 0.1 * np.abs(refs["a"][i]))
        eb = abs(gots["b"][j] - refs["b"][i]) / (0.5 + 0.1 * abs(refs["b"][i]))
        return max(ea.max(), eb)

    assert cost.dtype == np.float32 and cost.shape == (2, 2)  # rows² float32: 64 MiB at the 4096-row bound
    assert cost.ravel().tolist() == pytest.approx([by_hand(i, j) for i in range(2) for j in range(2)], rel=1e-6)
    assert feasible.tolist() == [[False, True], [True, False]]
    # an allowance of atol alone, of rtol alone
    cost, _ = _pair_costs({"x": np.array([[10.0]])}, {"x": np.array([[10.5]])}, {"atol": 0.25})
    assert cost.tolist() == [[2.0]]
    cost, _ = _pair_costs({"x": np.array([[10.0]])}, {"x": np.array([[10.5]])}, {"rtol": 0.1})
    assert cost.tolist() == [[0.5]]
    # an error exactly at its allowance is feasible; NaN is never
    cost, feasible = _pair_costs({"x": np.array([[0.0], [1.0]])}, {"x": np.array([[0.5], [np.nan]])},
                                 {"atol": 0.5})
    assert cost[0, 0] == 1.0 and feasible[0, 0] and np.isinf(cost[:, 1]).all() and not feasible[:, 1].any()


def test_pair_costs_under_a_cosine_tolerance_weigh_each_output_by_its_largest_value():
    refs = {"a": np.array([0.0, 1000.0]), "b": np.array([0.0, 0.01])}
    gots = {"a": np.array([10.0, 990.0]), "b": np.array([0.01, 0.0])}
    cost, feasible = _pair_costs(refs, gots, {"min_cosine": 0.9})
    assert feasible is None
    assert cost.ravel().tolist() == pytest.approx([1.0, 0.99, 0.99, 1.0])
    m = compare_outputs(refs, gots, {"min_cosine": 0.0}, ["a", "b"])
    assert m["a"]["max_abs"] == 990.0 and m["a"]["unordered"]["matched"] == 2  # reference row 0 takes 990
    # rows that are far apart are still all paired when nothing bounds an element
    m = compare_outputs({"v": np.array([[1.0], [0.0]])}, {"v": np.array([[5.0], [0.0]])}, {"min_cosine": 0.0},
                        ["v"])
    assert m["v"]["unordered"]["matched"] == 2 and m["v"]["passed"]


def test_blocks_of_rows_give_the_cost_of_the_whole_matrix(monkeypatch):
    rng = np.random.default_rng(5)
    refs = {"a": rng.normal(size=(7, 3)), "b": rng.normal(size=7)}
    gots = {k: v[::-1] + 0.01 for k, v in refs.items()}
    whole = _pair_costs(refs, gots, TOL)[0]
    monkeypatch.setattr(numerics, "_BLOCK_ELEMENTS", 10)  # a row or two at a time
    assert (_pair_costs(refs, gots, TOL)[0] == whole).all()


def test_outputs_with_rows_of_no_width_pair_at_no_cost():
    refs = {"e": np.zeros((3, 0)), "s": np.array([1.0, 2.0, 3.0])}
    m = compare_outputs(refs, {"e": np.zeros((3, 0)), "s": np.array([3.0, 1.0, 2.0])}, TOL, ["e", "s"])
    assert m["s"]["passed"] and m["s"]["unordered"]["matched"] == 3
    m = compare_outputs({"b": np.zeros((0, 4))}, {"b": np.zeros((0, 4))}, {"min_cosine": 0.99}, ["b"])
    assert m["b"]["passed"] and m["b"]["unordered"]["rows"] == 0


def test_rows_feasible_under_rtol_alone_are_matched_by_it():
    refs = {"v": np.array([[10.0], [20.0]])}
    gots = {"v": np.array([[20.5], [13.0]])}
    m = compare_outputs(refs, gots, {"rtol": 0.1}, ["v"])
    assert m["v"]["unordered"]["matched"] == 1
    assert m["v"]["failures"][0] == ("1 of 2 reference rows have no candidate row within atol 0 + rtol 0.1·|ref| "
                                     "across v (rows compared in any order)")


def test_an_unmatched_row_fails_the_first_output_even_where_its_own_values_pass():
    refs = {"a": np.array([0.0, 0.0]), "b": np.array([0.0, 5.0])}
    gots = {"a": np.array([0.0, 0.0]), "b": np.array([0.0, 9.0])}
    m = compare_outputs(refs, gots, {"atol": 1.0}, ["a", "b"])
    assert m["a"]["passed"] is False and m["b"]["passed"] is False
    assert m["a"]["failures"] == ["1 of 2 reference rows have no candidate row within atol 1 + rtol 0·|ref| "
                                  "across a, b (rows compared in any order)"]
    assert m["a"]["max_abs"] == 0.0 and m["a"]["unordered"] == {"outputs": ["a", "b"], "rows": 2, "matched": 1}


def test_rows_that_cannot_be_paired_say_why(monkeypatch):
    refs = {"a": np.zeros((3, 2)), "s": np.zeros(3)}
    m = compare_outputs(refs, {"a": np.zeros((3, 5)), "s": np.zeros(3)}, TOL, ["a", "s"])
    assert m["a"] == {"shape": [3, 5], "reference_shape": [3, 2], "passed": False,
                      "failures": ["rows of another shape: a [3, 5] (reference [3, 2])"],
                      "unordered": {"outputs": ["a", "s"], "rows": None, "matched": None}}
    assert m["s"]["failures"] == m["a"]["failures"] and m["s"]["shape"] == [3]
    m = compare_outputs(refs, {"a": np.zeros((3, 5)), "s": np.zeros((3, 2))}, TOL, ["a", "s"])
    assert m["a"]["failures"] == ["rows of another shape: a [3, 5] (reference [3, 2]), s [3, 2] (reference [3])"]
    m = compare_outputs({"a": np.zeros((3, 2)), "n": np.float32(3)}, {"a": np.zeros((3, 2)), "n": np.float32(3)},
                        TOL, ["a", "n"])
    assert m["a"]["failures"] == ["parity.unordered compares rows along the first axis; the reference's n is a scalar"]
    m = compare_outputs(refs, {"a": np.zeros((3, 2)), "s": np.float32(3)}, TOL, ["a", "s"])
    assert m["a"]["failures"] == ["parity.unordered compares rows along the first axis; the candidate's s is a scalar"]
    monkeypatch.setattr(numerics, "MAX_UNORDERED_ROWS", 3)
    assert compare_outputs(refs, dict(refs), TOL, ["a", "s"])["a"]["passed"]  # at the bound
    big = {"a": np.zeros((4, 2)), "s": np.zeros(4)}
    assert compare_outputs(big, dict(big), TOL, ["a", "s"])["s"]["failures"] == [
        "4 rows, more than the 3 that parity.unordered can match"]


def test_unordered_names_an_output_only_one_side_has():
    refs = {"a": np.array([1.0, 2.0])}
    m = compare_outputs(refs, {"a": np.array([2.0, 1.0]), "extra": np.zeros(2)}, TOL, ["a", "extra"])
    assert list(m) == ["a"] and m["a"]["passed"] and m["a"]["unordered"]["outputs"] == ["a"]


def _hinted(m: dict) -> bool:
    return any("rows match the reference's in another order" in f for f in m["failures"])


def test_the_hint_names_the_outputs_that_share_the_failed_output_s_rows():
    refs = {"boxes": np.arange(8.0).reshape(4, 2), "n": np.float32(4), "other": np.zeros(3), "s": np.arange(4.0)}
    got = dict(refs, boxes=refs["boxes"][[1, 0, 3, 2]])
    m = compare_outputs(refs, got, TOL)
    assert m["boxes"]["permuted"] is True
    assert m["boxes"]["failures"] == [  # the element-wise failure stays; the hint follows it
        "8 of 8 values off by more than atol 0.0001 + rtol 0.001·|ref| (max abs 2)",
        "its 4 rows match the reference's in another order: if the order carries no meaning (detections), "
        "compare them as rows in any order with parity: {unordered: [boxes, s]}"]
    assert "permuted" not in m["s"]


def test_the_hint_is_given_for_two_rows_and_for_a_vector_and_never_for_one_row():
    for ref, got in [(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[3.0, 4.0], [1.0, 2.0]])),
                     (np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0]))]:
        m = compare_outputs({"x": ref}, {"x": got}, TOL)["x"]
        assert not m["passed"] and m["permuted"] and _hinted(m)
    # one row failing by a hair that the float32 pair cost rounds away is not "another order"
    m = compare_outputs({"x": np.array([[0.0, 1.0]])}, {"x": np.array([[0.1 + 1e-9, 1.0]])}, {"atol": 0.1})["x"]
    assert not m["passed"] and not _hinted(m) and "permuted" not in m


def test_the_hint_is_not_given_for_other_shapes_other_values_or_without_an_element_tolerance():
    ref = np.arange(6.0).reshape(3, 2)
    assert compare_outputs({"x": ref}, {"x": np.zeros((3, 3))}, TOL)["x"]["failures"] == [
        "shape [3, 3] != reference [3, 2]"]
    assert compare_outputs({"x": ref}, {"x": np.zeros((4, 2))}, TOL)["x"]["failures"] == [
        "shape [4, 2] != reference [3, 2]"]
    m = compare_outputs({"x": ref}, {"x": ref[::-1] + [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]}, TOL)["x"]
    assert not m["passed"] and not _hinted(m)
    m = compare_outputs({"x": ref}, {"x": -ref[::-1]}, {"min_cosine": 0.99})["x"]
    assert not m["passed"] and not _hinted(m)
    for tol in ({"atol": 1e-3}, {"rtol": 1e-3}):
        assert _hinted(compare_outputs({"x": ref}, {"x": ref[::-1]}, tol)["x"]), tol


def test_the_hint_is_sought_only_up_to_the_bounds(monkeypatch):
    ref = np.arange(8.0).reshape(4, 2)
    got = ref[[1, 0, 3, 2]]
    monkeypatch.setattr(numerics, "MAX_UNORDERED_ROWS", 4)
    assert _hinted(compare_outputs({"x": ref}, {"x": got}, TOL)["x"])
    monkeypatch.setattr(numerics, "MAX_UNORDERED_ROWS", 3)
    assert not _hinted(compare_outputs({"x": ref}, {"x": got}, TOL)["x"])
    monkeypatch.setattr(numerics, "MAX_UNORDERED_ROWS", 4096)
    monkeypatch.setattr(numerics, "_PERMUTATION_CHECK_ELEMENTS", 32)  # rows × elements: 4 × 8
    assert _hinted(compare_outputs({"x": ref}, {"x": got}, TOL)["x"])
    monkeypatch.setattr(numerics, "_PERMUTATION_CHECK_ELEMENTS", 31)
    assert not _hinted(compare_outputs({"x": ref}, {"x": got}, TOL)["x"])


def test_decided_rows_per_row_over_the_last_axis_whatever_the_scores_magnitude():
    # softmax (0.2, 0.1, ..., 0.1): the top-1 leads by exactly the margin, which decides
    assert decided_rows(np.array([[np.log(2.0)] + [0.0] * 8])).tolist() == [True]
    assert decided_rows(np.array([[1000.0, 0.0], [-1000.0, -1001.0], [0.0, -5.0]])).tolist() == [True, True, True]
    # each row normalised by itself: (0.3, 0) leads by 0.149 however many rows there are
    assert decided_rows(np.array([[0.3, 0.0], [0.3, 0.0], [0.0, 0.3]])).tolist() == [True, True, True]
    scores = np.array([[[4.0, 0.0, 0.0], [1.0, 0.9, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]], np.float32)
    assert decided_rows(scores).tolist() == [True, False, False, True]


def test_an_augmenting_path_backs_up_from_a_dead_end_and_tries_the_next_candidate():
    cost = np.array([[9, 0.2, 0.3], [9, 0.1, 9], [0.9, 9, 0.1]], np.float32)
    # greedy: rows 1 and 2 take their own; row 0's nearest (1) leads nowhere, its next (2) frees candidate 0
    pair, matched = match_rows(cost, cost <= 1.0)
    assert pair.tolist() == [2, 1, 0] and matched == 3


def test_an_augmenting_path_tries_the_nearest_candidate_first_ties_in_index_order():
    n = 31
    cost = np.full((n, n), 9.0, np.float32)
    for i in range(1, n):
        cost[i, i], cost[i, 0] = 0.1, 0.9
    cost[0, 1:] = np.repeat(np.array([0.6, 0.2, 0.4], np.float32), 10)  # candidates 11..20 nearest, tied
    pair, matched = match_rows(cost, cost <= 1.0)
    assert matched == n and pair[0] == 11 and pair[11] == 0
    assert pair[1:11].tolist() == list(range(1, 11)) and pair[12:].tolist() == list(range(12, n))
