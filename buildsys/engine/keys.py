"""A step's key: the document it is the digest of, the environment it reads, and why two differ.

A step's key is the digest of the canonical JSON of everything it declares it
reads: its kind and VERSION, its parameters, the content digests of its input
artifacts and named files, the versions of its tools and, for device-bound
steps, the device (`KeyMaker.doc`, `step_environment`). `no_op_environment` is
the same environment as the no-op answer checks it without asking any tool:
the interpreter, the installed distributions and the devices' fingerprints. The
two stand side by side so that whoever makes a key read something new sees the
no-op's stand-in for it.

`diff_docs` turns two key documents into `Reasons`, in recipe terms
(`export.opset: 17 → 18`); `Reasons` is rendered to a line in one place, `str`.

This file is one of the no-op answer's KEY_SOURCES (engine/noop.py): an edit of
it invalidates every recorded answer. It imports only os and sys at its top (toolchain
inside the functions), because the no-op answer reads `no_op_environment`.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is an import the no-op answer does without
if TYPE_CHECKING:
    from typing import Any

SEPARATOR = "; "


class Reasons:
    """Why a step runs: one item per change ("export.opset: 17 → 18", "no earlier build").

    A plain class, not a dataclass: the no-op answer imports this module, and
    dataclasses (with inspect) would cost it more than its whole budget's margin.
    """

    __slots__ = ("items",)

    def __init__(self, items: tuple[str, ...]):
        self.items = tuple(items)

    def __str__(self) -> str:
        return SEPARATOR.join(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reasons) and other.items == self.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __repr__(self) -> str:
        return f"Reasons({self.items!r})"


def artifact_digest(files: list[list]) -> str:
    """One digest for an artifact made of one or more files (model + external data)."""
    from buildsys.core.canonical import digest_data

    return digest_data([[name, digest] for name, digest, _ in files])


def step_environment(tools: tuple[str, ...], device: bool | str) -> dict[str, Any]:
    """The environment slice of a step's key: its tools' versions, the interpreter's when it has tools, the device."""
    from buildsys.core import toolchain

    env: dict[str, Any] = {"tools": toolchain.versions(tools)}
    if tools:
        env["python"] = toolchain.python_version()
    if device == "gpu":
        from buildsys.core import gpu

        env["device"] = gpu.gpu()  # name, compute capability, driver and CUDA version
    elif device:
        env["device"] = toolchain.cpu()
    return env


def no_op_environment() -> list:
    """What no file stamp covers and a key reads: the interpreter, the installed distributions, the devices.

    The stand-in of `step_environment` for the no-op answer: `toolchain.gpu_fingerprint`
    is the driver files behind `gpu.gpu()`'s answer, since running nvidia-smi (or
    even importing gpu.py) costs more than the no-op may take.
    """
    from buildsys.core import toolchain

    return [os.path.realpath(sys.executable), sys.prefix, sys.version, toolchain.installed(), toolchain.cpu(),
            toolchain.gpu_fingerprint()]


def key_document(kind: str, version: int, params: dict[str, Any], inputs: dict[str, str], files: dict[str, str],
                 env: dict[str, Any]) -> dict[str, Any]:
    """The document a step's key is the digest of.

    Tuples and lists read alike in its canonical JSON; `diff_docs` is given it
    brought through JSON before comparing it with a stored trace's.
    """
    return {"step": kind, "version": version, "params": params, "inputs": inputs, "files": files, "env": dict(env)}


def key_of(doc: dict[str, Any]) -> str:
    from buildsys.core.canonical import digest_data

    return digest_data(doc)


class KeyMaker:
    """Key documents of one build's steps: the environment once per step class, each artifact digested once.

    `digest` is the content digest of a workspace path (State.digest, memoised by stat).
    """

    def __init__(self, root: str, digest):
        self._root = root
        self._digest = digest
        self._env: dict[tuple, dict[str, Any]] = {}  # (tools, device) -> the env slice of the key (fixed per process)
        self._artifacts: dict[int, tuple[list, str]] = {}  # id(files) -> (files, artifact digest)

    def doc(self, step, upstream: dict[str, dict[str, list[list]]]) -> dict[str, Any]:
        """The key document of `step` (a resolve.StepSpec, its class's facts filled in) given its upstream outputs."""
        inputs = {}
        for name, ref in step.inputs.items():
            sid, _, output = ref.partition("#")
            inputs[name] = self._artifact_digest(upstream[sid][output])
        files = {name: self._digest(os.path.join(self._root, rel)) or "missing" for name, rel in step.files.items()}
        env = self._env.get((step.tools, step.device))
        if env is None:
            env = self._env[(step.tools, step.device)] = step_environment(step.tools, step.device)
        return key_document(step.kind, step.version, step.params, inputs, files, env)

    def _artifact_digest(self, files: list[list]) -> str:
        """artifact_digest, once per upstream artifact (parity and engine share theirs)."""
        memo = self._artifacts.get(id(files))
        if memo is None or memo[0] is not files:
            memo = self._artifacts[id(files)] = (files, artifact_digest(files))
        return memo[1]


def diff_docs(old: dict[str, Any], new: dict[str, Any], step) -> list[str]:
    """Human reasons for a key change, in recipe terms: `export.opset: 17 → 18`."""
    reasons: list[str] = []
    if old.get("version") != new.get("version"):
        reasons.append(f"{new.get('step')} implementation v{old.get('version')} → v{new.get('version')}")
    for path, a, b in _flat_diff(old.get("params", {}), new.get("params", {})):
        reasons.append(f"{path}: {_short(a)} → {_short(b)}")
    for name in sorted(set(old.get("inputs", {})) | set(new.get("inputs", {}))):
        if old.get("inputs", {}).get(name) != new["inputs"].get(name):
            ref = step.inputs.get(name, "")
            reasons.append(f"input {name} changed (from {ref.partition('#')[0]})")
    for name in sorted(set(old.get("files", {})) | set(new.get("files", {}))):
        if old.get("files", {}).get(name) != new["files"].get(name):
            reasons.append(f"{step.files.get(name, name)} changed")
    old_env, new_env = old.get("env", {}), new.get("env", {})
    for tool in sorted(set(old_env.get("tools", {})) | set(new_env.get("tools", {}))):
        a, b = old_env.get("tools", {}).get(tool, "absent"), new_env.get("tools", {}).get(tool, "absent")
        if a != b:
            reasons.append(f"{tool} {a} → {b}")
    if old_env.get("python") != new_env.get("python"):
        reasons.append(f"python {old_env.get('python')} → {new_env.get('python')}")
    if old_env.get("device") != new_env.get("device"):
        reasons.append(f"device {_short(old_env.get('device'))} → {_short(new_env.get('device'))}")
    return reasons


def _flat_diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _flat_diff(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _flat_diff(x, y, f"{path}.{i}")
        return out
    return [] if a == b else [(path, a, b)]


class _Absent:
    def __repr__(self) -> str:
        return "(unset)"


_ABSENT = _Absent()


def _short(value: Any, limit: int = 60) -> str:
    from buildsys.core.canonical import canonical

    text = repr(value) if isinstance(value, _Absent) else canonical(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
