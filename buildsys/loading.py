"""Recipes for a command, from the resolved-recipe cache when no source file changed.

Parsing YAML and validating against the JSON Schema costs more than a whole
no-op build may take (jsonschema alone imports in ~110 ms here), so resolved
recipes are kept in the state database, keyed by the stat of every file they
were made from plus the schema and buildsys version.
"""
from __future__ import annotations

from pathlib import Path

import buildsys
from buildsys.errors import Problem, RecipeError
from buildsys.recipe.model import Recipe
from buildsys.state import State, file_stamp

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "recipe.schema.json"


def discover(root: Path) -> list[Path]:
    from buildsys.recipe import discover as _discover

    return _discover(root)


def _stamp(root: Path, sources: list[str]) -> list:
    return [buildsys.__version__, file_stamp(SCHEMA)] + [[s, file_stamp(root / s)] for s in sources]


def load(root: Path, state: State | None, selectors: list[str], keep_going: bool = False
         ) -> tuple[list[Recipe], list[Problem]]:
    """Every recipe (or the selected ones) and the problems of those that are broken.

    Raises RecipeError when a recipe is broken and `keep_going` is off.
    """
    paths = discover(root)
    cached = state.cached_recipes() if state is not None else {}
    recipes: list[Recipe] = []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        hit = cached.get(rel)
        if hit is None:
            break
        stamp, text = hit
        recipe = Recipe.from_json(text)
        if stamp != _stamp(root, list(recipe.sources)):
            break
        recipes.append(recipe)
    else:
        return _select(recipes, selectors, root), []

    from buildsys import recipe as recipe_api

    recipes, problems = recipe_api.load_recipes(root, paths)
    if state is not None:
        for r in recipes:
            state.cache_recipe(r.file, _stamp(root, list(r.sources)), r.to_json())
    chosen = _select(recipes, selectors, root, broken={pr.file for pr in problems})
    if problems and not keep_going:
        raise RecipeError(problems)
    return chosen, problems


def _select(recipes: list[Recipe], selectors: list[str], root: Path, broken: set[str] = frozenset()
            ) -> list[Recipe]:
    if not selectors:
        return recipes
    from buildsys import recipe as recipe_api

    known = [s for s in selectors if not any(b.endswith(s) or Path(b).stem == s for b in broken)]
    return recipe_api.select(recipes, known, root)
