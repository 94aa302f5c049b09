"""The rebuilder: for one step, run it or restore it from a trace — and say why.

A step's key is the digest of the canonical JSON of everything it declares it
reads: its kind and VERSION, its parameters, the content digests of its input
artifacts and named files, the versions of its tools and, for device-bound
steps, the device. Steps that import project code also carry a trace of the
source files they loaded; those are verified file by file (the "verifying
traces" of Build systems à la carte), so a touched-but-unchanged file costs a
stat and nothing re-runs.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys import toolchain
from buildsys.canonical import canonical, digest_data
from buildsys.resolve import StepSpec
from buildsys.state import State, Trace
from buildsys.steps import step_class
from buildsys.store import Store
from buildsys.untrusted import Rejected, check_entry, declared_files

Outputs = dict[str, list[list]]  # output name -> [[file name, digest, size], ...]


def artifact_digest(files: list[list]) -> str:
    """One digest for an artifact made of one or more files (model + external data)."""
    return digest_data([[name, digest] for name, digest, _ in files])


@dataclass(frozen=True)
class Decision:
    action: str  # "cached" | "restore" | "run"
    key: str
    doc: dict[str, Any]
    reason: str
    outputs: Outputs | None = None  # for cached / restore
    deps: dict | None = None
    verdict: dict | None = None


class Rebuilder:
    def __init__(self, workspace: Path, out: Path, state: State, store: Store, shared=None, fetch: bool = True):
        self.workspace = workspace
        self.out = out
        self.state = state
        self.store = store
        self.shared = shared  # a SharedCache behind the local store, or None
        self.fetch = fetch  # False: only look (dry runs, status), never download
        self.traces = state.traces()  # decoded step by step, as decisions ask for them
        # Plain strings for paths: a no-op decision touches thousands of them.
        self._ws = os.fspath(workspace)
        self._out = os.fspath(out)
        self._out_real: str | None = None
        self._escape_memo: dict[str, str] = {}  # folder below out/ -> why it escapes, "" when it does not
        self._real_folders: set[str] = set()  # folders under out/ known to hold no symlink on the way
        self._env: dict[type, dict[str, Any]] = {}  # step class -> its env slice of the key (fixed per process)
        self._artifacts: dict[int, tuple[list, str]] = {}  # id(files) -> (files, artifact digest)

    # -- keys -----------------------------------------------------------------

    def key_doc(self, step: StepSpec, upstream: dict[str, Outputs]) -> dict[str, Any]:
        cls = step_class(step.kind_path)
        inputs = {}
        for name, ref in step.inputs.items():
            sid, _, output = ref.partition("#")
            inputs[name] = self._artifact_digest(upstream[sid][output])
        files = {name: self.state.digest(os.path.join(self._ws, rel)) or "missing"
                 for name, rel in step.files.items()}
        env = self._env.get(cls)
        if env is None:
            env = self._env[cls] = self._env_doc(cls)
        # The key is the digest of this document's canonical JSON, where tuples and lists
        # read alike; why() brings it through JSON before comparing it with a stored trace.
        return {"step": cls.KIND, "version": cls.VERSION, "params": step.params, "inputs": inputs,
                "files": files, "env": dict(env)}

    def _artifact_digest(self, files: list[list]) -> str:
        """artifact_digest, once per upstream artifact (parity and engine share theirs)."""
        memo = self._artifacts.get(id(files))
        if memo is None or memo[0] is not files:
            memo = self._artifacts[id(files)] = (files, artifact_digest(files))
        return memo[1]

    @staticmethod
    def _env_doc(step_cls) -> dict[str, Any]:
        env: dict[str, Any] = {"tools": toolchain.versions(step_cls.TOOLS)}
        if step_cls.TOOLS:
            env["python"] = toolchain.python_version()
        if step_cls.DEVICE == "gpu":
            from buildsys import gpu

            env["device"] = gpu.gpu()  # name, compute capability, driver and CUDA version
        elif step_cls.DEVICE:
            env["device"] = toolchain.cpu()
        return env

    # -- the decision ------------------------------------------------------------

    def decide(self, step: StepSpec, upstream: dict[str, Outputs]) -> Decision:
        doc = self.key_doc(step, upstream)
        key = digest_data(doc)
        trace = self.traces.get(step.id)
        if trace is not None and trace.key == key:
            stale = self.changed_deps(trace.deps)
            if not stale and self._outputs_present(trace.outputs):
                return Decision("cached", key, doc, "up to date", trace.outputs, trace.deps, trace.verdict)
        for deps, outputs, verdict in self.state.actions(key):
            if not self.changed_deps(deps) and self._blobs_present(outputs):
                return Decision("restore", key, doc, "restored from the cache: built before with these inputs",
                                outputs, deps, verdict)
        rejected = None
        if self.shared is not None:
            for entry in self.shared.actions(key):
                try:
                    check_entry(declared_files(step.outputs), entry)
                    if self.changed_deps(entry.get("deps", {})):
                        continue
                    found = (self.shared.fetch(entry["outputs"], self.store) if self.fetch
                             else self.shared.has_blobs(entry["outputs"]))
                except Rejected as exc:
                    rejected = f"shared cache entry rejected: {exc}"
                    print(f"warning: {step.id}: {rejected} (in {self.shared.url})", file=sys.stderr)
                    continue
                if found:
                    self.shared.hits += 1
                    if self.fetch:
                        self.shared.record_use(key)  # the shared cache's last use, for `cache gc`
                    return Decision("restore", key, doc, "fetched from the shared cache", entry["outputs"],
                                    entry.get("deps", {}), entry.get("verdict"))
            self.shared.misses += 1
        return Decision("run", key, doc, rejected or self.why(step, doc, trace))

    def why(self, step: StepSpec, doc: dict[str, Any], trace: Trace | None) -> str:
        if trace is None:
            return "no earlier build"
        # Through JSON and back, so tuples compare equal to the lists a stored trace holds.
        reasons = diff_docs(trace.doc, json.loads(canonical(doc)), step)
        reasons += self.changed_deps(trace.deps)
        if not reasons:
            reasons = ["outputs missing from the store"]
        return "; ".join(reasons)

    def changed_deps(self, deps: dict) -> list[str]:
        """Discovered dependencies (project sources, packages) that no longer match."""
        out = []
        for rel, digest in sorted(deps.get("files", {}).items()):
            now = self.state.digest(os.path.join(self._ws, rel))
            if now != digest:
                out.append(f"source {rel} {'deleted' if now is None else 'changed'}")
        if deps.get("dists"):
            have = toolchain.installed()
            for name, version in sorted(deps["dists"].items()):
                now = have.get(toolchain.normalize(name), "absent")
                if now != version:
                    out.append(f"package {name} {version} → {now}")
        return out

    def _blobs_present(self, outputs: Outputs) -> bool:
        has = self.store.has
        return all(has(d) for files in outputs.values() for _, d, _ in files)

    def _outputs_present(self, outputs: Outputs) -> bool:
        return self._blobs_present(outputs)

    # -- placing outputs under out/ ----------------------------------------------

    def materialize(self, step: StepSpec, outputs: Outputs) -> bool:
        """Make out/ hold exactly `outputs`; False when a store blob is damaged or gone.

        A file under out/ whose digest (memoised by stat) already matches is left
        alone, so a no-op build reads no artifact bytes. A blob that is about to be
        placed is verified against its name first: a truncated, emptied or
        bit-flipped entry is a miss, never a served artifact.
        """
        for name, files in outputs.items():
            target_dir = os.path.dirname(os.path.join(self._out, step.outputs[name]))
            for rel, digest, _ in files:
                dst = os.path.join(target_dir, rel)
                if self.state.digest(dst) == digest:
                    continue
                if not self.store.verify(digest):
                    return False
                self.store.materialize(digest, Path(dst))
                self.state.remember(dst, digest)
        return True

    def output_dir(self, step: StepSpec, output: str) -> Path:
        return (self.out / step.outputs[output]).parent

    def escapes(self, step: StepSpec) -> str | None:
        """Why a step's outputs or log would land outside out/ (a symlinked folder), or None.

        Answered per folder and memoised: steps of one recipe share their folders,
        and a folder whose every component below out/ is a real directory (or
        not there yet) needs no path resolution at all.
        """
        for rel in [*step.outputs.values(), step.log]:
            sub = os.path.dirname(rel)
            why = self._escape_memo.get(sub)
            if why is None:
                why = self._escape_memo[sub] = self._folder_escapes(sub)
            if why:
                return why
        return None

    def _folder_escapes(self, sub: str) -> str:
        """Why the folder `sub` (relative to out/) resolves outside out/, or ""."""
        folder = os.path.join(self._out, sub)
        parts = [p for p in sub.split(os.sep) if p not in ("", ".")]
        if not os.path.isabs(sub) and ".." not in parts:
            # walk down from out/: components that are not symlinks keep the path inside
            at, plain = self._out, True
            for part in parts:
                at = os.path.join(at, part)
                if at in self._real_folders:
                    continue
                if os.path.islink(at):
                    plain = False
                    break
                self._real_folders.add(at)
            if plain:
                return ""
        if self._out_real is None:
            self._out_real = os.path.realpath(self._out)
        real = os.path.realpath(folder)
        if real == self._out_real or real.startswith(self._out_real.rstrip(os.sep) + os.sep):
            return ""
        return f"{os.path.normpath(folder)} resolves to {real}, outside {self.out}; buildsys writes only under out/"


def diff_docs(old: dict[str, Any], new: dict[str, Any], step: StepSpec) -> list[str]:
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
    text = repr(value) if isinstance(value, _Absent) else canonical(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
