"""Recipes: finding them, loading them (with `extends`), validating and resolving them.

The public API of the recipe layer. `load_recipe` reads one YAML file and the
bases it extends, validates the merged document (schema and semantic checks,
every problem at once) and returns a frozen `Recipe` with every default filled in
and the position of every value it was given. Nothing downstream reads YAML.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from buildsys.core.errors import Problem, RecipeError, UsageError
from buildsys.recipe.limits import MAX_EXTENDS, MAX_SIZE, SizeTooLarge, parse_size, unusable_path
from buildsys.recipe.model import (
    DEFAULT_TOLERANCES,
    POINTS,
    CalibrationSpec,
    DataSpec,
    Dim,
    ExportSpec,
    InputSpec,
    OutputSpec,
    ParitySpec,
    QuantizationSpec,
    Recipe,
    SimplifySpec,
    TargetSpec,
    Tolerance,
    model_from_dict,
)

if TYPE_CHECKING:
    from buildsys.recipe.validate import Document, FieldPath, Pos

# `discover` runs on every command, even a no-op build that takes its recipes from
# the cache: it must not pay for YAML, jsonschema or difflib, so those are imported
# where a recipe is really read.

__all__ = ["MAX_SIZE", "Recipe", "SizeTooLarge", "discover", "load_recipe", "load_recipes", "parse_size", "select",
           "unique_names"]

_SUFFIXES = (".yaml", ".yml")
# How recipe files are read and checked. Bump it when one file would load differently
# (2: integers only where integers belong, booleans as PyYAML reads them, size and
# depth bounds; 3: parity.holdout; 4: sizes bounded), so that recipes cached by an earlier buildsys are read again.
READING_VERSION = 4


def discover(workspace: Path) -> list[Path]:
    """`recipes/*.yaml` and `recipes/*.yml`, sorted; names starting with `_` are shared bases."""
    folder = workspace / "recipes"
    if not folder.is_dir():
        raise UsageError(f"no recipes/ folder in {workspace}",
                         hint="run buildsys from the project root, or create recipes/<model>.yaml")
    found = sorted(p for p in folder.iterdir()
                   if p.suffix in _SUFFIXES and p.is_file() and not p.name.startswith(("_", ".")))
    if not found:
        raise UsageError(f"no recipes in {folder}",
                         hint="add recipes/<model>.yaml (files starting with '_' are bases for `extends`)")
    return found


def load_recipe(path: Path, workspace: Path) -> Recipe:
    """Load, merge, validate and resolve one recipe; raise RecipeError with all its problems."""
    from buildsys.recipe.checks import validate

    ws = Path(os.path.abspath(workspace))
    path = Path(os.path.abspath(path))
    doc, sources = _read_document(path, ws)
    default_name = path.stem
    problems = validate(doc, ws, default_name)
    if problems:
        raise RecipeError(problems)
    return _resolve(doc, tuple(sources), default_name)


def load_recipes(workspace: Path, paths: list[Path]) -> tuple[list[Recipe], list[Problem]]:
    """Load every path; a broken recipe adds its problems without hiding the good ones.

    Recipes that share a name are all left out, each with a problem naming the others.
    """
    recipes: list[Recipe] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for path in paths:
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        try:
            recipes.append(load_recipe(path, workspace))
        except RecipeError as exc:
            problems.extend(exc.problems)
    unique, clashes = unique_names(recipes)
    return unique, problems + clashes


def unique_names(recipes: list[Recipe]) -> tuple[list[Recipe], list[Problem]]:
    """The recipes whose name no other recipe uses, and a problem for each of the others."""
    by_name: dict[str, list[Recipe]] = {}
    for r in recipes:
        by_name.setdefault(r.name, []).append(r)
    problems = []
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        for r in group:
            others = ", ".join(o.file for o in group if o is not r)
            file, line, col = r.positions.get("name", (r.file, None, None))
            problems.append(Problem(file, line, col, "name", f"recipe name '{name}' is also used by {others}",
                                    "every recipe needs its own name (it names out/<name>/); set name: in one of them"))
    return [r for r in recipes if len(by_name[r.name]) == 1], problems


def select(recipes: list[Recipe], selectors: list[str], workspace: Path) -> list[Recipe]:
    """The recipes named by `selectors` (names or paths to recipe files); all when none."""
    if not selectors:
        return list(recipes)
    by_name = {r.name: r for r in recipes}
    by_file = {r.file: r for r in recipes}
    chosen: dict[str, Recipe] = {}
    unknown: list[str] = []
    for sel in selectors:
        recipe = by_name.get(sel) or next(
            (by_file[f] for f in _as_workspace_paths(sel, workspace) if f in by_file), None)
        if recipe is None:
            unknown.append(sel)
        else:
            chosen.setdefault(recipe.name, recipe)
    if unknown:
        import difflib

        names = sorted(by_name)
        shown = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
        close = difflib.get_close_matches(Path(unknown[0]).stem, names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "pass a recipe name or the path of a file under recipes/"
        listed = ", ".join(f"'{u}'" for u in unknown)
        raise UsageError(f"unknown recipe{'s' if len(unknown) > 1 else ''} {listed}; known: {shown or 'none'}",
                         hint=hint)
    return list(chosen.values())


def _as_workspace_paths(selector: str, workspace: Path) -> list[str]:
    ws = Path(os.path.abspath(workspace))
    out = []
    for candidate in (Path(selector), ws / selector):
        full = Path(os.path.abspath(candidate))
        if full.is_relative_to(ws):
            out.append(full.relative_to(ws).as_posix())
    return out


# -- reading and merging ---------------------------------------------------------------


def _rel(path: Path, ws: Path) -> str:
    """How a file is named in messages and in `Recipe.file`: workspace-relative POSIX."""
    full = Path(os.path.abspath(path))
    return full.relative_to(ws).as_posix() if full.is_relative_to(ws) else Path(os.path.relpath(full, ws)).as_posix()


def _read_document(path: Path, ws: Path, chain: tuple[Path, ...] = ()) -> tuple[Document, list[str]]:
    """The file's data merged over the bases it extends, and the files read (recipe first)."""
    from buildsys.recipe.validate import Document
    from buildsys.recipe.yamlload import load_yaml

    rel = _rel(path, ws)
    yml = load_yaml(path, rel)
    values: dict[FieldPath, Pos] = {p: (rel, *m) for p, m in yml.positions.items()}
    keys: dict[FieldPath, Pos] = {p: (rel, *m) for p, m in yml.key_positions.items()}
    doc = Document(rel, dict(yml.data), values, keys, dict(yml.bool_texts))
    if "extends" not in doc.data:
        return doc, [rel]
    base_path = _base_path(doc, path, ws, chain)
    base, base_sources = _read_document(base_path, ws, (*chain, path))
    over = dict(doc.data)
    del over["extends"]
    merged = _deep_merge(base.data, over)
    return Document(rel, merged, _pick(merged, values, base.values), _pick(merged, keys, base.keys),
                    _pick(merged, yml.bool_texts, base.bool_texts)), [rel, *base_sources]


