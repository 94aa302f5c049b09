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

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from buildsys.engine.answer import Finished, Job, Outputs, StepAnswer
from buildsys.storage.store import Store
from buildsys.storage.untrusted import Rejected


def run_remote(wire: dict[str, Any]) -> dict[str, Any]:
    """Runs on a Dask worker: inputs from the shared cache, outputs back to it (a wire job and answer)."""
    from buildsys.runners.workers import run_isolated

    job = Job.from_wire(wire)
    with tempfile.TemporaryDirectory(prefix="buildsys-") as tmp:
        root = Path(tmp)
        store = Store(root / "store")
        inputs, missing = fetch_inputs(wire["cache"], job.artifacts, store, root / "in")
        if missing:
            return StepAnswer.failed(missing, remote=True).to_wire()
        local = dataclasses.replace(job, inputs=inputs, scratch=str(root / "out"), log=str(root / "step.log"))
        answer = run_isolated(local, job.threads, wire["timeout"])
        try:
            log_text = (root / "step.log").read_text(errors="replace")
        except OSError:
            log_text = ""
        if answer.ok:
            publish_outputs(wire["cache"], answer.outputs, root / "out", store)
        return dataclasses.replace(answer, remote=True, log_text=log_text).to_wire()


# -- a cluster worker's side of the shared cache -----------------------------------


def fetch_inputs(cache_url: str, artifacts: dict[str, tuple[str, list[list]]], store: Store,
                 folder: Path) -> tuple[dict[str, str], str | None]:
    """Place a step's input artifacts from the shared cache under `folder`: (input paths, why not or None)."""
    from buildsys.storage.sharedcache import SharedCache

    cache = SharedCache(cache_url)
    inputs: dict[str, str] = {}
    for name, (primary, files) in artifacts.items():
        try:
            found, why = cache.fetch({name: files}, store), ""
        except Rejected as exc:
            found, why = False, f": {exc}"
        if not found:
            return inputs, f"input {name} is missing or damaged in the shared cache {cache_url}{why}"
        for rel, digest, _ in files:
            store.materialize(digest, folder / name / rel)
        inputs[name] = str(folder / name / primary)
    return inputs, None


def publish_outputs(cache_url: str, outputs: Outputs, scratch: Path, store: Store) -> None:
    """Put a step's outputs from `scratch` into `store`, then their blobs into the shared cache.

    Only blobs: the action entry is written by the orchestrator's commit, once it has
    checked the answer and fetched the blobs back.
    """
    from buildsys.storage.sharedcache import SharedCache

    for files in outputs.values():
        for rel, digest, _ in files:
            store.put(scratch / rel, digest)
    SharedCache(cache_url).publish_blobs(outputs, store)


class DaskRunner:
    """The Runner protocol of buildsys.engine over a dask.distributed Client."""

    gpu_slots = 1 << 30  # GPU steps are held back by the workers' GPU resource, not here

    def __init__(self, scheduler: str, cache_url: str):
        from distributed import Client

        self.client = Client(scheduler, timeout="30s")
        self.cache_url = cache_url
        self.pending: dict[Any, tuple[Job, float, float]] = {}  # future -> (job, start, deadline)
        self.size = max(1, sum(self.client.nthreads().values()))

    @property
    def free(self) -> int:
        return self.size - len(self.pending)

    def prestart(self) -> None:
        pass

    def submit(self, job: Job, timeout: float) -> None:
        resources = {"GPU": 1} if job.device == "gpu" else None
        wire = {**job.to_wire(), "cache": self.cache_url, "timeout": timeout}
        future = self.client.submit(run_remote, wire, key=f"{job.id}-{time.time_ns()}", pure=False,
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
                answer = StepAnswer.from_wire(future.result())
            except Exception as exc:  # the worker died or the task could not be deserialised
                answer = StepAnswer.failed(f"the Dask task failed: {type(exc).__name__}: {exc}",
                                           time.monotonic() - started)
            finished.append(Finished(job, answer))
        now = time.monotonic()
        for future, (job, started, limit) in list(self.pending.items()):
            if now >= limit:
                future.cancel()
                del self.pending[future]
                finished.append(Finished(job, StepAnswer.failed(f"timed out after {now - started:.0f}s on the cluster",
                                                                now - started)))
        return finished

    def shutdown(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.client.close()
