"""Checking a recipe document against the JSON Schema, and where problems point.

This module owns the `Document` (merged data plus the file, line and column of
every value) and the wording of schema problems: each jsonschema error becomes a
`Problem` at the place that set the value, naming the dotted field path and what
was expected versus found, with a hint when the fix is known. The semantic checks
in `checks.py` (which build on this module) speak the same way. jsonschema is imported only when a document is
validated, never on the fast paths.
"""
from __future__ import annotations

import difflib
import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.core.errors import Problem

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "recipe.schema.json"

Pos = tuple[str, int | None, int | None]
FieldPath = tuple[Any, ...]

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]*"
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TYPE_WORDS = {"object": "mapping", "array": "list"}
_PATTERN_WORDS = {
    f"^{NAME_PATTERN}$": ("a name of lowercase letters, digits, '.', '_' or '-' starting with a letter or digit",
                          "for example resnet18 or bert-base.v2"),
    f"^{IDENT}$": ("a name of letters, digits and '_' not starting with a digit", "for example batch or seq_len"),
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$": (
        "'module.path:callable'", "for example models.resnet:resnet18"),
    r"^[0-9]+(\.[0-9]+)? ?(B|[KMGT]B|[KMGT]iB)$": (
        "a byte count or a size like 4GiB, 512MiB, 1.5GB", "units: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, "
        "GiB, TiB (powers of 1024)"),
}
_NUMBER_TEXT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_ONLY_FOR = {"workspace": "workspace applies to tensorrt targets only",
             "mode": "mode applies to torchscript targets only"}
_KIND_FIELDS = {"uniform": "low, high", "normal": "mean, std", "randint": "low, high", "npy": "path",
                "images": "path, preset"}


@dataclass(frozen=True)
class Document:
    """A recipe's data after `extends` merging, and where each value was written."""

    file: str  # the recipe file, workspace-relative
    data: dict[str, Any]
    values: dict[FieldPath, Pos] = field(default_factory=dict)  # where each value starts
    keys: dict[FieldPath, Pos] = field(default_factory=dict)  # where each mapping entry's key starts
    bool_texts: dict[FieldPath, str] = field(default_factory=dict)  # how each boolean was written (`no`, `On`)

    def get(self, path: FieldPath) -> Any:
        node: Any = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def at(self, path: FieldPath, key: bool = False) -> Pos:
        """The position of `path` (its key when asked, or when it holds a collection),
        else of its nearest located parent."""
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.keys and isinstance(self.get(path), (dict, list)):
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return (self.file, None, None)

    def problem(self, path: FieldPath, message: str, hint: str | None = None, key: bool = False) -> Problem:
        file, line, col = self.at(path, key)
        return Problem(file, line, col, dotted(path), message, hint)


def dotted(path: FieldPath) -> str:
    return ".".join(str(p) for p in path)


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# -- JSON Schema ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _validator_class() -> Any:
    """JSON Schema 2020-12 where an integer is written as one: 8.0 is a number, not the integer 8."""
    from jsonschema import Draft202012Validator, validators  # ~110 ms: only when a recipe is really validated

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    return validators.extend(Draft202012Validator, type_checker=checker)


def schema_problems(doc: Document) -> list[Problem]:
    found: dict[tuple, tuple[bool, Problem]] = {}
    for error in _validator_class()(load_schema()).iter_errors(doc.data):
        conditional = "then" in error.absolute_schema_path
        for path, message, hint, key in _explain(error, doc):
            if hint is None and error.validator in ("type", "enum"):
                hint = _described(error, path)
            slot = (path, error.validator)
            # A conditional branch (precision for a backend, fields of a data kind)
            # says more than the general rule that failed on the same value.
            if slot in found and found[slot][0] and not conditional:
                continue
            found[slot] = (conditional, doc.problem(path, message, hint, key))
    return [p for _, p in found.values()]


def _explain(error: Any, doc: Document) -> list[tuple[FieldPath, str, str | None, bool]]:
    """(field path, message, hint, point at the key) for one jsonschema error."""
    path, kind, value, schema = tuple(error.absolute_path), error.validator, error.instance, error.schema
    when = _condition(error, doc) if "then" in error.absolute_schema_path else ""
    if "propertyNames" in error.absolute_schema_path:
        desc, hint = _PATTERN_WORDS.get(str(error.validator_value), ("a valid name", None))
        return [((*path, value), f"expected {desc}, found '{value}'", hint, True)]
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        return [((*path, k), f"unknown field '{k}'", suggest(k, allowed, listing=True), True)
                for k in value if k not in allowed]
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        return [((*path, k), f"required field is missing{when}", None, False) for k in missing]
    if kind == "not":
        return [(path, f"not allowed{when}", _not_allowed_hint(path, doc), True)]
    if isinstance(value, bool) and _wants_text(kind, error.validator_value):
        # `name: no` loads as a boolean (as PyYAML reads it) where text belongs
        return [(path, f"expected {_expected_text(kind, error.validator_value)}{when}, found the boolean "
                 f"{str(value).lower()}", f"quote it: '{doc.bool_texts.get(path, str(value).lower())}'", False)]
    if kind == "type":
        return [(path, f"expected {_types(error.validator_value)}{when}, found {found_text(value)}",
                 _type_hint(error.validator_value, value), False)]
    if kind == "enum":
        options = [str(o) for o in error.validator_value]
        expected = f"one of {', '.join(options)}" if len(options) > 1 else options[0]
        shown = json.dumps(value) if isinstance(value, str) else found_text(value)
        hint = suggest(value, options) if isinstance(value, str) else None
        return [(path, f"expected {expected}{when}, found {shown}", hint, False)]
    if kind == "const":
        hint = "this buildsys reads recipe format version 1" if path == ("version",) else None
        return [(path, f"expected {json.dumps(error.validator_value)}, found {found_text(value)}", hint, False)]
    if kind == "uniqueItems":
        dup = next(i for i, v in enumerate(value) if v in value[:i])
        first = value.index(value[dup])
        return [((*path, dup), f"duplicate item {json.dumps(value[dup])} (also {dotted((*path, first))})", None, False)]
    if kind == "pattern":
        desc, hint = _PATTERN_WORDS.get(error.validator_value, (f"text matching {error.validator_value}", None))
        if path[-2:] == ("model", "factory") and ":" not in value and "." in value:
            module, _, attr = value.rpartition(".")
            hint = f"separate the module from the callable with ':': {module}:{attr}"
        return [(path, f"expected {desc}, found '{value}'", hint, False)]
    return [(path, _bound_message(kind, error.validator_value, value, schema), None, False)]


