"""Recipes for a command, from the resolved-recipe cache when no source file changed.

Parsing YAML and validating against the JSON Schema costs more than a whole
no-op build may take (jsonschema alone imports in ~110 ms here), so resolved
recipes are kept in the state database, keyed by the stat of every file they
were made from plus the schema and buildsys version.
"""
from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path

import buildsys
from buildsys.core.errors import Problem, RecipeError
from buildsys.recipe import READING_VERSION, unique_names
from buildsys.recipe.model import Recipe
from buildsys.storage.state import State, file_stamp

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "recipe.schema.json"


def discover(root: Path) -> list[Path]:
    from buildsys.recipe import discover as _discover

    return _discover(root)


def _stamp(root: Path, sources: list[str], head: list | None = None) -> list:
    head = head if head is not None else [buildsys.__version__, READING_VERSION, file_stamp(SCHEMA)]
    return head + [[s, file_stamp(root / s)] for s in sources]


def load(root: Path, state: State | None, selectors: list[str], keep_going: bool = False
         ) -> tuple[list[Recipe], list[Problem]]:
    """Every recipe (or the selected ones) and the problems of those that are broken.

    A recipe whose files did not move since it was cached is taken from the
    cache; only the others are read, validated and cached again (in one
    transaction). Raises RecipeError when a recipe is broken and `keep_going` is off.
    """
    paths = discover(root)
    rels = [p.relative_to(root).as_posix() for p in paths]
    if state is not None:  # what a no-op answer is stamped by: the listing, the schema, every source below
        state.reads.file(root / "recipes")
        state.reads.file(SCHEMA)
    cached = state.cached_recipes() if state is not None else {}
    gone = sorted(set(cached) - set(rels))  # recipes deleted since they were cached
    head = [buildsys.__version__, READING_VERSION, file_stamp(SCHEMA)]
    found: dict[str, Recipe] = {}  # workspace-relative path -> recipe, from the cache
    stale: list[Path] = []
    for p, rel in zip(paths, rels):
        hit = cached.get(rel)
        recipe = None
        if hit is not None:
            stamp, text = hit
            recipe = Recipe.from_json(text)
            if stamp != _stamp(root, list(recipe.sources), head):
                recipe = None
        if recipe is None:
            stale.append(p)
        else:
            found[rel] = recipe
    # Names are checked across all recipes, cached or not: a clash sends both through the loader.
    unique, _ = unique_names(list(found.values()))
    for rel in set(found) - {r.file for r in unique}:
        stale.append(root / rel)
        del found[rel]
    if state is not None:
        for r in found.values():
            for src in r.sources:
                state.reads.file(root / src)
    if not stale:
        if gone and state is not None:  # (gone is empty without a state)
            state.cache_recipes([], drop=gone)
        return _select(list(found.values()), selectors, root), []

    from buildsys import recipe as recipe_api

    position = {p: i for i, p in enumerate(paths)}
    loaded: list[Recipe] = []
    problems: list[Problem] = []
    for p in sorted(set(stale), key=position.__getitem__):
        try:
            loaded.append(recipe_api.load_recipe(p, root))
        except RecipeError as exc:
            problems.extend(exc.problems)
    for r in loaded:
        found[r.file] = r
        if state is not None:
            for src in r.sources:
                state.reads.file(root / src)
    recipes, clashes = unique_names([found[rel] for rel in rels if rel in found])
    problems += clashes
    if state is not None:
        clashing = {r.file for r in found.values()} - {r.file for r in recipes}
        entries = [(r.file, _stamp(root, list(r.sources), head), r.to_json())
                   for r in loaded if r.file not in clashing]
        state.cache_recipes(entries, drop=gone + sorted(clashing))
    chosen = _select(recipes, selectors, root, broken={pr.file for pr in problems})
    if problems and not keep_going:
        raise RecipeError(problems)
    return chosen, problems


def _select(recipes: list[Recipe], selectors: list[str], root: Path, broken: AbstractSet[str] = frozenset()
            ) -> list[Recipe]:
    if not selectors:
        return recipes
    from buildsys import recipe as recipe_api

    known = [s for s in selectors if not any(b.endswith(s) or Path(b).stem == s for b in broken)]
    return recipe_api.select(recipes, known, root)
