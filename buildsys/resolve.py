"""The resolver: recipes in, a graph of fully specified steps out.

Everything a step needs is decided here — its parameters (the slice of the
recipe it reads), where its inputs come from, where its outputs go — so the
executor never reads a recipe and a step never looks at the recipe file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from buildsys.recipe.model import Recipe, TargetSpec
from buildsys.steps import KINDS


@dataclass(frozen=True)
class StepSpec:
    id: str  # "<recipe>:<name>", e.g. "resnet18:parity[fp32]"
    recipe: str
    name: str  # "export", "parity[fp32]", "engine[onnxruntime-fp32]"
    kind_path: str  # "module:Class" of the step implementation
    params: dict[str, Any]  # the recipe slice the step reads; part of its key
    inputs: dict[str, str] = field(default_factory=dict)  # name -> "<step id>#<output>"
    gates: tuple[str, ...] = ()  # steps that must have passed (their content is not read)
    outputs: dict[str, str] = field(default_factory=dict)  # name -> path under out/
    files: dict[str, str] = field(default_factory=dict)  # name -> workspace-relative path
    timeout: float = 3600.0

    @property
    def upstream(self) -> set[str]:
        return {ref.partition("#")[0] for ref in self.inputs.values()} | set(self.gates)

    @property
    def log(self) -> str:
        return f"{self.recipe}/logs/{self.name.replace('[', '-').rstrip(']')}.log"

    @property
    def family(self) -> str:
        """The step's name without its bracket: what `--only` matches."""
        return self.name.partition("[")[0]


@dataclass(frozen=True)
class Graph:
    steps: dict[str, StepSpec]  # in a valid topological order
    recipes: dict[str, Recipe] = field(default_factory=dict)  # for locating fields in messages

    def locate(self, recipe: str, field_path: str | None) -> str:
        """`recipes/r.yaml:12:5: export.opset: ` for a step failure about a recipe field."""
        r = self.recipes.get(recipe)
        if r is None:
            return ""
        if not field_path:
            return f"{r.file}: "
        return f"{r.where(field_path)}: {field_path}: "

    def dependents(self, step_id: str) -> list[str]:
        return [s.id for s in self.steps.values() if step_id in s.upstream]

    def closure(self, wanted: set[str]) -> set[str]:
        """`wanted` and everything it depends on."""
        todo, seen = list(wanted), set()
        while todo:
            sid = todo.pop()
            if sid not in seen:
                seen.add(sid)
                todo.extend(self.steps[sid].upstream)
        return seen


def _asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def model_params(r: Recipe) -> dict[str, Any]:
    """What export and reference both read: the model and its input/output signature."""
    return {
        "model": _asdict(r.model),
        "inputs": [_asdict(i) for i in r.inputs],
        "outputs": [o.name for o in r.outputs],
        "dims": {d.name: {"min": d.min, "opt": d.opt, "max": d.max} for d in r.dims},
    }


def resolve(recipes: list[Recipe]) -> Graph:
    steps: dict[str, StepSpec] = {}
    for r in recipes:
        for s in resolve_recipe(r):
            steps[s.id] = s
    return Graph(steps, {r.name: r for r in recipes})


def resolve_recipe(r: Recipe) -> list[StepSpec]:
    n = r.name
    files = {"checkpoint": r.model.checkpoint} if r.model.checkpoint else {}
    base = model_params(r)
    export = StepSpec(
        id=f"{n}:export", recipe=n, name="export", kind_path=KINDS["export"],
        params={**base, "export": _asdict(r.export)},
        outputs={"model": f"{n}/model.onnx"}, files=files,
    )
    reference = StepSpec(
        id=f"{n}:reference", recipe=n, name="reference", kind_path=KINDS["reference"],
        params={**base, "parity": _asdict(r.parity)},
        outputs={"reference": f"{n}/reference.npz"}, files=files,
    )
    steps = [export, reference]
    candidate = f"{export.id}#model"
    if r.simplify.enabled:
        simplify = StepSpec(
            id=f"{n}:simplify", recipe=n, name="simplify", kind_path=KINDS["simplify"],
            params={"simplify": _asdict(r.simplify)},
            inputs={"model": candidate}, outputs={"model": f"{n}/model.sim.onnx"},
        )
        steps.append(simplify)
        candidate = f"{simplify.id}#model"

    parities: dict[str, StepSpec] = {}
    for precision in _precisions(r):
        p = StepSpec(
            id=f"{n}:parity[{precision}]", recipe=n, name=f"parity[{precision}]", kind_path=KINDS["parity"],
            params={
                "precision": precision,
                "tolerances": {precision: _asdict(r.tolerances[precision])},
                "outputs": [o.name for o in r.outputs],
            },
            inputs={"model": candidate, "reference": f"{reference.id}#reference"},
            outputs={"result": f"{n}/parity/{precision}.json"},
        )
        parities[precision] = p
        steps.append(p)

    for t in r.targets:
        if t.backend == "onnxruntime" and t.precision == "fp32":
            steps.append(_ort_engine(r, t, candidate, parities["fp32"], reference))
    return steps


def _precisions(r: Recipe) -> list[str]:
    wanted = ["fp32"]
    for t in r.targets:
        if t.precision == "int8" and "int8" not in wanted:
            wanted.append("int8")
    return [p for p in wanted if p in ("fp32",)]


def _ort_engine(r: Recipe, t: TargetSpec, candidate: str, parity: StepSpec, reference: StepSpec) -> StepSpec:
    n = r.name
    return StepSpec(
        id=f"{n}:engine[{t.id}]", recipe=n, name=f"engine[{t.id}]", kind_path=KINDS["engine-onnxruntime"],
        params={"target": _asdict(t)},
        inputs={"model": candidate, "reference": f"{reference.id}#reference"},
        gates=(parity.id,),
        outputs={"engine": f"{n}/engines/{t.id}.ort"},
    )
