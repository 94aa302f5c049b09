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
    assert m["boxes"]["failures"][0].startswith("1 of 12 reference rows have no candidate row within atol 0.0001")
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