def _base_path(doc: Document, path: Path, ws: Path, chain: tuple[Path, ...]) -> Path:
    """The validated path of the base named by `extends`, or RecipeError."""
    import difflib

    from buildsys.recipe.validate import found_text

    ext = doc.data["extends"]

    def fail(message: str, hint: str | None = None) -> RecipeError:
        return RecipeError([doc.problem(("extends",), message, hint)])

    if not isinstance(ext, str) or not ext:
        raise fail(f"expected the path of a base YAML file, found {found_text(ext)}",
                   "for example extends: _base.yaml (relative to this file)")
    unusable = unusable_path(ext)
    if unusable is not None:
        raise fail(unusable, "for example extends: _base.yaml (relative to this file)")
    if len(chain) + 1 >= MAX_EXTENDS:
        raise fail(f"a chain of extends longer than {MAX_EXTENDS} files (from {_rel(chain[0], ws)}), "
                   "the limit of a recipe", "let the bases extend fewer files in turn")
    base = Path(os.path.abspath(path.parent / ext))
    try:
        inside = base.resolve().is_relative_to(ws.resolve())
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symlink loop"
        raise fail(f"cannot follow '{ext}': {reason}", "a base is a YAML file; check the symlinks on its path") from None
    if not inside:
        raise fail(f"'{ext}' is outside the workspace", "bases must live inside the project")
    if base in (*chain, path):
        cycle = " -> ".join(_rel(p, ws) for p in (*chain, path, base))
        raise fail(f"makes a cycle: {cycle}", "remove the extends: that points back")
    if not _is_file(base):
        near = difflib.get_close_matches(base.name, [p.name for p in base.parent.glob("*.y*ml")], n=1)
        raise fail(f"base file not found: '{ext}' (looked for {_rel(base, ws)})",
                   f"did you mean '{near[0]}'?" if near else "the path is relative to this recipe's folder")
    return base


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the file system refuses, a folder we may not read: not a usable base
        return False


def _deep_merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key (the recipe wins); anything else, lists included, is replaced."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _deep_merge(base[key], value) if key in base else value
    return merged


_V = TypeVar("_V")  # what is kept per field path: its position, or how a boolean was written


