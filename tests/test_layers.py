"""The import graph of the buildsys package: layers, no cycle, no reaching into private names or modules.

The graph is read from the source with `ast`, imports inside functions included
(they are how heavy or upward-looking imports hide), so it is the graph the code
really has, not only the one a module pays for at its top.
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "buildsys"

# Lowest first. A module may import from its own layer and the ones below, never above.
# An entry names a module or, with a trailing ".", every module under a package.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("buildsys", "exitcodes", "errors", "canonical", "safepath", "toolchain", "gpu", "numerics", "datafiles",
                    "kinds", "reads", "flavours", "pins", "verdict")),
    ("storage", ("store", "untrusted", "state", "sharedcache")),
    ("recipe", ("recipe", "recipe.")),
    ("resolve", ("resolve",)),
    ("steps", ("inputs", "steps", "steps.")),
    ("orchestration", ("engine", "engine.", "build", "workers", "worker", "cluster",
                       "progress", "loading", "cachegc", "diverge", "bench", "view", "reports", "reports.", "doctor")),
    ("cli", ("cli", "__main__", "arguments", "show")),
]


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Module name (without the leading `buildsys.`; the package itself is `buildsys`) -> its file."""
    found = {}
    for f in sorted(package.rglob("*.py")):
        parts = f.relative_to(package).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        found[".".join(parts) or "buildsys"] = f
    return found


def _local(name: str) -> str | None:
    if name == "buildsys":
        return "buildsys"
    return name.removeprefix("buildsys.") if name.startswith("buildsys.") else None


def imports(files: dict[str, Path]) -> dict[str, dict[str, set[str]]]:
    """module -> {imported module -> the names taken from it}; `from pkg import sub` counts as `pkg.sub`."""
    graph: dict[str, dict[str, set[str]]] = {}
    for mod, path in files.items():
        edges: dict[str, set[str]] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _local(alias.name)
                    if target is not None:
                        edges.setdefault(target, set())
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{mod}: relative import (buildsys uses absolute imports)"
                target = _local(node.module or "")
                if target is None:
                    continue
                for alias in node.names:
                    sub = alias.name if target == "buildsys" else f"{target}.{alias.name}"
                    if sub in files:
                        edges.setdefault(sub, set())
                    else:
                        edges.setdefault(target, set()).add(alias.name)
        edges.pop(mod, None)
        graph[mod] = edges
    return graph


def layer_of(mod: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if any(mod == m or (m.endswith(".") and mod.startswith(m)) for m in members):
            return index
    raise LookupError(mod)


def _layer_or_none(mod: str) -> int | None:
    try:
        return layer_of(mod)
    except LookupError:
        return None  # reported once, as a module of its own


def problems(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """Every import that breaks the layering, in words; empty when the graph is sound."""
    found = []
    for mod, edges in sorted(graph.items()):
        try:
            own = layer_of(mod)
        except LookupError:
            found.append(f"{mod} is in no layer: add it to LAYERS in {Path(__file__).name}")
            continue
        for target, names in sorted(edges.items()):
            if target in graph and _layer_or_none(target) is not None and layer_of(target) > own:
                found.append(f"{mod} ({LAYERS[own][0]}) imports {target} ({LAYERS[layer_of(target)][0]}), "
                             f"a layer above it")
            for name in sorted(n for n in names if n.startswith("_") and not n.startswith("__")):
                found.append(f"{mod} imports {target}.{name}, a private name of another module")
            owner = private_owner(target)
            if owner is not None and mod != owner:
                found.append(f"{mod} imports {target}, a private module of {owner}: "
                             "give what it shares a public module")
    found.extend("import cycle: " + " -> ".join(cycle) for cycle in cycles(graph))
    return found


def private_owner(mod: str) -> str | None:
    """The package a private module (`steps._x`) belongs to, None if it is public.

    Only the package itself may import it: a helper another module uses, a sibling
    included, is shared, and so gets a public module.
    """
    parent, _, last = mod.rpartition(".")
    if last.startswith("_") and not last.startswith("__"):
        return parent or "buildsys"
    return None


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (directly or around a loop)."""
    edges = {m: sorted(set(e) & set(graph)) for m, e in graph.items()}
    out: list[list[str]] = []
    while True:
        try:
            graphlib.TopologicalSorter(edges).prepare()
            return out
        except graphlib.CycleError as exc:
            cycle = exc.args[1][::-1]  # the sorter lists each module before the one that imports it
            out.append(cycle)
            edges[cycle[0]] = [t for t in edges[cycle[0]] if t != cycle[1]]  # break it, look for the next


def test_every_module_sits_in_a_layer_and_imports_only_downwards():
    graph = imports(modules())
    assert problems(graph) == []


def test_the_graph_sees_imports_inside_functions():
    graph = imports(modules())
    # resolve reads the machine's CPU class inside a function, and only from the foundation
    assert "toolchain" in graph["resolve"]
    assert "recipe.checks" in graph["recipe"]  # imported lazily by load_recipe


@pytest.mark.parametrize("source, expected", [
    ({"resolve": "from buildsys.steps import KINDS\n"}, "resolve (resolve) imports steps (steps), a layer above it"),
    ({"recipe.validate": "def f():\n    from buildsys.recipe.checks import semantic_problems\n"},
     "import cycle: "),
    ({"steps.parity": "from buildsys.steps.export import _FREEZING\n"},
     "steps.parity imports steps.export._FREEZING, a private name of another module"),
    ({"newthing": ""}, "newthing is in no layer"),
    ({"steps._helper": "X = 1\n", "bench": "def f():\n    from buildsys.steps._helper import X\n"},
     "bench imports steps._helper, a private module of steps"),
    ({"steps._helper": "X = 1\n", "steps.parity": "from buildsys.steps import _helper\n"},
     "steps.parity imports steps._helper, a private module of steps"),
])
def test_each_kind_of_break_is_reported(tmp_path, source, expected):
    """The check on a copy of the package with one import added: it names the offending import."""
    import shutil

    copy = tmp_path / "buildsys"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for mod, text in source.items():
        path = copy / (mod.replace(".", "/") + ".py")
        path.write_text((path.read_text() if path.exists() else "") + "\n" + text)
    found = problems(imports(modules(copy)))
    assert any(expected in line for line in found), found
