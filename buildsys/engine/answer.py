"""What moves between the scheduler, the rebuilder and a runner: jobs, step answers, outcomes.

A `Job` is everything a worker needs to run one step, decided before it runs; a
`StepAnswer` is what the step (or the runner, for a step that died or timed out)
says back; an `Outcome` is what happened to a step in this build. Jobs and answers
cross pipes and a Dask cluster as plain dicts (`to_wire`/`from_wire`); inside
the engine they are typed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from buildsys.core.verdict import Verdict

STATES = ("ran", "cached", "cutoff", "failed", "skipped", "unavailable", "would-run")
Outputs = dict[str, list[list]]  # output name -> [[file name, digest, size], ...]


@dataclass(frozen=True)
class Job:
    """One step to run: its class, parameters and every path it reads or writes."""

    id: str
    kind_path: str
    params: dict[str, Any]
    workspace: str
    scratch: str  # the step writes its outputs here, nowhere else
    inputs: dict[str, str]  # input name -> path of the upstream artifact under out/
    # input name -> (file name, files of the artifact): executors that fetch inputs by digest
    artifacts: dict[str, tuple[str, list[list]]]
    files: dict[str, str]  # workspace files the recipe names
    outputs: dict[str, str]  # output name -> file name to write in scratch
    log: str
    device: bool | str = False  # the step class's DEVICE
    lane: str = "ort"  # the worker template it forks from (buildsys.runners.worker.LANES)
    threads: int = 1  # the threads its runtime may use: the build's share of the cores per step

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Job:
        return cls(**{f.name: wire[f.name] for f in fields(cls) if f.name in wire})


@dataclass(frozen=True)
class StepAnswer:
    """What a step's run came to: its hashed outputs, or why it failed."""

    ok: bool
    seconds: float = 0.0
    outputs: Outputs = field(default_factory=dict)
    deps: dict[str, dict[str, str]] = field(default_factory=dict)  # discovered: {"files": ..., "dists": ...}
    verdict: Verdict | None = None
    summary: str = ""
    note: str = ""
    error: str = ""  # for a failure: what went wrong
    hint: str | None = None
    field: str | None = None  # the recipe field a failure is about
    traceback: str | None = None  # set for a bug in buildsys (an unexpected exception)
    remote: bool = False  # answered by a cluster worker: outputs are in the shared cache, not in scratch
    log_text: str = ""  # a remote step's log

    @classmethod
    def failed(cls, error: str, seconds: float = 0.0, hint: str | None = None, **more: Any) -> StepAnswer:
        return cls(ok=False, seconds=seconds, error=error, hint=hint, **more)

    def to_wire(self) -> dict[str, Any]:
        """A plain dict; a field that is None (no traceback, no hint) is left out, as from_wire reads it."""
        wire = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.verdict is not None:
            wire["verdict"] = self.verdict.to_json()
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> StepAnswer:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in wire.items() if k in known and v is not None}
        if isinstance(values.get("verdict"), dict):  # anything else is left for the commit's check to refuse
            values["verdict"] = Verdict.from_json(values["verdict"])
        return cls(**values)


@dataclass(frozen=True)
class Finished:
    """A job a runner is done with, and the answer it got."""

    job: Job
    answer: StepAnswer


@dataclass
class Outcome:
    """What happened to one step in this build."""

    step: str
    state: str  # one of STATES
    reason: str
    seconds: float = 0.0
    outputs: Outputs | None = None
    verdict: Verdict | None = None
    message: str | None = None  # failure message (with hint)
    log: str | None = None
    key: str | None = None  # the step's key, where it could be computed
    note: str = ""  # a ran step's word on how it made its output (StepResult.note)
    reasons: tuple[str, ...] = ()  # a step that would run: each change behind `reason` (keys.Reasons)

    @property
    def blocks(self) -> bool:
        """Whether steps that depend on this one cannot go ahead."""
        if self.state in ("failed", "skipped", "unavailable"):
            return True
        return self.verdict is not None and not self.verdict

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.step, "state": self.state, "reason": self.reason,
                             "seconds": round(self.seconds, 3)}
        if self.verdict is not None:
            d.update(self.verdict.brief().to_json())
        if self.note:
            d["note"] = self.note
        if self.message:
            d["message"] = self.message
        if self.log:
            d["log"] = self.log
        return d
