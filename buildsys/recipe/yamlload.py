"""Reading one recipe YAML file into plain data and the position of every value.

This module owns the YAML dialect of recipes. It composes the document from the
parser's events itself (libyaml's parser when present) instead of using PyYAML's
constructors, so that:

- scalars resolve as YAML 1.2's core schema says (`1e-5` is a float, `2024-01-01`
  is a string, `y`, `n` and `x` are strings), except that `yes`/`no`/`on`/`off`
  are booleans as PyYAML reads them: a Python user's other tools read the recipe
  the same way, and a boolean where text belongs is reported with the hint to
  quote it (see `bool_texts`). The YAML 1.1 numbers that other tools would still
  read (octal `010`, base-60 `12:30`) are errors with a hint;
- integers fit in 64 bits, and the file's size and nesting depth are bounded
  (`limits.py`), the depth checked by a scan before the parser runs;
- every explicit tag (`!!python/object/apply:...`, `!!str`, `!custom`) is an error:
  a recipe is data, never objects;
- anchors, aliases and merge keys (`<<`) are errors too: sharing goes through
  `extends:` a base file, which keeps one place (file, line, column) per value;
- duplicate keys are errors naming both places;
- every problem of the file is collected before one `RecipeError` is raised.

Positions are 1-based (line, column). `positions` holds where each value starts,
`key_positions` where the key of each mapping entry starts, `bool_texts` how each
boolean value was written.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from buildsys.core.errors import Problem, RecipeError
from buildsys.recipe import limits

Path_ = tuple[Any, ...]  # a field path: mapping keys (str) and list indices (int)
Mark = tuple[int, int]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = {"", "~", "null", "Null", "NULL"}
# YAML 1.2's booleans and YAML 1.1's as PyYAML resolves them (y and n stay text).
_TRUE = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"}
_FALSE = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
# What YAML 1.1 (PyYAML, Go yaml.v2, many editors) reads as a number, 1.2 as text.
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?")
_MAX_INT_DIGITS = len(str(limits.MAX_INT))
_START_HINT = "a recipe is a mapping that starts with `version: 1`"


@dataclass(frozen=True)
class YamlDocument:
    """The plain data of one YAML file and where each of its values is written."""

    file: str  # as shown in messages (workspace-relative)
    data: dict[str, Any]
    positions: dict[Path_, Mark] = field(default_factory=dict)
    key_positions: dict[Path_, Mark] = field(default_factory=dict)
    bool_texts: dict[Path_, str] = field(default_factory=dict)  # `no`, `On`: how a boolean was written

    def locate(self, path: Path_) -> Mark | None:
        """Where a user looks for `path`: the value of a scalar, else its key."""
        value = self.positions.get(path)
        key = self.key_positions.get(path)
        if key is not None and _is_collection(self.get(path)):
            return key
        return value if value is not None else key

    def get(self, path: Path_) -> Any:
        node: Any = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node


def _is_collection(value: Any) -> bool:
    return isinstance(value, (dict, list))


def load_yaml(path: Path, display: str) -> YamlDocument:
    """Read `path` (shown as `display` in messages); raise RecipeError on any problem."""
    try:
        with open(path, "rb") as f:  # read at most one byte past the limit, whatever the file is
            raw = f.read(limits.MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RecipeError([Problem(display, None, None, "", f"cannot read the file: {reason}")]) from None
    if len(raw) > limits.MAX_FILE_BYTES:
        raise RecipeError([limits.size_problem(raw, display)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError(
            [
                Problem(
                    display,
                    line,
                    col,
                    "",
                    f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                    "save it as UTF-8",
                )
            ]
        ) from None
    return parse_yaml(text, display)


def parse_yaml(text: str, display: str) -> YamlDocument:
    """Parse recipe YAML text; raise RecipeError listing every problem found."""
    too_deep = limits.depth_problem(text, display)
    if too_deep is not None:
        raise RecipeError([too_deep])
    composer = _Composer(display)
    try:
        data = composer.compose(yaml.parse(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = ": ".join(str(s) for s in (exc.context, exc.problem) if s) or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        hint = "check the indentation, brackets and quotes here and on the line before"
        if mark is not None and text.splitlines()[mark.line:mark.line + 1] and "\t" in text.splitlines()[mark.line]:
            hint = "YAML indents with spaces; replace the tabs"
        raise RecipeError(
            [*composer.problems, Problem(display, line, col, "", f"YAML syntax error: {message}", hint)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, found before any token
        at = min(exc.position, len(text))
        line, col = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
        raise RecipeError([*composer.problems, Problem(
            display, line, col, "", f"YAML error: character #x{exc.character:04x} is not allowed in YAML text",
            "remove it, or write it as an escape inside double quotes (\"\\x1b\")")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([*composer.problems, Problem(display, None, None, "", f"YAML error: {exc}")]) from None
    if composer.problems:
        raise RecipeError(composer.problems)
    assert isinstance(data, dict)
    return YamlDocument(display, data, composer.positions, composer.key_positions, composer.bool_texts)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


class _Rejected(Exception):
    """A value that was reported as a problem; its entry is left out of the data."""


class _Composer:
    """Builds plain data from parser events, recording positions and problems."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []
        self.positions: dict[Path_, Mark] = {}
        self.key_positions: dict[Path_, Mark] = {}
        self.bool_texts: dict[Path_, str] = {}

    def problem(self, mark: Any, path: Path_, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, _dotted(path), message, hint))

    def compose(self, events: Iterator[yaml.Event]) -> dict[str, Any] | None:
        self.events = events
        next(self.events)  # StreamStartEvent
        event = next(self.events)
        if isinstance(event, yaml.StreamEndEvent):
            self.problems.append(Problem(self.file, None, None, "", "the file is empty", _START_HINT))
            return None
        body = next(self.events)
        try:
            data = self.node(body, ())
        except _Rejected:
            data = None
        next(self.events)  # DocumentEndEvent
        extra = next(self.events)
        if isinstance(extra, yaml.DocumentStartEvent):
            self.problem(extra.start_mark, (), "expected a single YAML document, found a second one",
                         "remove the `---` line")
        elif not self.problems and not isinstance(data, dict):
            found = "nothing" if data is None else _kind(data)
            if not _is_collection(data) and data is not None:
                found += f" '{body.value}'"
            self.problem(body.start_mark, (), f"expected a mapping at the top level, found {found}", _START_HINT)
        return data if isinstance(data, dict) else None

    def node(self, event: yaml.Event, path: Path_) -> Any:
        self.check_decorations(event, path)
        if len(path) > limits.MAX_DEPTH:
            self.problem(event.start_mark, path, *limits.depth_message())
            self.skip(event)
            raise _Rejected
        if isinstance(event, yaml.ScalarEvent):
            return self.scalar(event, path)
        if isinstance(event, yaml.SequenceStartEvent):
            return self.sequence(path)
        if isinstance(event, yaml.MappingStartEvent):
            return self.mapping(path)
        raise _Rejected  # an alias, already reported

    def check_decorations(self, event: yaml.Event, path: Path_) -> None:
        if isinstance(event, yaml.AliasEvent):
            self.problem(event.start_mark, path, f"alias *{event.anchor} is not supported",
                         "recipes do not use anchors and aliases; share settings through `extends:` a base file")
            return
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(event.start_mark, path, f"explicit tag {shown} is not allowed",
                         "recipes hold plain data only; remove the tag (quote the value if you mean text)")
        if event.anchor is not None:
            self.problem(event.start_mark, path, f"anchor &{event.anchor} is not supported",
                         "recipes do not use anchors and aliases; share settings through `extends:` a base file")

    def skip(self, event: yaml.Event) -> None:
        depth = 1 if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)) else 0
        while depth:
            inner = next(self.events)
            if isinstance(inner, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
            elif isinstance(inner, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1

    def sequence(self, path: Path_) -> list[Any]:
        items: list[Any] = []
        while not isinstance(event := next(self.events), yaml.SequenceEndEvent):
            item_path = (*path, len(items))
            try:
                value = self.node(event, item_path)
            except _Rejected:
                value = None  # keep later indices where the user wrote them
            self.positions[item_path] = _mark(event)
            items.append(value)
        return items

    def mapping(self, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, Mark] = {}
        while not isinstance(key_event := next(self.events), yaml.MappingEndEvent):
            key = self.key(key_event, path)
            value_event = next(self.events)
            entry = (*path, key if key is not None else getattr(key_event, "value", "?"))
            if key is not None and key in first:
                line, col = first[key]
                self.problem(key_event.start_mark, entry, f"duplicate key '{key}' (first at line {line}, column {col})",
                             "a key may appear once per mapping; remove one of them")
                key = None
            elif key is not None:
                first[key] = _mark(key_event)
            try:
                value = self.node(value_event, entry)
            except _Rejected:
                continue
            if key is None:
                continue
            result[key] = value
            self.key_positions[entry] = _mark(key_event)
            self.positions[entry] = _mark(value_event)
        return result

    def key(self, event: yaml.Event, path: Path_) -> str | None:
        """The key's text, or None when it was reported (its value is still read)."""
        if not isinstance(event, yaml.ScalarEvent):
            self.check_decorations(event, path)
            if not isinstance(event, yaml.AliasEvent):
                self.problem(event.start_mark, path, f"expected a text key, found {_event_kind(event)}")
                self.skip(event)
            return None
        try:
            key = self.node(event, (*path, event.value))
        except _Rejected:
            return None
        if key == "<<" and not event.style:
            self.problem(event.start_mark, (*path, key), "merge keys (<<) are not supported",
                         "share settings through `extends:` a base file")
            return None
        if not isinstance(key, str):
            found = f"the boolean {str(key).lower()}" if isinstance(key, bool) else f"{_kind(key)} {event.value}"
            self.problem(event.start_mark, path, f"expected a text key, found {found}", f"quote it: '{event.value}'")
            return None
        return key

    def scalar(self, event: yaml.ScalarEvent, path: Path_) -> Any:
        text = event.value
        if event.style or event.tag is not None:
            return text  # quoted, block, or tagged (reported): always text
        value = _resolve_plain(text)
        if isinstance(value, bool):
            self.bool_texts[path] = text
        if value is _TOO_LARGE or (isinstance(value, int) and not -limits.MAX_INT - 1 <= value <= limits.MAX_INT):
            digits = len(text.lstrip("+-"))
            shown = text if digits <= 40 else f"of {digits} digits"
            self.problem(event.start_mark, path, f"the integer {shown} is out of range: recipes hold integers "
                         "from -2^63 to 2^63-1", "write a smaller number, or quote it if you mean text")
            raise _Rejected
        if value is not _UNRESOLVED:
            return value
        trap = _yaml11_trap(text)
        if trap is not None:
            self.problem(event.start_mark, path, trap[0], trap[1])
            raise _Rejected
        return text


_UNRESOLVED = object()
_TOO_LARGE = object()  # more digits than a 64-bit integer has: never converted (Python caps int() at 4300)


def _resolve_plain(text: str) -> Any:
    """YAML 1.2 core schema resolution of a plain scalar (text when nothing matches)."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        if _LEADING_ZERO.fullmatch(text):
            return _UNRESOLVED
        return _TOO_LARGE if len(text.lstrip("+-")) > _MAX_INT_DIGITS else int(text)
    if _OCT.fullmatch(text) or _HEX.fullmatch(text):
        return _TOO_LARGE if len(text) > 2 + 22 else int(text[2:], 8 if text[1] == "o" else 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return _UNRESOLVED


def _yaml11_trap(text: str) -> tuple[str, str] | None:
    """(message, hint) when YAML 1.1 would read `text` as something else than text."""
    if _LEADING_ZERO.fullmatch(text) and len(text) > _MAX_INT_DIGITS + 1:
        return (f"YAML 1.1 reads this {len(text)}-digit text with a leading zero as an octal number",
                "quote it if you mean text")
    if _LEADING_ZERO.fullmatch(text):
        sign = "-" if text.startswith("-") else ""
        digits = text.lstrip("+-").replace("_", "")
        octal = set(digits) <= set("01234567")
        meaning = f"the octal number {sign}{int(digits, 8)}" if octal else "an octal number"
        return (f"YAML 1.1 reads {text} as {meaning}",
                f"write {sign}{int(digits)} without the leading zero, or quote it: '{text}'")
    if _SEXAGESIMAL.fullmatch(text):
        return (f"YAML 1.1 reads {text} as a base-60 number",
                f"quote it: '{text}'")
    return None


def _mark(event: yaml.Event) -> Mark:
    return (event.start_mark.line + 1, event.start_mark.column + 1)


def _event_kind(event: yaml.Event) -> str:
    if isinstance(event, yaml.MappingStartEvent):
        return "a mapping"
    if isinstance(event, yaml.SequenceStartEvent):
        return "a list"
    return "an alias"


def _kind(value: Any) -> str:
    """How a found value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"
