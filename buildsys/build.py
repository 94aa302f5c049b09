"""The scheduler: walks the step graph in topological order and runs what is stale.

Ordering is graphlib's; the decision for each step is the rebuilder's; the
running is a worker pool's. This module only wires the three together and
keeps the record of what happened to every step.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections import deque
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any, Protocol

from buildsys import safepath
from buildsys.canonical import digest_data
from buildsys.errors import BuildsysError
from buildsys.rebuilder import Decision, Outputs, Rebuilder
from buildsys.resolve import Graph, StepSpec
from buildsys.state import State, Trace
from buildsys.steps import step_class
from buildsys.store import Store
from buildsys.untrusted import Rejected, check_entry, declared_files
from buildsys.workers import Finished

STATES = ("ran", "cached", "cutoff", "failed", "skipped", "unavailable", "would-run")


@dataclass
class Outcome:
    step: str
    state: str  # one of STATES
    reason: str
    seconds: float = 0.0
    outputs: Outputs | None = None
    verdict: dict | None = None
    message: str | None = None  # failure message (with hint)
    log: str | None = None
    key: str | None = None  # the step's key, where it could be computed
    note: str = ""  # a ran step's word on how it made its output (StepResult.note)

    @property
    def blocks(self) -> bool:
        """Whether steps that depend on this one cannot go ahead."""
        if self.state in ("failed", "skipped", "unavailable"):
            return True
        return self.verdict is not None and not self.verdict.get("passed", True)

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.step, "state": self.state, "reason": self.reason,
                             "seconds": round(self.seconds, 3)}
        if self.verdict is not None:
            d["passed"] = bool(self.verdict.get("passed"))
            d["summary"] = self.verdict.get("summary", "")
        if self.note:
            d["note"] = self.note
        if self.message:
            d["message"] = self.message
        if self.log:
            d["log"] = self.log
        return d


class Runner(Protocol):
    @property
    def free(self) -> int: ...
    def submit(self, job: dict[str, Any], timeout: float) -> None: ...
    def wait(self) -> list[Finished]: ...
    def shutdown(self) -> None: ...


class Reporter(Protocol):
    def started(self, step: StepSpec) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...


@dataclass
class Workspace:
    root: Path
    out: Path = field(init=False)
    meta: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.out = self.root / "out"
        self.meta = self.out / ".buildsys"

    @property
    def tmp(self) -> Path:
        return self.meta / "tmp"

    def refuse_links(self) -> None:
        """Raise UnsafePath when a folder buildsys writes or empties resolves outside out/."""
        for folder in (self.meta, self.meta / "store", self.tmp, self.out / "reports"):
            safepath.ensure_inside(self.out, folder, "out/")


class Build:
    def __init__(self, ws: Workspace, graph: Graph, state: State, store: Store, runner: Runner,
                 reporter: Reporter, keep_going: bool = False, dry_run: bool = False,
                 timeout: float | None = None, shared=None):
        self.ws = ws
        self.graph = graph
        self.state = state
        self.store = store
        self.runner = runner
        self.reporter = reporter
        self.keep_going = keep_going
        self.dry_run = dry_run
        self.timeout = timeout  # per step, overriding each step's own limit
        self.rebuilder = Rebuilder(ws.root, ws.out, state, store, shared, fetch=not dry_run)
        self.shared = shared
        self.outcomes: dict[str, Outcome] = {}
        self.decisions: dict[str, Decision] = {}
        self.stopped_by: str | None = None
        # Steps bound to a GPU run one at a time on this machine: two engine builds on one
        # GPU would share its memory and skew each other's kernel timings. A cluster
        # executor schedules GPUs itself (Dask resources) and says how many it has.
        self.gpu_slots = getattr(runner, "gpu_slots", 1)

    def run(self, selected: set[str]) -> list[Outcome]:
        if not self.dry_run and os.path.lexists(self.ws.tmp):
            self.ws.refuse_links()
            safepath.remove(self.ws.tmp)  # scratch left by an interrupted build; we hold the lock
        sorter = TopologicalSorter({s: self.graph.steps[s].upstream & selected for s in selected})
        sorter.prepare()
        ready: deque[str] = deque()
        to_run: deque[str] = deque()
        running = gpu_busy = 0
        try:
            while sorter.is_active():
                ready.extend(sorted(sorter.get_ready()))
                while ready:
                    sid = ready.popleft()
                    outcome = self._prepare(self.graph.steps[sid])
                    if outcome is None:
                        to_run.append(sid)
                    else:
                        self._finish(sorter, outcome)
                while to_run and self.runner.free > 0:
                    sid = self._next(to_run, gpu_busy)
                    if sid is None:
                        break  # only GPU steps wait, and the GPU is taken
                    if self.stopped_by:
                        self._finish(sorter, Outcome(sid, "skipped", f"build stopped after {self.stopped_by} failed"))
                        continue
                    self._submit(self.graph.steps[sid])
                    running += 1
                    gpu_busy += self._on_gpu(sid)
                if running:
                    for done in self.runner.wait():
                        running -= 1
                        gpu_busy -= self._on_gpu(done.job["id"])
                        self._finish(sorter, self._commit(done))
        except BaseException:
            with contextlib.suppress(BuildsysError):  # the failure in flight is the one to report
                self.state.flush()
            raise
        self.state.flush()
        position = {sid: i for i, sid in enumerate(self.graph.steps)}
        return sorted(self.outcomes.values(), key=lambda o: position[o.step])

    def _on_gpu(self, sid: str) -> int:
        """1 for a step that holds the GPU while it runs (its class says DEVICE = "gpu")."""
        return int(getattr(step_class(self.graph.steps[sid].kind_path), "DEVICE", False) == "gpu")

    def _next(self, to_run: deque[str], gpu_busy: int) -> str | None:
        """The first step that may start now: one GPU step at a time, CPU steps beside it."""
        for i, sid in enumerate(to_run):
            if gpu_busy < self.gpu_slots or not self._on_gpu(sid):
                del to_run[i]
                return sid
        return None

    # -- before running ------------------------------------------------------

    def _prepare(self, step: StepSpec) -> Outcome | None:
        """Settle the step without running it, or return None when it must run."""
        data_upstream = {ref.partition("#")[0] for ref in step.inputs.values()}
        step_upstream = step.upstream  # a property that builds a new set on each call
        for up in sorted(step_upstream):
            o = self.outcomes[up]
            if o.state == "would-run" and up in data_upstream:
                return Outcome(step.id, "would-run", f"upstream {up} would run")
            if o.blocks:
                what = "failed parity" if o.state not in ("failed", "skipped", "unavailable") else o.state
                return Outcome(step.id, "skipped", f"blocked: {up} {what}")
        if self.stopped_by:
            return Outcome(step.id, "skipped", f"build stopped after {self.stopped_by} failed")
        escape = self.rebuilder.escapes(step)
        if escape:
            if not self.keep_going:
                self.stopped_by = step.id
            return Outcome(step.id, "failed", "unsafe output path",
                           message=f"{escape}\n  hint: remove the link; out/ must hold real folders")
        cls = step_class(step.kind_path)
        why_not = cls.unavailable(step.params)
        if why_not:
            return Outcome(step.id, "unavailable", why_not)
        upstream = {up: self.outcomes[up].outputs for up in step_upstream if self.outcomes[up].outputs}
        decision = self.rebuilder.decide(step, upstream)
        cut = any(self.outcomes[u].state in ("ran", "cutoff") for u in data_upstream)
        if decision.action in ("cached", "restore"):
            if self.dry_run:
                return Outcome(step.id, "cutoff" if cut else "cached", decision.reason,
                               outputs=decision.outputs, verdict=decision.verdict)
            if self.rebuilder.materialize(step, decision.outputs):
                if decision.action == "restore":
                    self.state.record(Trace(step.id, decision.key, decision.doc, decision.deps or {},
                                            decision.outputs, decision.verdict, 0.0), digest_data(decision.deps or {}))
                state = "cutoff" if cut and decision.action == "cached" else "cached"
                reason = "inputs unchanged after upstream re-ran" if state == "cutoff" else decision.reason
                return Outcome(step.id, state, reason, outputs=decision.outputs, verdict=decision.verdict)
            self.state.forget_action(decision.key)
            decision = Decision("run", decision.key, decision.doc, "a stored artifact was damaged or missing")
        if self.dry_run:
            return Outcome(step.id, "would-run", decision.reason, key=decision.key)
        self.decisions[step.id] = decision
        return None

    def _submit(self, step: StepSpec) -> None:
        log = self.ws.out / step.log
        log.unlink(missing_ok=True)
        scratch = self.ws.tmp / step.id.replace(":", "__").replace("[", "-").replace("]", "")
        inputs, artifacts = {}, {}
        for name, ref in step.inputs.items():
            sid, _, output = ref.partition("#")
            inputs[name] = str(self.ws.out / self.graph.steps[sid].outputs[output])
            # by digest too, for executors that fetch inputs from the shared cache
            artifacts[name] = (Path(inputs[name]).name, self.outcomes[sid].outputs[output])
        job = {
            "id": step.id, "kind_path": step.kind_path, "params": step.params,
            "workspace": str(self.ws.root), "scratch": str(scratch), "inputs": inputs, "artifacts": artifacts,
            "files": {k: str(self.ws.root / v) for k, v in step.files.items()},
            "outputs": {k: Path(v).name for k, v in step.outputs.items()}, "log": str(log),
            "device": getattr(step_class(step.kind_path), "DEVICE", False),
        }
        self.reporter.started(step)
        self.runner.submit(job, self.timeout or step.timeout)

    # -- after running ---------------------------------------------------------

    def _commit(self, done: Finished) -> Outcome:
        step = self.graph.steps[done.job["id"]]
        decision = self.decisions.pop(step.id)
        answer = done.answer
        scratch = Path(done.job["scratch"])
        seconds = answer.get("seconds", 0.0)
        try:
            if not answer["ok"]:
                return self._failed(step, decision, answer, seconds)
            moved = self._changed_while_running(step, decision, answer.get("deps", {}))
            if moved:
                answer = {"error": f"{moved} while the step ran; its result was not recorded",
                          "hint": "run the build again once the files are settled"}
                return self._failed(step, decision, answer, seconds)
            rejected = _rejected(step, answer)
            if rejected:
                return self._failed(step, decision, {"error": rejected}, seconds)
            outputs: Outputs = answer["outputs"]
            if answer.get("remote"):
                (self.ws.out / step.log).parent.mkdir(parents=True, exist_ok=True)
                (self.ws.out / step.log).write_text(str(answer.get("log_text", "")))
                try:
                    found = self.shared.fetch(outputs, self.store)
                except Rejected as exc:
                    found, why = False, f": {exc}"
                else:
                    why = ""
                if not found:
                    answer = {"error": "the outputs the cluster reported are missing or damaged in the shared cache"
                                       + why}
                    return self._failed(step, decision, answer, seconds)
            for name, files in outputs.items():
                target_dir = self.rebuilder.output_dir(step, name)
                for rel, digest, _ in files:
                    if not answer.get("remote"):
                        self.store.put(scratch / rel, digest)
                    self.store.materialize(digest, target_dir / rel)
                    self.state.remember(target_dir / rel, digest)
            deps = answer.get("deps") or {}
            self.state.record(Trace(step.id, decision.key, decision.doc, deps, outputs, answer.get("verdict"),
                                    seconds), digest_data(deps))
            if self.shared is not None:
                self.shared.publish(decision.key, deps, outputs, answer.get("verdict"), self.store)
            return Outcome(step.id, "ran", decision.reason, seconds, outputs, answer.get("verdict"),
                           log=step.log, note=answer.get("note", ""))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _changed_while_running(self, step: StepSpec, decision: Decision, deps: dict) -> str | None:
        for name, rel in step.files.items():
            if (self.state.digest(self.ws.root / rel) or "missing") != decision.doc["files"][name]:
                return f"{rel} changed"
        for rel, digest in deps.get("files", {}).items():
            if self.state.digest(self.ws.root / rel) != digest:
                return f"source {rel} changed"
        return None

    def _failed(self, step: StepSpec, decision: Decision, answer: dict, seconds: float) -> Outcome:
        message = self.graph.locate(step.recipe, answer.get("field")) + answer["error"]
        if answer.get("hint"):
            message += f"\n  hint: {answer['hint']}"
        if answer.get("traceback"):
            message += "\n  this is a bug in buildsys; the traceback is in the log"
        message += f"\n  log: {Path('out') / step.log}"
        self.state.record_failure(step.id, decision.key, message, step.log)
        if not self.keep_going and not self.stopped_by:
            self.stopped_by = step.id
        return Outcome(step.id, "failed", decision.reason, seconds, message=message, log=step.log)

    def _finish(self, sorter: TopologicalSorter, outcome: Outcome) -> None:
        self.outcomes[outcome.step] = outcome
        sorter.done(outcome.step)
        self.reporter.finished(outcome)


def _rejected(step: StepSpec, answer: dict) -> str | None:
    """Why a worker's answer cannot be committed (a cluster worker's is untrusted input), or None."""
    try:
        check_entry(declared_files(step.outputs), {**answer, "deps": answer.get("deps") or {}})
    except Rejected as exc:
        who = "the cluster worker's" if answer.get("remote") else "the worker's"
        return f"{who} answer was rejected: {exc}"
    return None


def select(graph: Graph, only: list[str] | None) -> set[str]:
    """The steps a build covers: all, or `--only` steps (by name or family) and what they need."""
    if not only:
        return set(graph.steps)
    wanted = {s.id for s in graph.steps.values() if s.name in only or s.family in only}
    return graph.closure(wanted)
