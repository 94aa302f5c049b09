"""Defaults are declared twice, in the schema (what a user reads) and in the recipe's dataclasses
(what steps read through their typed parameters): this walks both and fails on any drift."""
from __future__ import annotations

import dataclasses
import typing

from buildsys.recipe.model import Recipe, SimplifySpec
from buildsys.recipe.validate import load_schema
from buildsys.steps.params import typed_value


def _resolved(node: dict, defs: dict) -> dict:
    if "$ref" in node:
        return {**defs[node["$ref"].rpartition("/")[2]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _dataclass_in(tp) -> type | None:
    for t in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(t):
            return t
    return None


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _as_declared(tp, value):
    if isinstance(value, bool) and tp is SimplifySpec:  # `simplify: true` is short for {enabled: true}
        return SimplifySpec(enabled=value)
    return typed_value(tp, value)


def drift(node: dict, cls: type, defs: dict, path: str = "") -> list[str]:
    """Every field whose default differs between the schema object `node` and the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if f.name not in node.get("properties", {}):
            continue  # set by the loader (name, file, positions), never written in a recipe
        prop, where, ours = _resolved(node["properties"][f.name], defs), f"{path}{f.name}", _default(f)
        if ours is dataclasses.MISSING:
            continue  # the loader always passes it
        if "default" in prop:
            theirs = _as_declared(hints[f.name], prop["default"])
            if theirs != ours:
                found.append(f"{where}: schema default {prop['default']!r}, dataclass default {ours!r}")
        elif ours is not None:
            found.append(f"{where}: dataclass default {ours!r}, none in the schema")
        sub = _dataclass_in(hints[f.name])
        args = typing.get_args(hints[f.name])
        if sub is not None and typing.get_origin(hints[f.name]) is tuple and "items" in prop:
            found += drift(_resolved(prop["items"], defs), sub, defs, f"{where}[].")
        elif sub is not None and "properties" in prop:
            found += drift(prop, sub, defs, f"{where}.")
        elif typing.get_origin(hints[f.name]) is dict and dataclasses.is_dataclass(args[1]):
            for key, entry in prop.get("properties", {}).items():
                entry = _resolved(entry, defs)
                if "default" in entry and typed_value(args[1], entry["default"]) != ours.get(key):
                    found.append(f"{where}.{key}: schema default {entry['default']!r}, dataclass {ours.get(key)!r}")
    return found


def test_the_schema_and_the_dataclasses_declare_the_same_defaults():
    schema = load_schema()
    assert drift(schema, Recipe, schema["$defs"]) == []


def test_a_drifted_default_is_found():
    schema = load_schema()
    changed = {**schema, "properties": {**schema["properties"], "export": {
        **schema["properties"]["export"], "properties": {
            **schema["properties"]["export"]["properties"],
            "opset": {**schema["properties"]["export"]["properties"]["opset"], "default": 17}}}}}
    assert drift(changed, Recipe, schema["$defs"]) == ["export.opset: schema default 17, dataclass default 18"]