def _pick(merged: Any, over: dict[FieldPath, _V], base: dict[FieldPath, _V]) -> dict[FieldPath, _V]:
    """The position of every merged value: from the file whose value survived the merge."""
    out: dict[FieldPath, _V] = {}

    def walk(node: Any, path: FieldPath) -> None:
        if path in over:
            out[path] = over[path]
        elif path in base:
            out[path] = base[path]
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, (*path, key))

    walk(merged, ())
    return out


# -- resolving into dataclasses ----------------------------------------------------------


def _resolve(doc: Document, sources: tuple[str, ...], default_name: str) -> Recipe:
    d = doc.data
    extra: dict[str, Any] = {k: d[k] for k in ("description", "version") if k in d}
    if "profiles" in d:
        extra["profiles"] = tuple({n: {k: int(v) for k, v in o.items()} for n, o in p.items()} for p in d["profiles"])
    if "export" in d:
        export: dict[str, Any] = {k: int(v) if k == "opset" else v for k, v in d["export"].items()}
        extra["export"] = ExportSpec(**export)
    if "simplify" in d:
        s = d["simplify"]
        simplify: dict[str, Any] = {} if isinstance(s, bool) else {
            k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}
        extra["simplify"] = SimplifySpec(enabled=s) if isinstance(s, bool) else SimplifySpec(**simplify)
    if "calibration" in d:
        c = dict(d["calibration"])
        if "data" in c:
            c["data"] = _data(c["data"])
        if "samples" in c:
            c["samples"] = int(c["samples"])
        extra["calibration"] = CalibrationSpec(**c)
    if "quantization" in d:
        q = dict(d["quantization"])
        q["exclude"] = tuple(q.get("exclude", ()))
        extra["quantization"] = QuantizationSpec(**q)
    if "targets" in d:
        extra["targets"] = tuple(_target(t) for t in d["targets"])
    if "parity" in d:
        p = dict(d["parity"])
        if "points" in p:  # canonical order: [max, min] and [min, max] are one setting
            p["points"] = tuple(x for x in POINTS if x in p["points"])
        if "max_regression" in p:
            p["max_regression"] = float(p["max_regression"])
        if "unordered" in p:
            p["unordered"] = tuple(p["unordered"])
        parity: dict[str, Any] = {k: v if k in ("points", "max_regression", "unordered") else float(v) if k == "holdout"
                                  else int(v) for k, v in p.items()}
        extra["parity"] = ParitySpec(**parity)
    return Recipe(
        name=d.get("name", default_name),
        file=doc.file,
        sources=sources,
        model=model_from_dict(d["model"]),
        inputs=tuple(_input(i) for i in d["inputs"]),
        outputs=tuple(OutputSpec(o["name"]) for o in d["outputs"]),
        dims=tuple(Dim(n, int(x["min"]), int(x["opt"]), int(x["max"]), int(x.get("multiple_of", 1)))
                   for n, x in d.get("dims", {}).items()),
        tolerances={**DEFAULT_TOLERANCES, **{
            p: Tolerance(**{k: float(v) for k, v in t.items()}) for p, t in d.get("tolerances", {}).items()}},
        positions=_positions(doc),
        **extra,
    )


def _input(m: dict[str, Any]) -> InputSpec:
    shape = tuple(int(s) if not isinstance(s, str) else s for s in m["shape"])
    if "data" in m:
        return InputSpec(m["name"], m["dtype"], shape, _data(m["data"]))
    return InputSpec(m["name"], m["dtype"], shape)


def _data(m: dict[str, Any]) -> DataSpec:
    spec = dict(m)
    kind = spec.get("kind", "uniform")
    if kind == "randint":
        spec["low"], spec["high"] = int(spec.get("low", 0)), int(spec["high"])
    else:
        spec.update({k: float(spec[k]) for k in ("low", "high", "mean", "std") if k in spec})
    if kind == "images":
        spec.setdefault("preset", "imagenet")
    return DataSpec(**spec)


def _target(m: dict[str, Any]) -> TargetSpec:
    spec = dict(m)
    if "workspace" in spec:
        spec["workspace"] = parse_size(spec["workspace"])
    if spec["backend"] == "torchscript":
        spec.setdefault("mode", "script")
    if "cpu_nodes" in spec:
        spec["cpu_nodes"] = tuple(spec["cpu_nodes"])
    return TargetSpec(**spec)


def _positions(doc: Document) -> dict[str, tuple[str, int, int]]:
    from buildsys.recipe.validate import dotted

    paths = set(doc.values) | set(doc.keys)
    located = {dotted(p): doc.at(p) for p in paths if p}
    return {k: (f, line, col) for k, (f, line, col) in located.items() if line is not None and col is not None}
