"""The rebuilder: for one step, run it or restore it from a trace — and say why; then commit what ran.

A step's key is made by buildsys.engine.keys (the key document, its environment,
the reasons two keys differ). Steps that import project code also carry a trace
of the source files they loaded; those are verified here file by file (the
"verifying traces" of Build systems à la carte), so a touched-but-unchanged file
costs a stat and nothing re-runs.

This module is the only writer of traces, of the local store and of the shared
cache, and the only reader of shared-cache entries, which it checks with
buildsys.storage.untrusted before any name or digest in them is used. A cluster
worker's side of the shared cache (fetching a step's inputs, publishing its
blobs) is in buildsys.runners.cluster.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.core import toolchain
from buildsys.core.canonical import canonical, digest_data
from buildsys.core.verdict import Verdict, to_json
from buildsys.engine.answer import Finished, Job, Outcome, Outputs, StepAnswer
from buildsys.engine.keys import KeyMaker, Reasons, diff_docs, key_of
from buildsys.engine.workspace import Workspace
from buildsys.recipe.resolve import Graph, StepSpec
from buildsys.storage import safepath
from buildsys.storage.state import State, Trace
from buildsys.storage.store import Store
from buildsys.storage.untrusted import Rejected, check_entry, declared_files


@dataclass(frozen=True)
class Decision:
    action: str  # "cached" | "restore" | "run"
    key: str
    doc: dict[str, Any]
    why: Reasons
    outputs: Outputs | None = None  # for cached / restore
    deps: dict | None = None
    verdict: Verdict | None = None

    @property
    def reason(self) -> str:
        return str(self.why)


class Rebuilder:
    """Decides, restores, commits and records the steps of one graph in one workspace.

    `dry_run`: only look (dry runs, status): never download, place or record anything.
    """

    def __init__(self, ws: Workspace, graph: Graph, state: State, store: Store, shared=None,
                 dry_run: bool = False, threads: int = 1):
        self.ws = ws
        self.graph = graph
        self.out = ws.out
        self.state = state
        self.store = store
        self.shared = shared  # a SharedCache behind the local store, or None
        self.dry_run = dry_run
        self.threads = threads  # each step's share of the cores (a job's `threads`)
        self.fetch = not dry_run
        self.traces = state.traces()  # decoded step by step, as decisions ask for them
        self.decisions: dict[str, Decision] = {}  # steps that must run -> the decision to commit with
        # Plain strings for paths: a no-op decision touches thousands of them.
        self._ws = os.fspath(ws.root)
        self._out = os.fspath(ws.out)
        self._out_real: str | None = None
        self._escape_memo: dict[str, str] = {}  # folder below out/ -> why it escapes, "" when it does not
        self._real_folders: set[str] = set()  # folders under out/ known to hold no symlink on the way
        self.keys = KeyMaker(self._ws, state.digest)

    def begin(self) -> None:
        """Remove the scratch an interrupted build left behind (the caller holds the workspace lock)."""
        if not self.dry_run and os.path.lexists(self.ws.tmp):
            self.ws.refuse_links()
            safepath.remove(self.ws.tmp)

    def flush(self) -> None:
        self.state.flush()

    # -- before running --------------------------------------------------------

    def settle(self, step: StepSpec, outcomes: dict[str, Outcome]) -> Outcome | None:
        """Settle the step without running it (cached, restored, unavailable...), or None when it must run.

        `outcomes` holds the outcome of every upstream step, none of which blocks this one.
        """
        escape = self.escapes(step)
        if escape:
            return Outcome(step.id, "failed", "unsafe output path",
                           message=f"{escape}\n  hint: remove the link; out/ must hold real folders")
        if step.unavailable:
            return Outcome(step.id, "unavailable", step.unavailable)
        upstream = {up: outputs for up in step.upstream if (outputs := outcomes[up].outputs)}
        decision = self.decide(step, upstream)
        cut = any(outcomes[u].state in ("ran", "cutoff") for u in step.data_upstream)
        if decision.action in ("cached", "restore"):
            assert decision.outputs is not None  # a cached or stored step's outputs are known
            if self.dry_run:
                return Outcome(step.id, "cutoff" if cut else "cached", decision.reason,
                               outputs=decision.outputs, verdict=decision.verdict)
            if self.materialize(step, decision.outputs):
                if decision.action == "restore":
                    self.state.record(Trace(step.id, decision.key, decision.doc, decision.deps or {},
                                            decision.outputs, to_json(decision.verdict), 0.0),
                                      digest_data(decision.deps or {}))
                state = "cutoff" if cut and decision.action == "cached" else "cached"
                reason = "inputs unchanged after upstream re-ran" if state == "cutoff" else decision.reason
                return Outcome(step.id, state, reason, outputs=decision.outputs, verdict=decision.verdict)
            self.state.forget_action(decision.key)
            decision = Decision("run", decision.key, decision.doc, Reasons(("a stored artifact was damaged or missing",)))
        if self.dry_run:
            return Outcome(step.id, "would-run", decision.reason, key=decision.key, reasons=decision.why.items)
        self.decisions[step.id] = decision
        return None

    def job(self, step: StepSpec, outcomes: dict[str, Outcome]) -> Job:
        """What a runner needs to run a step that `settle` left to run; its old log is removed."""
        ws = self.ws
        log = ws.out / step.log
        log.unlink(missing_ok=True)
        scratch = ws.tmp / step.id.replace(":", "__").replace("[", "-").replace("]", "")
        inputs, artifacts = {}, {}
        for name, ref in step.inputs.items():
            sid, _, output = ref.partition("#")
            inputs[name] = str(ws.out / self.graph.steps[sid].outputs[output])
            produced = outcomes[sid].outputs
            assert produced is not None  # the step runs once every upstream step has its outputs
            artifacts[name] = (Path(inputs[name]).name, produced[output])
        return Job(id=step.id, kind_path=step.kind_path, params=step.params, workspace=str(ws.root),
                   scratch=str(scratch), inputs=inputs, artifacts=artifacts,
                   files={k: str(ws.root / v) for k, v in step.files.items()},
                   outputs={k: Path(v).name for k, v in step.outputs.items()}, log=str(log),
                   device=step.device, lane=step.lane, threads=self.threads)

    # -- after running -----------------------------------------------------------

    def commit(self, done: Finished) -> Outcome:
        """Record a finished step: its outputs into the store and under out/, its trace, the shared cache."""
        step = self.graph.steps[done.job.id]
        decision = self.decisions.pop(step.id)
        answer = done.answer
        try:
            if not answer.ok:
                # What the step left (a partial file on a full disk) goes before its failure is
                # recorded, so that the record fits and the step's own error is what the user reads.
                shutil.rmtree(done.job.scratch, ignore_errors=True)
                return self._failed(step, decision, answer)
            moved = self._changed_while_running(step, decision, answer.deps)
            if moved:
                return self._failed(step, decision, StepAnswer.failed(
                    f"{moved} while the step ran; its result was not recorded", answer.seconds,
                    hint="run the build again once the files are settled"))
            rejected = _rejected(step, answer)
            if rejected:
                return self._failed(step, decision, StepAnswer.failed(rejected, answer.seconds))
            if answer.remote:
                fetched = self._fetch_remote(step, answer)
                if fetched:
                    return self._failed(step, decision, StepAnswer.failed(fetched, answer.seconds))
            self._place(step, answer, Path(done.job.scratch))
            verdict = to_json(answer.verdict)
            self.state.record(Trace(step.id, decision.key, decision.doc, answer.deps, answer.outputs,
                                    verdict, answer.seconds), digest_data(answer.deps))
            if self.shared is not None:
                self.shared.publish(decision.key, answer.deps, answer.outputs, verdict, self.store)
            return Outcome(step.id, "ran", decision.reason, answer.seconds, answer.outputs, answer.verdict,
                           log=step.log, note=answer.note)
        finally:
            shutil.rmtree(done.job.scratch, ignore_errors=True)

    def _fetch_remote(self, step: StepSpec, answer: StepAnswer) -> str | None:
        """Write a cluster step's log and bring its outputs from the shared cache; why not, or None."""
        log = self.ws.out / step.log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(answer.log_text)
        try:
            found, why = self.shared.fetch(answer.outputs, self.store), ""
        except Rejected as exc:
            found, why = False, f": {exc}"
        if found:
            return None
        return "the outputs the cluster reported are missing or damaged in the shared cache" + why

    def _place(self, step: StepSpec, answer: StepAnswer, scratch: Path) -> None:
        for name, files in answer.outputs.items():
            target_dir = self.output_dir(step, name)
            for rel, digest, _ in files:
                if not answer.remote:
                    self.store.put(scratch / rel, digest)
                self.store.materialize(digest, target_dir / rel)
                self.state.remember(target_dir / rel, digest)

    def _changed_while_running(self, step: StepSpec, decision: Decision, deps: dict) -> str | None:
        for name, rel in step.files.items():
            if (self.state.digest(self.ws.root / rel) or "missing") != decision.doc["files"][name]:
                return f"{rel} changed"
        for rel, digest in deps.get("files", {}).items():
            if self.state.digest(self.ws.root / rel) != digest:
                return f"source {rel} changed"
        return None

    def _failed(self, step: StepSpec, decision: Decision, answer: StepAnswer) -> Outcome:
        message = self.graph.locate(step.recipe, answer.field) + answer.error
        if answer.hint:
            message += f"\n  hint: {answer.hint}"
        if answer.traceback:
            message += "\n  this is a bug in buildsys; the traceback is in the log"
        message += f"\n  log: {Path('out') / step.log}"
        self.state.record_failure(step.id, decision.key, message, step.log)
        return Outcome(step.id, "failed", decision.reason, answer.seconds, message=message, log=step.log)

    # -- keys -----------------------------------------------------------------

    def key_doc(self, step: StepSpec, upstream: dict[str, Outputs]) -> dict[str, Any]:
        return self.keys.doc(step, upstream)

    # -- the decision ------------------------------------------------------------

    def decide(self, step: StepSpec, upstream: dict[str, Outputs]) -> Decision:
        doc = self.key_doc(step, upstream)
        key = key_of(doc)
        trace = self.traces.get(step.id)
        if trace is not None and trace.key == key:
            stale = self.changed_deps(trace.deps)
            if not stale and self._outputs_present(trace.outputs):
                return Decision("cached", key, doc, Reasons(("up to date",)), trace.outputs, trace.deps,
                                Verdict.from_json(trace.verdict))
        for deps, outputs, verdict in self.state.actions(key):
            if not self.changed_deps(deps) and self._blobs_present(outputs):
                return Decision("restore", key, doc, Reasons(("restored from the cache: built before with these inputs",)),
                                outputs, deps, Verdict.from_json(verdict))
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
                    if self.fetch:
                        self.shared.record_use(key)  # the shared cache's last use, for `cache gc`
                    return Decision("restore", key, doc, Reasons(("fetched from the shared cache",)), entry["outputs"],
                                    entry.get("deps", {}), Verdict.from_json(entry.get("verdict")))
        return Decision("run", key, doc, Reasons((rejected,)) if rejected else self.why(step, doc, trace))

    def why(self, step: StepSpec, doc: dict[str, Any], trace: Trace | None) -> Reasons:
        if trace is None:
            return Reasons(("no earlier build",))
        # Through JSON and back, so tuples compare equal to the lists a stored trace holds.
        reasons = diff_docs(trace.doc, json.loads(canonical(doc)), step)
        reasons += self.changed_deps(trace.deps)
        if not reasons:
            reasons = ["outputs missing from the store"]
        return Reasons(tuple(reasons))

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


def _rejected(step: StepSpec, answer: StepAnswer) -> str | None:
    """Why a worker's answer cannot be committed (a cluster worker's is untrusted input), or None."""
    # A verdict that is not an object stays as the worker sent it (StepAnswer.from_wire), for check_entry to refuse.
    verdict = answer.verdict.to_json() if isinstance(answer.verdict, Verdict) else answer.verdict
    try:
        check_entry(declared_files(step.outputs), {"outputs": answer.outputs, "deps": answer.deps, "verdict": verdict})
    except Rejected as exc:
        who = "the cluster worker's" if answer.remote else "the worker's"
        return f"{who} answer was rejected: {exc}"
    return None


def open_shared(url: str | None, read_only: bool):
    """The shared cache a build reads (and, unless read-only, writes), or None without one."""
    from buildsys.storage.sharedcache import open_cache

    return open_cache(url, read_only)
