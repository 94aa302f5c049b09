"""How a candidate output is compared with its reference: metrics and the verdict."""
from __future__ import annotations

from typing import Any

import numpy as np


def compare(ref: np.ndarray, got: np.ndarray, tol: dict[str, Any]) -> dict[str, Any]:
    """Error figures of `got` against `ref` and whether they meet `tol`.

    Elementwise, an output passes where |got - ref| <= atol + rtol * |ref|
    (numpy's allclose). The relative error divides by max(|ref|, atol) so that
    reference values near zero do not make it explode. `max_scaled_error`
    bounds the largest error against the output's scale (its largest |ref|):
    what fp16 rounding gives grows with the magnitudes a network computes, not
    with each element's own size.
    """
    failures: list[str] = []
    m: dict[str, Any] = {"shape": list(got.shape), "reference_shape": list(ref.shape)}
    if got.shape != ref.shape:
        m.update(passed=False, failures=[f"shape {list(got.shape)} != reference {list(ref.shape)}"])
        return m
    r = ref.astype(np.float64, copy=False)
    g = got.astype(np.float64, copy=False)
    m["nan"] = int(np.isnan(g).sum())
    m["inf"] = int(np.isinf(g).sum())
    if m["nan"] or m["inf"]:
        failures.append(f"{m['nan']} NaN and {m['inf']} Inf values")
    diff = np.abs(g - r)
    finite = np.where(np.isfinite(diff), diff, np.inf)
    atol = tol.get("atol") or 0.0
    rtol = tol.get("rtol") or 0.0
    # Relative error divides by |ref|, floored so that elements near zero do not explode it:
    # the floor is the atol, or a thousandth of the output's largest magnitude if that is more.
    scale = float(np.abs(r[np.isfinite(r)]).max()) if np.isfinite(r).any() else 0.0
    floor = max(atol, 1e-3 * scale, 1e-12)
    if diff.size:
        worst = np.unravel_index(int(np.argmax(finite)), diff.shape)
        m["max_abs"] = float(finite.max())
        m["mean_abs"] = float(np.nanmean(diff)) if np.isfinite(diff).any() else float("inf")
        m["max_rel"] = float((finite / np.maximum(np.abs(r), floor)).max())
        m["worst"] = {"index": [int(i) for i in worst], "reference": float(r[worst]), "candidate": float(g[worst])}
    else:
        m.update(max_abs=0.0, mean_abs=0.0, max_rel=0.0)
    m["scale"] = scale
    m["scaled_error"] = scaled_error(m["max_abs"], scale, m["nan"] + m["inf"])
    bound = tol.get("max_scaled_error")
    if bound is not None and not m["scaled_error"] <= bound:
        failures.append(f"max abs error {m['max_abs']:.3g} is {m['scaled_error']:.3g} of the output's scale "
                        f"{scale:.3g} (its largest |reference|), more than {bound:g}")
    m["cosine"] = cosine(r, g)
    m["histogram"] = histogram(diff)
    if tol.get("atol") is not None or tol.get("rtol") is not None:
        bad = int((~(diff <= atol + rtol * np.abs(r))).sum())
        m["mismatched"] = bad
        if bad:
            failures.append(f"{bad} of {diff.size} values off by more than atol {atol:g} + rtol {rtol:g}·|ref| "
                            f"(max abs {m['max_abs']:.3g})")
    if tol.get("min_cosine") is not None and not m["cosine"] >= tol["min_cosine"]:
        failures.append(f"cosine {m['cosine']:.6f} < {tol['min_cosine']}")
    top1 = top1_agreement(r, g)
    if top1 is not None:
        m["top1"] = top1
        if tol.get("min_top1") is not None and top1 < tol["min_top1"]:
            failures.append(f"top-1 agreement {top1:.4f} < {tol['min_top1']}")
        rows = r.reshape(-1, r.shape[-1])
        decided = decided_rows(rows)
        m["rows"], m["decided"] = int(rows.shape[0]), int(decided.sum())
        agree = rows.argmax(axis=1) == g.reshape(rows.shape).argmax(axis=1)
        m["top1_decided"] = float(agree[decided].mean()) if decided.any() else None
        row_cos = np.array([cosine(a, b) for a, b in zip(rows, g.reshape(rows.shape))])
        m["row_cosine"] = {q: float(np.quantile(row_cos, x)) for q, x in
                           (("min", 0.0), ("p10", 0.1), ("median", 0.5), ("p90", 0.9), ("max", 1.0))}
        low = tol.get("min_top1_decided")
        if low is not None and m["top1_decided"] is not None and m["top1_decided"] < low:
            failures.append(f"decided top-1 agreement {m['top1_decided']:.4f} < {low} "
                            f"({int((agree & decided).sum())} of {m['decided']} rows where the reference is decided)")
    m["passed"] = not failures
    m["failures"] = failures
    return m


def scaled_error(max_abs: float, scale: float, non_finite: int) -> float:
    """The largest error as a share of the output's scale; inf where a value is not finite."""
    if non_finite or not np.isfinite(max_abs):
        return float("inf")
    if scale == 0.0:
        return 0.0 if max_abs == 0.0 else float("inf")
    return float(max_abs / scale)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Share of rows whose arg-max over the last axis agrees (class scores only)."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or not np.isfinite(got).all():
        return None
    a = ref.reshape(-1, ref.shape[-1]).argmax(axis=1)
    b = got.reshape(-1, got.shape[-1]).argmax(axis=1)
    return float((a == b).mean())


DECIDED_MARGIN = 0.1


def decided_rows(scores: np.ndarray) -> np.ndarray:
    """Rows (class scores over the last axis) whose softmax top-1 leads the second by DECIDED_MARGIN or more.

    Top-1 agreement on rows the reference itself barely decides measures noise:
    a flip between two near-equal classes is not a quantization error anyone sees.
    """
    z = scores.reshape(-1, scores.shape[-1]).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = np.sort(e / e.sum(axis=1, keepdims=True), axis=1)
    return (p[:, -1] - p[:, -2]) >= DECIDED_MARGIN


HISTOGRAM_EDGES = [0.0] + [10.0**e for e in range(-9, 2)] + [float("inf")]


def histogram(diff: np.ndarray) -> dict[str, Any]:
    """Counts of absolute errors in decades (0, 1e-9, …, 10, inf): the error distribution."""
    finite = diff[np.isfinite(diff)]
    counts, _ = np.histogram(finite, bins=np.array(HISTOGRAM_EDGES))
    return {"edges": ["0"] + [f"1e{e}" for e in range(-9, 2)] + ["inf"],
            "counts": [int(c) for c in counts], "non_finite": int(diff.size - finite.size)}
