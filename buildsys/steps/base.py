"""The step protocol: a small callable object that does its work in a scratch folder.

A step declares what it reads (inputs, parameters, tools, device) as class
attributes and constructor arguments; `run_job` wraps every step the same way:
scratch folder, output redirected to the step's log, timing, hashing of what it
wrote, and an answer the orchestrator can commit or report.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.canonical import digest_file
from buildsys.errors import StepError
from buildsys.steps.params import from_slice


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
    # a judgement on the artifact (parity): {"passed": bool, "summary": str}
    verdict: dict[str, Any] | None = None
    summary: str = ""
    # what the user must know about how the output was made (a step passed over): console and --json
    note: str = ""


class Step:
    KIND = ""
    VERSION = 1
    TOOLS: tuple[str, ...] = ()
    DEVICE: bool | str = False  # True: bound to this processor; "gpu": to this GPU model
    DISCOVERS = False  # imports project code: its source files join the key
    # Runs no project code (never imports the recipe's model, no torch) and leaves the
    # interpreter as it found it: runs in the worker's resident process (buildsys.worker).
    RESIDENT = False
    PARAMS: type | None = None  # its typed parameters (buildsys.steps.params); None: the slice as it came

    def __init__(self, params: dict[str, Any], ctx: StepContext):
        # The slice stays plain data up to here: it is what the key hashes and the workers receive;
        # `slice` keeps it for the helpers shared with tools outside the steps (bench), which take it so.
        self.slice = params
        self.params = from_slice(self.PARAMS, params) if self.PARAMS is not None else params
        self.ctx = ctx

    def run(self) -> StepResult:
        raise NotImplementedError

    @classmethod
    def lane(cls, params: dict[str, Any]) -> str:
        """The worker template this step forks from (buildsys.worker.LANES): the one that
        holds the libraries it uses, imported once per worker rather than once per step;
        `resident` for the steps that need no fresh interpreter (RESIDENT)."""
        if cls.RESIDENT and "torch" not in cls.TOOLS:
            return "resident"
        if "torch" in cls.TOOLS:
            return "torch"
        return "onnx" if {"onnx", "onnxsim"} & set(cls.TOOLS) else "ort"

    @classmethod
    def unavailable(cls, params: dict[str, Any]) -> str | None:
        """Why this machine cannot run the step, or None when it can."""
        return None


@contextlib.contextmanager
def _redirected(log_path: Path):
    """Send this process's stdout and stderr (native code's too) to the step's log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one step described by `job` and answer with its outputs or its failure.

    Runs in a worker process (or inline, for tests). A `StepError` is a failure
    meant for the user; any other exception is a bug and carries its traceback.
    """
    from buildsys.engine.answer import StepAnswer
    from buildsys.steps import step_class

    started = time.perf_counter()
    scratch = Path(job["scratch"])
    log_path = Path(job["log"])
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        open(log_path, "ab").close()
    except OSError as exc:
        answer = _storage_answer(exc, started)
        if answer is None:
            raise
        return answer
    ctx = StepContext(
        workspace=Path(job["workspace"]),
        scratch=scratch,
        inputs={k: Path(v) for k, v in job["inputs"].items()},
        files={k: Path(v) for k, v in job["files"].items()},
        outputs=job["outputs"],
        threads=job.get("threads", 1),
    )
    with _redirected(log_path):
        print(f"== {job['id']}  ({time.strftime('%Y-%m-%d %H:%M:%S')})", flush=True)
        try:
            step = step_class(job["kind_path"])(job["params"], ctx)
            result = step.run()
            outputs = _hash_outputs(ctx, result)
        except StepError as exc:
            print(f"failed: {exc.message}", flush=True)
            cause = _memory_cause(exc)
            if cause is not None:  # a step blamed a recipe field for what was an allocation failure
                return _memory_answer(cause, started)
            return StepAnswer.failed(exc.message, time.perf_counter() - started, hint=exc.hint,
                                     field=exc.field).to_wire()
        except BaseException as exc:  # a bug, or an interrupt: report it with its traceback
            text = traceback.format_exc()
            print(text, flush=True)
            if isinstance(exc, KeyboardInterrupt):
                raise
            cause = _memory_cause(exc)
            if cause is not None:
                return _memory_answer(cause, started)
            if isinstance(exc, OSError) and _storage_answer(exc, started):
                return _storage_answer(exc, started)
            return StepAnswer.failed(f"{type(exc).__name__}: {exc}", time.perf_counter() - started,
                                     traceback=text).to_wire()
        seconds = time.perf_counter() - started
        print(f"done in {seconds:.2f}s: {result.summary}", flush=True)
    return StepAnswer(ok=True, seconds=seconds, outputs=outputs, deps=result.deps, verdict=result.verdict,
                      summary=result.summary, note=result.note).to_wire()


def _storage_answer(exc: OSError, started: float) -> dict[str, Any] | None:
    """A step's failure for a write the disk refused (read-only, full, not permitted); None for other errors."""
    from buildsys.engine.answer import StepAnswer
    from buildsys.errors import storage_error

    failure = storage_error(exc)
    if failure is None:
        return None
    return StepAnswer.failed(failure.message, time.perf_counter() - started, hint=failure.hint).to_wire()


def _memory_cause(exc: BaseException) -> BaseException | None:
    """The allocation failure behind `exc` (itself, or what it was raised while handling), if any."""
    seen = 0
    while exc is not None and seen < 8:
        if _out_of_memory(exc) and not isinstance(exc, StepError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _memory_answer(exc: BaseException, started: float) -> dict[str, Any]:
    from buildsys.engine.answer import StepAnswer

    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return StepAnswer.failed(f"ran out of memory: {type(exc).__name__}: {(lines[0] if lines else '')[:300]}",
                             time.perf_counter() - started,
                             hint="lower the dims' max or parity.samples, raise --memory-limit, or build on a "
                                  "machine with more memory").to_wire()


def _out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or the allocation failures torch and ONNX Runtime report in their messages."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "can't allocate memory" in text or "bad_alloc" in text or "Failed to allocate memory" in text


def _hash_outputs(ctx: StepContext, result: StepResult) -> dict[str, list[list]]:
    hashed: dict[str, list[list]] = {}
    for name, primary in ctx.outputs.items():
        files = result.outputs.get(name) or [primary]
        entries = []
        for rel in files:
            path = ctx.scratch / rel
            if not path.is_file():
                raise StepError(f"the step did not write its output {rel}")
            entries.append([rel, digest_file(path), path.stat().st_size])
        hashed[name] = entries
    return hashed
