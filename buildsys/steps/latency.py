"""int8 against fp32 latency, measured so that a busy, shared machine does not decide it.

Both sides are what a user ships: the ORT-format model the `engine[onnxruntime-*]`
step writes (ORT_ENABLE_ALL, optimised for this CPU), the fp32 one made from the
same export as the int8 one, whether or not the recipe has an fp32 target.

Two measures, interleaved run by run so that a change in the machine's load falls
on both models alike:

- **CPU time per run at one intra-op thread** (`time.process_time`): the time the
  process's CPU spent on the run. Other processes competing for the cores stretch
  wall time, not this; it is the figure the speed-up is judged by.
- **wall time per run at the recipe's threads** (`time.perf_counter`): what a caller
  waits, shown beside it.

Each is recorded as median and minimum over enough runs for a stable median (at
least MIN_RUNS, more while a time budget allows), and the record names its method.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

MIN_RUNS = 60
MAX_RUNS = 400
BUDGET_S = 4.0  # measuring time per comparison (both models, both measures), beyond MIN_RUNS
WARMUP = 3
METHOD = ("process CPU time per run at 1 intra-op thread (time.process_time), median and min of {runs} runs "
          "interleaved with the other model's, beside wall time per run at {threads} threads; "
          "ORT-format models as engine[onnxruntime-*] writes them, at the opt shape")


def ort_format(src: Path, dst: Path, threads: int) -> Path:
    """`src` as the ORT-format engine engine[onnxruntime-*] makes of it (same options), written to `dst`."""
    from buildsys.steps.sessions import cpu_session, engine_options

    so = engine_options(threads)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.optimized_model_filepath = str(dst)
    cpu_session(src, threads, so)
    return dst


def compare(models: dict[str, Path], feeds: dict[str, Any], threads: int, budget_s: float = BUDGET_S,
            min_runs: int = MIN_RUNS) -> dict[str, Any]:
    """CPU time at 1 thread and wall time at `threads` of each model on `feeds`, interleaved.

    Returns {"method", "runs", "threads", "cpu_ms": {model: {"median", "min"}}, "wall_ms": {...}}.
    """
    from buildsys.steps.sessions import cpu_session

    one = {k: cpu_session(p, 1) for k, p in models.items()}
    many = {k: cpu_session(p, threads) for k, p in models.items()}
    t0 = time.perf_counter()
    for _ in range(WARMUP):
        for s in (*one.values(), *many.values()):
            s.run(None, feeds)
    per_round = (time.perf_counter() - t0) / WARMUP
    runs = max(min_runs, min(MAX_RUNS, int(budget_s / max(per_round, 1e-6))))
    cpu: dict[str, list[float]] = {k: [] for k in models}
    wall: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(runs):
        for k, s in one.items():
            c0 = time.process_time()
            s.run(None, feeds)
            cpu[k].append(time.process_time() - c0)
        for k, s in many.items():
            w0 = time.perf_counter()
            s.run(None, feeds)
            wall[k].append(time.perf_counter() - w0)
    return {"method": METHOD.format(runs=runs, threads=threads), "runs": runs, "threads": threads,
            "cpu_ms": {k: _figures(v) for k, v in cpu.items()}, "wall_ms": {k: _figures(v) for k, v in wall.items()}}


def _figures(times: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(times) * 1e3, 4), "min": round(min(times) * 1e3, 4)}


def int8_against_fp32(fp32: Path, int8: Path, feeds: dict[str, Any], threads: int, folder: Path,
                      budget_s: float = BUDGET_S) -> dict[str, Any]:
    """The int8 engine against the fp32 engine of the same export: `compare`'s record, with the
    headline figures (`fp32_ms`, `int8_ms`: CPU time medians at 1 thread) and `speedup`."""
    engines = {"fp32": ort_format(fp32, folder / "fp32.ort", threads),
               "int8": ort_format(int8, folder / "int8.ort", threads)}
    found = compare(engines, feeds, threads, budget_s)
    f, i = found["cpu_ms"]["fp32"]["median"], found["cpu_ms"]["int8"]["median"]
    return {**found, "fp32_ms": f, "int8_ms": i, "speedup": round(f / i, 3) if i else None,
            "fp32": f"fp32 engine: the ORT format of {fp32.name}", "int8": f"int8 engine: the ORT format of {int8.name}"}
