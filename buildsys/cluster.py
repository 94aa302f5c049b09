"""Running steps on a Dask distributed cluster, with the shared cache as the meeting point.

The orchestrator still decides everything (keys, cache hits, order); only steps
that must run are sent out. A remote worker fetches the step's input artifacts
from the shared cache by digest, runs the step exactly as a local worker would,
uploads the blobs it wrote and answers with their digests. On the worker the step
runs in a forked child of a template process, exactly as on a local build, so a
Dask worker that served other recipes' steps leaks nothing into this one. The orchestrator then
fetches those blobs, verifies them, and commits as for a local step, so a build
through the cluster records the same keys and bytes as a local one.

Workers must see the project's source at the same path as the orchestrator (a
shared checkout); artifacts never travel through a shared filesystem. Steps
whose class says `DEVICE = "gpu"` only go to workers started with
`--resources GPU=1`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from buildsys.workers import Finished


def run_remote(job: dict[str, Any]) -> dict[str, Any]:
    """Runs on a Dask worker: inputs from the shared cache, outputs back to it."""
    from buildsys.sharedcache import SharedCache
    from buildsys.store import Store
    from buildsys.workers import run_isolated

    cache = SharedCache(job["cache"])
    with tempfile.TemporaryDirectory(prefix="buildsys-") as tmp:
        root = Path(tmp)
        store = Store(root / "store")
        inputs = {}
        for name, (primary, files) in job["artifacts"].items():
            if not cache.fetch({name: files}, store):
                return {"ok": False, "seconds": 0.0, "remote": True,
                        "error": f"input {name} is missing or damaged in the shared cache {job['cache']}"}
            folder = root / "in" / name
            for rel, digest, _ in files:
                store.materialize(digest, folder / rel)
            inputs[name] = str(folder / primary)
        local = {**job, "inputs": inputs, "scratch": str(root / "out"), "log": str(root / "step.log")}
        answer = run_isolated(local, job["threads"], job["timeout"])
        answer["remote"] = True
        try:
            answer["log_text"] = (root / "step.log").read_text(errors="replace")
        except OSError:
            answer["log_text"] = ""
        if answer["ok"]:
            for files in answer["outputs"].values():
                for rel, digest, _ in files:
                    store.put(root / "out" / rel, digest)
            cache.publish_blobs(answer["outputs"], store)
        return answer


class DaskRunner:
    """The Runner protocol of buildsys.build over a dask.distributed Client."""

    gpu_slots = 1 << 30  # GPU steps are held back by the workers' GPU resource, not here

    def __init__(self, scheduler: str, cache_url: str, threads: int):
        from distributed import Client

        self.client = Client(scheduler, timeout="30s")
        self.cache_url = cache_url
        self.threads = threads
        self.pending: dict[Any, tuple[dict[str, Any], float, float]] = {}  # future -> (job, start, deadline)
        self.size = max(1, sum(self.client.nthreads().values()))

    @property
    def free(self) -> int:
        return self.size - len(self.pending)

    def prestart(self) -> None:
        pass

    def submit(self, job: dict[str, Any], timeout: float) -> None:
        resources = {"GPU": 1} if job.get("device") == "gpu" else None
        job = {**job, "cache": self.cache_url, "threads": self.threads, "timeout": timeout}
        future = self.client.submit(run_remote, job, key=f"{job['id']}-{time.time_ns()}", pure=False,
                                    resources=resources)
        self.pending[future] = (job, time.monotonic(), time.monotonic() + timeout)

    def wait(self) -> list[Finished]:
        from distributed import wait as dask_wait

        if not self.pending:
            return []
        deadline = min(d for _, _, d in self.pending.values())
        done, _ = dask_wait(list(self.pending), timeout=max(0.1, deadline - time.monotonic()),
                            return_when="FIRST_COMPLETED")
        finished = []
        for future in done:
            job, started, _ = self.pending.pop(future)
            try:
                answer = future.result()
            except Exception as exc:  # the worker died or the task could not be deserialised
                answer = {"ok": False, "seconds": time.monotonic() - started,
                          "error": f"the Dask task failed: {type(exc).__name__}: {exc}"}
            finished.append(Finished(job, answer))
        now = time.monotonic()
        for future, (job, started, limit) in list(self.pending.items()):
            if now >= limit:
                future.cancel()
                del self.pending[future]
                finished.append(Finished(job, {"ok": False, "seconds": now - started,
                                               "error": f"timed out after {now - started:.0f}s on the cluster"}))
        return finished

    def shutdown(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.client.close()
