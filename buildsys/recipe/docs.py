"""The recipe reference table, generated from `schemas/recipe.schema.json`.

The schema is the single definition of the format; this module renders it as a
Markdown table (field path, type, default, description) so the documentation can
never disagree with what validation accepts. Conditional restrictions (which
precisions a backend takes, which fields a data kind takes) are stated in the
fields' descriptions.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from buildsys.recipe.validate import load_schema

_TYPE_WORDS = {"object": "mapping", "array": "list"}


def schema_table_markdown() -> str:
    """A Markdown table with one row per field of a recipe, in schema order."""
    schema = load_schema()
    lines = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    for path, node in _fields(schema, schema, ""):
        lines.append(f"| `{path}` | {_type(schema, node)} | {_default(node)} | {_cell(node.get('description', ''))} |")
    return "\n".join(lines) + "\n"


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with a local `$ref` followed; keywords beside the `$ref` win."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = {**_resolve(root, target), **node}
    merged.pop("$ref")
    return merged


def _fields(root: dict[str, Any], node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    node = _resolve(root, node)
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        child = _resolve(root, child)
        yield path, child
        yield from _children(root, child, path)


def _children(root: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    items = node.get("items")
    if isinstance(items, dict):
        items = _resolve(root, items)
        if "properties" in items:
            yield from _fields(root, items, f"{path}[].")
        elif "description" in items and "enum" not in items:
            yield f"{path}[]", items
            yield from _children(root, items, f"{path}[]")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        extra = _resolve(root, extra)
        key = f"{path}.<{'dim' if path.endswith(('dims', 'profiles[]')) else 'name'}>"
        yield key, extra
        yield from _fields(root, extra, f"{key}.")
    elif "properties" in node:
        yield from _fields(root, node, f"{path}.")


def _type(root: dict[str, Any], node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kinds = node.get("type", "any")
    names = [kinds] if isinstance(kinds, str) else kinds
    text = " or ".join(_TYPE_WORDS.get(k, k) for k in names)
    items = node.get("items")
    if text == "list" and isinstance(items, dict):
        inner = _resolve(root, items)
        if "enum" in inner:
            text += " of " + " \\| ".join(f"`{v}`" for v in inner["enum"])
        elif "properties" not in inner:
            text += " of " + _type(root, inner)
    return text


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'], separators=(', ', ': '))}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    print(schema_table_markdown())