def _described(error: Any, path: FieldPath) -> str | None:
    """The schema's description of the field: the hint where no better one is known."""
    schema = error.schema
    desc = schema.get("description")
    if not desc:
        return None
    field_name = path[-1] if path and isinstance(path[-1], str) else dotted(path) or "the recipe"
    required = schema.get("required") if schema.get("type") == "object" else None
    shape = f" (a mapping with {', '.join(required)})" if required else ""
    return f"{field_name}: {desc.rstrip('.')}{shape}"


def _wants_text(kind: str, expected: Any) -> bool:
    if kind == "type":
        return "string" in ([expected] if isinstance(expected, str) else expected)
    return kind == "enum" and all(isinstance(o, str) for o in expected)


def _expected_text(kind: str, expected: Any) -> str:
    if kind == "type":
        return _types(expected)
    return f"one of {', '.join(expected)}" if len(expected) > 1 else expected[0]


def _bound_message(kind: str, limit: Any, value: Any, schema: dict) -> str:
    noun = "an integer" if "integer" in str(schema.get("type")) else "a number"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"expected {noun} {op} {limit}, found {value}"
    if kind == "minItems":
        return f"expected at least {limit} item{'s' if limit != 1 else ''}, found {len(value) or 'none'}"
    if kind == "minLength":
        return "expected a non-empty string" if limit == 1 else f"expected at least {limit} characters"
    if kind == "maxLength":
        return f"expected at most {limit} characters, found {len(value)}"
    if kind == "minProperties":
        return f"expected at least one of {', '.join(schema.get('properties', {}))}, found none"
    return f"invalid value {found_text(value)} ({kind})"


def _condition(error: Any, doc: Document) -> str:
    """' for backend onnxruntime' / ' for kind randint': what selected the failing branch."""
    owner = error.instance if error.validator == "required" else doc.get(tuple(error.absolute_path)[:-1])
    if not isinstance(owner, dict):
        return ""
    if "backend" in owner:
        return f" for backend {owner['backend']}"
    # The only branch taken without its key present is data's default kind.
    return f" for kind {owner.get('kind', 'uniform')}"


def _not_allowed_hint(path: FieldPath, doc: Document) -> str | None:
    name = path[-1]
    if name in _ONLY_FOR:
        return _ONLY_FOR[name]
    owner = doc.get(path[:-1])
    kind = owner.get("kind", "uniform") if isinstance(owner, dict) else "uniform"
    fields = _KIND_FIELDS.get(kind, "other fields") if isinstance(kind, str) else "other fields"
    return f"kind {kind} takes {fields}"


def _types(expected: str | list[str]) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(_TYPE_WORDS.get(n, n) for n in names)


def found_text(value: Any) -> str:
    """How a found value is shown: `string '0.001'`, `integer 3`, `null`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {number_text(value)}"
    if isinstance(value, str):
        return f"string '{value}'"
    return "a list" if isinstance(value, list) else "a mapping"


def number_text(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return "-.inf" if value < 0 else ".inf"
    return repr(value)


def _type_hint(expected: str | list[str], value: Any) -> str | None:
    names = [expected] if isinstance(expected, str) else list(expected)
    if value is None:
        return "nothing follows the colon, so YAML reads null; give a value or remove the key"
    if isinstance(value, float) and "integer" in names and value.is_integer():
        return f"write {int(value)}: an integer is written without a decimal point"
    if isinstance(value, str) and {"number", "integer"} & set(names):
        # A plain scalar that looks like this would have been read as a number,
        # so this one was quoted.
        if _NUMBER_TEXT.fullmatch(value.strip()):
            return "remove the quotes: a quoted value is text"
        if _NUMBER_TEXT.fullmatch(value.replace("_", "")):
            return "write the number without '_' (YAML 1.2 reads it as text)"
        return None
    if names == ["string"] and not isinstance(value, (dict, list)):
        return "quote it to make it text"
    return None


def suggest(word: str, options: list[str], listing: bool = False) -> str | None:
    """'did you mean ...?' for the closest option (the first listed on a tie)."""
    best, score = None, 0.6
    for option in options:
        ratio = difflib.SequenceMatcher(None, word, option).ratio()
        if ratio > score or (ratio == score and best is None):
            best, score = option, ratio
    if best is not None:
        return f"did you mean '{best}'?"
    return f"expected one of: {', '.join(options)}" if listing and options else None
