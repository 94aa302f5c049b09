"""The step protocol: a small callable object that does its work in a scratch folder.

A step declares what it reads (inputs, parameters, tools, device) as class
attributes and constructor arguments; `buildsys.engine.stepjob.run_job` wraps every
step the same way (scratch folder, log, timing, hashing of what it wrote, answer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from buildsys.core.verdict import Verdict
from buildsys.steps.params import from_slice

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class StepContext:
    workspace: Path
    scratch: Path  # the step writes its outputs here, nowhere else
    inputs: dict[str, Path]  # upstream artifacts, materialised under out/
    files: dict[str, Path]  # workspace files the recipe names (a checkpoint)
    outputs: dict[str, str]  # output name -> file name to write in scratch
    threads: int = 1

    def output(self, name: str) -> Path:
        return self.scratch / self.outputs[name]


@dataclass
class StepResult:
    # output name -> files written in scratch (primary first); default: the declared name
    outputs: dict[str, list[str]] = field(default_factory=dict)
    # what the step discovered it depends on: {"files": {path: digest}, "dists": {name: version}}
    deps: dict[str, dict[str, str]] = field(default_factory=dict)
    # a judgement on the artifact (parity): whether it passed, in one line
    verdict: Verdict | None = None
    summary: str = ""
    # what the user must know about how the output was made (a step passed over): console and --json
    note: str = ""


# The step's typed parameters (its PARAMS dataclass; the plain slice where it declares none).
P = TypeVar("P")


class Step(Generic[P]):
    KIND = ""
    VERSION = 1
    TOOLS: tuple[str, ...] = ()
    DEVICE: bool | str = False  # True: bound to this processor; "gpu": to this GPU model
    DISCOVERS = False  # imports project code: its source files join the key
    # Runs no project code (never imports the recipe's model, no torch) and leaves the
    # interpreter as it found it: runs in the worker's resident process (buildsys.runners.worker).
    RESIDENT = False
    PARAMS: type[DataclassInstance] | None = None  # its typed parameters (buildsys.steps.params); None: the slice as it came

    def __init__(self, params: dict[str, Any], ctx: StepContext):
        # The slice stays plain data up to here: it is what the key hashes and the workers receive;
        # `slice` keeps it for the helpers shared with tools outside the steps (bench), which take it so.
        self.slice = params
        self.params: P = cast(P, from_slice(self.PARAMS, params) if self.PARAMS is not None else params)
        self.ctx = ctx

    def run(self) -> StepResult:
        raise NotImplementedError

    @classmethod
    def lane(cls, params: dict[str, Any]) -> str:
        """The worker template this step forks from (buildsys.runners.worker.LANES): the one that
        holds the libraries it uses, imported once per worker rather than once per step;
        `resident` (or `resident-ort`, for those that need ONNX Runtime alone) for the steps
        that need no fresh interpreter (RESIDENT)."""
        if cls.RESIDENT and "torch" not in cls.TOOLS:
            return "resident-ort" if set(cls.TOOLS) <= {"onnxruntime", "numpy"} else "resident"
        if "torch" in cls.TOOLS:
            return "torch"
        return "onnx" if {"onnx", "onnxsim"} & set(cls.TOOLS) else "ort"

    @classmethod
    def unavailable(cls, params: dict[str, Any]) -> str | None:
        """Why this machine cannot run the step, or None when it can."""
        return None
