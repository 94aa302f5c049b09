"""Step tests, and a helper that resolves a recipe and runs its steps in this process."""
from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from buildsys.engine.stepjob import run_job
from buildsys.recipe import load_recipe
from buildsys.recipe.resolve import StepSpec, resolve_recipe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"


class RecipeSteps:
    """A recipe written into a workspace, resolved; `run` runs one of its steps like a worker would."""

    def __init__(self, workspace: Path, text: str, name: str = "r"):
        self.ws = workspace
        if not (workspace / "tm").exists():
            shutil.copytree(FIXTURES, workspace / "tm", ignore=shutil.ignore_patterns("__pycache__"))
        path = workspace / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        self.recipe = load_recipe(path, workspace)
        self.steps: dict[str, StepSpec] = {s.name: s for s in resolve_recipe(self.recipe, workspace)}

    def out(self, step: str, output: str) -> Path:
        return self.ws / "out" / self.steps[step].outputs[output]

    def job(self, step: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.steps[step]
        inputs = {}
        for name, ref in s.inputs.items():
            sid, _, output = ref.partition("#")
            up = next(u for u in self.steps.values() if u.id == sid)
            inputs[name] = str(self.ws / "out" / up.outputs[output])
        return {"id": s.id, "kind_path": s.kind_path, "params": s.params if params is None else params,
                "workspace": str(self.ws), "scratch": str(self.ws / "tmp" / s.name),
                "inputs": inputs, "files": {k: str(self.ws / v) for k, v in s.files.items()},
                "outputs": {k: Path(v).name for k, v in s.outputs.items()}, "log": str(self.log(step))}

    def log(self, step: str) -> Path:
        return self.ws / "out" / self.steps[step].log

    def run(self, step: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a step; on success its outputs are placed under out/ as the build would."""
        self._forget_other_workspaces()
        answer = run_job(self.job(step, params))
        if answer["ok"]:
            s = self.steps[step]
            for name, files in answer["outputs"].items():
                target = (self.ws / "out" / s.outputs[name]).parent
                target.mkdir(parents=True, exist_ok=True)
                for rel, _, _ in files:
                    shutil.copyfile(self.ws / "tmp" / s.name / rel, target / rel)
        shutil.rmtree(self.ws / "tmp" / self.steps[step].name, ignore_errors=True)
        return answer

    def _forget_other_workspaces(self) -> None:
        """Drop modules another test's workspace loaded under the same names (`tm`, `tm.tiny`).

        A worker serves one workspace; this process runs steps of many, and a
        stale `tm` package would resolve `tm.odd` in the wrong folder.
        """
        tops = {p.stem for p in self.ws.iterdir() if p.is_dir() or p.suffix == ".py"}
        root = str(self.ws.resolve()) + os.sep
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if name.partition(".")[0] in tops and not os.path.abspath(file).startswith(root):
                del sys.modules[name]
