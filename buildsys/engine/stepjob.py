"""Running one step in the process it was sent to: the harness around every step.

`run_job` takes a job as it travels (a plain dict), builds the step's context,
runs the step with its output sent to the step's log, hashes what it wrote and
answers with a `StepAnswer` on the wire. A `StepError` is the user's failure; any
other exception is a bug and carries its traceback; an allocation failure or a
write the disk refused is named as such.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from buildsys.core.canonical import digest_file
from buildsys.core.errors import StepError
from buildsys.engine.answer import StepAnswer
from buildsys.steps.base import StepContext, StepResult
from buildsys.storage import safepath

# Terminal control sequences: CSI (colours, `\x1b[0;93m`), OSC (titles, links) and the two-byte escapes.
_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(data: bytes) -> bytes:
    """`data` without terminal control sequences."""
    return _ANSI.sub(b"", data)


@contextlib.contextmanager
def _redirected(log_path: Path):
    """Send this process's stdout and stderr (native code's too) to the step's log.

    ONNX Runtime and TensorRT colour their own warnings as if a terminal read
    them; logs are read in files, HTML reports and CI pages, so what the step
    wrote is stripped of terminal control sequences when it ends.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        start = log.tell()
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
            _strip_log(log_path, start)


def _strip_log(log_path: Path, start: int) -> None:
    """Remove terminal control sequences from what was written to the log after `start`."""
    with open(log_path, "r+b") as log:
        log.seek(start)
        written = log.read()
        clean = strip_ansi(written)
        if clean != written:
            log.seek(start)
            log.write(clean)
            log.truncate()


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one step described by `job` and answer with its outputs or its failure.

    Runs in a worker process (or inline, for tests). A `StepError` is a failure
    meant for the user; any other exception is a bug and carries its traceback.
    """
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
                # a library's write that failed without naming its file: the step wrote in its scratch
                answer = _storage_answer(safepath.with_filename(exc, str(scratch)), started)
                assert answer is not None  # the same error with a file name: still the disk's
                return answer
            return StepAnswer.failed(f"{type(exc).__name__}: {exc}", time.perf_counter() - started,
                                     traceback=text).to_wire()
        seconds = time.perf_counter() - started
        print(f"done in {seconds:.2f}s: {result.summary}", flush=True)
    return StepAnswer(ok=True, seconds=seconds, outputs=outputs, deps=result.deps, verdict=result.verdict,
                      summary=result.summary, note=result.note).to_wire()


def _storage_answer(exc: OSError, started: float) -> dict[str, Any] | None:
    """A step's failure for a write the disk refused (read-only, full, not permitted); None for other errors."""
    from buildsys.core.errors import storage_error

    failure = storage_error(exc)
    if failure is None:
        return None
    return StepAnswer.failed(failure.message, time.perf_counter() - started, hint=failure.hint).to_wire()


def _memory_cause(exc: BaseException | None) -> BaseException | None:
    """The allocation failure behind `exc` (itself, or what it was raised while handling), if any."""
    seen = 0
    while exc is not None and seen < 8:
        if _out_of_memory(exc) and not isinstance(exc, StepError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _memory_answer(exc: BaseException, started: float) -> dict[str, Any]:
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
