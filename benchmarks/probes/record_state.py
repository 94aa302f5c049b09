"""State.record of 2,000 steps into a fresh database, each a key the step moves to: what a
restore (or a run) writes. Prints seconds per step.

Run by bench_cache_gc.py --noop under each version of the code (PYTHONPATH names it).
"""
import tempfile
import time
from pathlib import Path

from buildsys.storage.state import State, Trace

with tempfile.TemporaryDirectory() as d:
    s = State(Path(d))
    out = {"model": [["model.onnx", "ab" * 32, 100]]}
    for i in range(2000):
        s.record(Trace(f"r{i % 200}:export", f"{i:064x}", {"step": "export"}, {}, out, None, 0.1), "0" * 64)
    t0 = time.perf_counter()
    for i in range(2000, 4000):
        s.record(Trace(f"r{i % 200}:export", f"{i:064x}", {"step": "export"}, {}, out, None, 0.1), "0" * 64)
    print((time.perf_counter() - t0) / 2000)
    s.close()
