"""How a candidate output is compared with its reference: metrics and the verdict."""
from __future__ import annotations

from typing import Any

import numpy as np

from buildsys.core.verdict import Verdict


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
        m.update(Verdict(False, failures=(f"shape {list(got.shape)} != reference {list(ref.shape)}",)).to_json())
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
        m["agree_decided"] = int((agree & decided).sum())
        row_cos = np.array([cosine(a, b) for a, b in zip(rows, g.reshape(rows.shape))])
        m["row_cosine"] = {q: float(np.quantile(row_cos, x)) for q, x in
                           (("min", 0.0), ("p10", 0.1), ("median", 0.5), ("p90", 0.9), ("max", 1.0))}
        low = tol.get("min_top1_decided")
        if low is not None and m["top1_decided"] is not None and m["top1_decided"] < low:
            failures.append(f"decided top-1 agreement {m['top1_decided']:.4f} < {low} "
                            f"({int((agree & decided).sum())} of {m['decided']} rows where the reference is decided)")
    m.update(Verdict(not failures, failures=tuple(failures)).to_json())
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
    """Share of rows whose arg-max over the last axis agrees (class scores only; None without a row)."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or ref.size == 0 or not np.isfinite(got).all():
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


# Rows compared in any order (parity.unordered): the bound keeps the pair matrix (rows², float32) at 64 MiB.
MAX_UNORDERED_ROWS = 4096
_BLOCK_ELEMENTS = 1 << 22  # element differences computed at once while pairing rows (32 MiB of float64)
# Whether a failed output's rows are the reference's in another order is asked only where that is cheap.
_PERMUTATION_CHECK_ELEMENTS = 1 << 24


def compare_outputs(refs: dict[str, np.ndarray], gots: dict[str, np.ndarray], tol: dict[str, Any],
                    unordered: tuple[str, ...] | list[str] = ()) -> dict[str, dict[str, Any]]:
    """Every output of one sample compared under `tol`, in the order of `refs`.

    The outputs named in `unordered` (detections: boxes, scores, labels) share their
    first axis and are compared as rows in any order: each reference row is paired
    with a distinct candidate row, matched as a whole across those outputs
    (`match_rows`), and the figures are computed on the candidate so reordered.
    An output compared element by element that fails, but whose rows are the
    reference's in another order, says so and names the setting.
    """
    group = [n for n in unordered if n in refs and n in gots]
    out = _compare_unordered({n: refs[n] for n in group}, {n: gots[n] for n in group}, tol) if group else {}
    for name in refs:
        if name not in out:
            out[name] = compare(refs[name], gots[name], tol)
    for name in refs:
        m = out[name]
        if name not in group and not Verdict.read(m) and _rows_permuted(refs[name], gots[name], tol):
            rows = refs[name].shape[0]
            same = [n for n in refs if refs[n].ndim >= 1 and refs[n].shape[0] == rows] or [name]
            m["permuted"] = True
            why = (f"its {rows} rows match the reference's in another order: if the order carries no meaning "
                   f"(detections), compare them as rows in any order with parity: {{unordered: [{', '.join(same)}]}}")
            m.update(Verdict(False, failures=(*(Verdict.read(m).failures or ()), why)).to_json())
    return {name: out[name] for name in refs}


def _compare_unordered(refs: dict[str, np.ndarray], gots: dict[str, np.ndarray],
                       tol: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = list(refs)
    problem = _row_problem(refs, "reference") or _row_problem(gots, "candidate")
    if problem is None:
        n_ref, n_got = refs[names[0]].shape[0], gots[names[0]].shape[0]
        if n_ref != n_got:
            problem = (f"{n_got} rows, the reference has {n_ref} (parity.unordered pairs the rows one to one: "
                       "the counts must agree)")
        elif n_ref > MAX_UNORDERED_ROWS:
            problem = f"{n_ref} rows, more than the {MAX_UNORDERED_ROWS} that parity.unordered can match"
        else:
            mismatched = [n for n in names if refs[n].shape[1:] != gots[n].shape[1:]]
            if mismatched:
                problem = "rows of another shape: " + ", ".join(
                    f"{n} {list(gots[n].shape)} (reference {list(refs[n].shape)})" for n in mismatched)
    if problem is not None:
        return {n: {"shape": list(gots[n].shape), "reference_shape": list(refs[n].shape),
                    **Verdict(False, failures=(problem,)).to_json(), "unordered": {"outputs": names, "rows": None, "matched": None}}
                for n in names}
    cost, feasible = _pair_costs(refs, gots, tol)
    pairing, matched = match_rows(cost, feasible)
    rows = len(pairing)
    out = {}
    for n in names:
        m = compare(refs[n], gots[n][pairing], tol)
        m["unordered"] = {"outputs": names, "rows": rows, "matched": matched}
        out[n] = m
    if matched < rows:
        first = out[names[0]]
        first.update(Verdict(False, failures=(
            f"{rows - matched} of {rows} reference rows have no candidate row within atol {tol.get('atol') or 0:g} + "
            f"rtol {tol.get('rtol') or 0:g}·|ref| across {', '.join(names)} (rows compared in any order)",
            *(Verdict.read(first).failures or ()))).to_json())
    return out


def _row_problem(arrays: dict[str, np.ndarray], which: str) -> str | None:
    """Why `arrays` cannot be compared as rows: an output without a first axis, or first axes that differ."""
    scalar = [n for n, a in arrays.items() if a.ndim == 0]
    if scalar:
        return f"parity.unordered compares rows along the first axis; the {which}'s {scalar[0]} is a scalar"
    counts = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(counts.values())) > 1:
        return (f"parity.unordered needs outputs that share their first axis; the {which} has "
                + ", ".join(f"{n} {list(a.shape)}" for n, a in arrays.items()))
    return None


def _pair_costs(refs: dict[str, np.ndarray], gots: dict[str, np.ndarray],
                tol: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """cost[i, j]: how far candidate row j is from reference row i, worst element over every output.

    With atol/rtol, the cost is the error over its allowance (atol + rtol·|ref|), so a
    pair is within tolerance where it is <= 1 (`feasible`). A precision judged by
    cosine or top-1 alone has no per-element allowance: the cost is the error over the
    output's largest magnitude, rows are paired by it, and its gates judge the pairing.
    """
    atol, rtol = tol.get("atol"), tol.get("rtol")
    elementwise = atol is not None or rtol is not None
    n = next(iter(refs.values())).shape[0]
    cost = np.zeros((n, n), dtype=np.float32)
    for name in refs:
        width = int(np.prod(refs[name].shape[1:]))  # not -1: no rows (no detections) has no width to infer
        r = refs[name].reshape(n, width).astype(np.float64)
        g = gots[name].reshape(n, width).astype(np.float64)
        if elementwise:
            allowance = np.maximum((atol or 0.0) + (rtol or 0.0) * np.abs(r), 1e-300)
        else:
            finite = np.abs(r[np.isfinite(r)])
            allowance = np.full_like(r, max(float(finite.max()) if finite.size else 0.0, 1e-12))
        step = max(1, _BLOCK_ELEMENTS // max(1, n * r.shape[1]))  # rows × rows × row size at once is too much
        for start in range(0, n, step):
            rows = slice(start, start + step)
            diff = np.abs(g[None, :, :] - r[rows, None, :]) / allowance[rows, None, :]
            block = np.nan_to_num(diff, nan=np.inf).max(axis=2, initial=0.0)
            np.maximum(cost[rows], block.astype(np.float32), out=cost[rows])
    return cost, (cost <= 1.0) if elementwise else None


def match_rows(cost: np.ndarray, feasible: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Pair each reference row i with a distinct candidate row: (candidate index per reference row, pairs feasible).

    Greedy first (pairs in order of cost, each row taken once); then, where `feasible`
    says which pairs are within tolerance, augmenting paths (Kuhn's algorithm) turn
    the greedy pairing into a maximum matching of feasible pairs, so a set of rows
    passes exactly when every reference row can have its own candidate row within
    tolerance, however near-tied rows were ordered. Rows left over are paired in
    order of cost, for the figures. Without `feasible` every pair counts.
    """
    n = cost.shape[0]
    pair = np.full(n, -1)   # reference row -> candidate row
    owner = np.full(n, -1)  # candidate row -> reference row
    candidates = np.flatnonzero(feasible) if feasible is not None else np.arange(n * n)
    paired = 0
    for flat in candidates[np.argsort(cost.ravel()[candidates], kind="stable")]:
        i, j = divmod(int(flat), n)
        if pair[i] < 0 and owner[j] < 0:
            pair[i], owner[j] = j, i
            paired += 1
            if paired == n:
                break
    if feasible is not None:
        choices = [np.flatnonzero(feasible[i])[np.argsort(cost[i, feasible[i]], kind="stable")] for i in range(n)]
        for i in range(n):
            if pair[i] < 0 and choices[i].size:
                _augment(i, choices, pair, owner)
    matched = int((pair >= 0).sum())  # without `feasible` the greedy pass pairs every row
    free = iter(j for j in np.argsort(cost.min(axis=0, initial=np.inf), kind="stable") if owner[j] < 0)
    for i in range(n):
        if pair[i] < 0:
            j = next(free)
            pair[i], owner[j] = j, i
    return pair, matched


