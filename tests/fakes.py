"""Tiny steps that count their runs: they drive the rebuilder tests in milliseconds."""
from __future__ import annotations

from pathlib import Path

from buildsys.core.errors import StepError
from buildsys.core.verdict import Verdict
from buildsys.steps.base import Step, StepResult


def runs(workspace: Path) -> list[str]:
    log = workspace / "runs.log"
    return log.read_text().split() if log.exists() else []


class Counting(Step):
    """Writes `params["text"]` plus its inputs' contents; records the run in runs.log.

    `params["source"]` names a workspace file that is read and reported as a
    discovered dependency, like a model's source file.
    """

    KIND = "counting"
    VERSION = 1
    TOOLS = ("numpy",)

    def run(self) -> StepResult:
        with open(self.ctx.workspace / "runs.log", "a") as f:
            f.write(self.params["id"] + "\n")
        if self.params.get("fail"):
            raise StepError("asked to fail", field="fail", hint="remove fail: true")
        parts = [self.params.get("text", "")]
        for name in sorted(self.ctx.inputs):
            parts.append(self.ctx.inputs[name].read_text())
        deps = {}
        if self.params.get("source"):
            from buildsys.core.canonical import digest_file

            src = self.ctx.workspace / self.params["source"]
            parts.append(src.read_text())
            deps = {"files": {self.params["source"]: digest_file(src)}}
        for name in self.ctx.outputs:
            self.ctx.output(name).write_text("|".join(parts))
        verdict = None
        if "passes" in self.params:
            verdict = Verdict(self.params["passes"], "judged")
        return StepResult(deps=deps, verdict=verdict, summary="counted")


class Unavailable(Counting):
    @classmethod
    def unavailable(cls, params):
        return "no such device on this machine"


class Timed(Counting):
    """Sleeps `params["sleep"]` seconds and appends `id start end` to times.log."""

    def run(self) -> StepResult:
        import time

        began = time.time()
        time.sleep(self.params.get("sleep", 0.5))
        result = super().run()
        with open(self.ctx.workspace / "times.log", "a") as f:
            f.write(f"{self.params['id']} {began} {time.time()}\n")
        return result


class OnGpu(Timed):
    DEVICE = "gpu"


def build_graph(root: Path, graph, *, runner=None, shared=None, keep_going: bool = False, dry_run: bool = False,
                only: list[str] | None = None):
    """Build `graph` in the workspace `root` with the engine's own parts, the inline runner unless given one.

    Returns each step's outcome by id and the counting steps that ran in this build.
    """
    from buildsys.engine.rebuilder import Rebuilder
    from buildsys.engine.runner import Silent
    from buildsys.engine.scheduler import Scheduler
    from buildsys.engine.workspace import Workspace, select
    from buildsys.runners.workers import InlineRunner
    from buildsys.storage.state import State
    from buildsys.storage.store import Store

    ws = Workspace(root)
    state = State(ws.meta)
    before = len(runs(root))
    try:
        rebuilder = Rebuilder(ws, graph, state, Store(ws.meta / "store"), shared, dry_run=dry_run)
        scheduler = Scheduler(graph, rebuilder, runner or InlineRunner(), Silent(), keep_going=keep_going)
        outcomes = scheduler.run(select(graph, only))
    finally:
        state.close()
    return {o.step: o for o in outcomes}, runs(root)[before:]
