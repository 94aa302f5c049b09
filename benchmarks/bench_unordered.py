"""How long parity.unordered takes to pair detections: boxes [N, 4], scores [N], labels [N], the
candidate's rows in another order, at N = 100, 300, 1000 and 4096 (the most it pairs).

    .venv/bin/python benchmarks/bench_unordered.py [--runs 5]

Prints the median time of one comparison per N (one sample at one shape point; parity makes one
per point and sample).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from buildsys.core.numerics import compare_outputs


def detections(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"boxes": rng.uniform(0, 300, (n, 4)).astype(np.float32),
            "scores": np.sort(rng.uniform(0, 1, n)).astype(np.float32)[::-1].copy(),
            "labels": rng.integers(0, 80, n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    tol = {"atol": 1e-4, "rtol": 1e-3}
    for n in (100, 300, 1000, 4096):
        refs = detections(n, rng)
        order = np.arange(n).reshape(-1, 2)[:, ::-1].ravel() if n % 2 == 0 else np.arange(n)[::-1]
        got = {k: v[order] for k, v in refs.items()}
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            m = compare_outputs(refs, got, tol, list(refs))
            times.append(time.perf_counter() - start)
        matched = m["boxes"]["unordered"]["matched"]
        print(f"{n:5d} rows: {statistics.median(times) * 1e3:8.1f} ms (median of {args.runs}), {matched} of {n} matched")


if __name__ == "__main__":
    main()