def _augment(root: int, choices: list[np.ndarray], pair: np.ndarray, owner: np.ndarray) -> None:
    """One augmenting path from the unpaired reference row `root`, if there is one (iterative depth-first search)."""
    seen = [False] * len(owner)
    stack = [(root, iter(choices[root]))]
    path: list[tuple[int, int]] = []  # (reference row, candidate row) tried on the way down
    while stack:
        i, it = stack[-1]
        j = next((int(j) for j in it if not seen[j]), None)
        if j is None:  # every candidate of row i tried: back up
            stack.pop()
            if path:
                path.pop()
        elif owner[j] < 0:  # a free candidate: each row on the path takes the next one's
            for a, b in path + [(i, j)]:
                pair[a], owner[b] = b, a
            return
        else:
            seen[j] = True
            path.append((i, j))
            stack.append((int(owner[j]), iter(choices[int(owner[j])])))


def _rows_permuted(ref: np.ndarray, got: np.ndarray, tol: dict[str, Any]) -> bool:
    """Whether `got` holds `ref`'s rows (along the first axis) in another order, each within tolerance."""
    if ref.shape != got.shape or ref.ndim == 0 or not 1 < ref.shape[0] <= MAX_UNORDERED_ROWS:
        return False
    if ref.shape[0] * ref.size > _PERMUTATION_CHECK_ELEMENTS:
        return False
    if tol.get("atol") is None and tol.get("rtol") is None:
        return False
    cost, feasible = _pair_costs({"x": ref}, {"x": got}, tol)
    return match_rows(cost, feasible)[1] == ref.shape[0]
