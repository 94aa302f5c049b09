"""The bounds of a recipe file, and the cheap checks that enforce them before parsing.

A recipe describes one model in a few kilobytes. The bounds here keep a malformed
or hostile file from costing minutes and gigabytes: libyaml takes time that grows
with the square of the depth of nested flow collections (`[[[[...]]]]`), and every
value of a file holds its position in memory. So the size is checked while the
file is read, and the nesting depth by a scan of the text, both before the YAML
parser sees it. Sizes (`workspace: 4GiB`) are bounded where they are parsed, before
any arithmetic on their digits. Each limit is named in the message that reports it.
"""
from __future__ import annotations

import re

from buildsys.core.errors import Problem

MAX_FILE_BYTES = 256 * 1024  # a recipe file, base files included
MAX_DEPTH = 64  # nested mappings and lists of one file
MAX_EXTENDS = 16  # files in one `extends` chain, the recipe included
MAX_INT = 2**63 - 1  # integers fit in 64 bits, as ONNX, numpy and JSON readers take them
MAX_NAME_BYTES = 255  # one path component (NAME_MAX of Linux file systems)
MAX_PATH_BYTES = 4095  # a whole path (PATH_MAX less its NUL)

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
MAX_SIZE = MAX_INT  # bytes: the largest integer a recipe holds, and what TensorRT's size_t pools take
_SIZE_TEXT = 40  # characters of a size string; 2^63 bytes is 19 digits


def parse_size(value: int | float | str) -> int:
    """Bytes from a byte count or a size string: 4GiB, 512MiB, 1.5GB, 100 B.

    ValueError (SizeTooLarge) beyond MAX_SIZE, checked on the text's length before
    any arithmetic, so a thousand-digit size is refused, not converted.
    """
    from decimal import Decimal

    if not isinstance(value, str):
        size = int(value)
    else:
        text = value.replace(" ", "")
        if len(text) > _SIZE_TEXT:
            raise SizeTooLarge(value)
        unit = next(u for u in sorted(_UNITS, key=len, reverse=True) if text.endswith(u))
        size = int(Decimal(text[: -len(unit)]) * _UNITS[unit])
    if size > MAX_SIZE:
        raise SizeTooLarge(value)
    return size


class SizeTooLarge(ValueError):
    """A size over MAX_SIZE bytes."""

    def __init__(self, value: int | float | str):
        text = str(value)
        shown = text if len(text) <= 24 else f"{text[:10]}…{text[-6:]} ({len(text)} characters)"
        super().__init__(f"{shown} is larger than the largest size, 8 EiB (2^63-1 bytes)")


_SPECIAL = re.compile(r"""[\[\]{}'"#]""")
_LEAD = re.compile(r"(?:[-?] +)+|(?:[-?]$)")  # block sequence / complex key indicators opening a level
_BLOCK_SCALAR = re.compile(r"(?:^|[\s:])[|>][-+0-9]*\s*(?:#.*)?$")
_QUOTE_OPENERS = " \t[{,:-?"


def size_problem(head: bytes, display: str) -> Problem:
    """The problem of a file whose first MAX_FILE_BYTES + 1 bytes are `head`: located at the first byte too many."""
    at = MAX_FILE_BYTES
    line, col = head.count(b"\n", 0, at) + 1, at - (head.rfind(b"\n", 0, at) + 1) + 1
    return Problem(display, line, col, "",
                   f"the file is larger than {MAX_FILE_BYTES // 1024} KiB, the limit of a recipe file",
                   "a recipe describes one model; keep bulk data in the files it names (npy, checkpoint)")


def depth_problem(text: str, display: str) -> Problem | None:
    """A problem at the first place nested deeper than MAX_DEPTH, found without parsing.

    The scan follows flow brackets (outside quotes and comments) and block indentation;
    it errs towards counting less, since the composer checks the exact depth again.
    """
    found = _deepest(text)
    if found is None:
        return None
    line, col, keys = found
    return Problem(display, line, col, ".".join(keys), *depth_message())


def depth_message() -> tuple[str, str]:
    return (f"nested more than {MAX_DEPTH} levels deep, the limit of a recipe",
            "recipes are plain settings; flatten the value or keep it in a file the recipe names")


def _deepest(text: str) -> tuple[int, int, list[str]] | None:
    """(line, column, the block keys that lead there) of the first place too deep, else None."""
    flow = 0  # open flow collections
    quote: str | None = None  # the quote of a quoted scalar that continues onto the next line
    indents: list[int] = []  # indentation of the open block levels
    keys: list[str] = []  # the key written at each open block level ('' for none)
    level = 0
    scalar_indent: int | None = None  # inside a block scalar (| or >) opened at this indentation
    for lineno, line in enumerate(text.split("\n"), 1):
        start = 0
        if quote is None and flow == 0:
            stripped = line.lstrip(" ")
            indent = len(line) - len(stripped)
            if scalar_indent is not None:
                if not stripped.strip() or indent > scalar_indent:
                    continue
                scalar_indent = None
            if not stripped.strip() or stripped.startswith("#"):
                continue
            while indents and indents[-1] > indent:
                indents.pop()
                keys.pop()
            if not indents or indents[-1] < indent:
                indents.append(indent)
                keys.append("")
            lead = _LEAD.match(stripped)
            keys[-1] = _block_key(stripped[lead.end():] if lead else stripped)
            level = len(indents) + (lead.group().count("-") + lead.group().count("?") if lead else 0)
            if level > MAX_DEPTH:
                return lineno, indent + 1, [k for k in keys if k]
            if _BLOCK_SCALAR.search(stripped):
                scalar_indent = indent
            start = indent
        found, flow, quote = _scan_line(line, start, flow, quote, level)
        if found is not None:
            return lineno, found, [k for k in keys if k]
    return None


def _scan_line(line: str, start: int, flow: int, quote: str | None, level: int
               ) -> tuple[int | None, int, str | None]:
    """(column past the limit or None, open flow collections, open quote) after one line."""
    pos = start
    while (m := _SPECIAL.search(line, pos)) is not None:
        c, i = m.group(), m.start()
        pos = i + 1
        if quote == "'":
            if c == "'":
                if line.startswith("'", i + 1):  # '' is an escaped quote
                    pos = i + 2
                else:
                    quote = None
        elif quote == '"':
            if c == '"' and _escapes_before(line, i) % 2 == 0:
                quote = None
        elif c == "#":
            if i == 0 or line[i - 1] in " \t":
                break
        elif c in "'\"":
            if i == 0 or line[i - 1] in _QUOTE_OPENERS:
                quote = c
        elif c in "[{":
            flow += 1
            if level + flow - 1 > MAX_DEPTH:  # the collection's own depth, as the composer counts it
                return i + 1, flow, quote
        else:
            flow = max(0, flow - 1)
    return None, flow, quote


def _escapes_before(line: str, i: int) -> int:
    j = i
    while j > 0 and line[j - 1] == "\\":
        j -= 1
    return i - j


def _block_key(body: str) -> str:
    """The key a block mapping line starts with ('' for none): `model:`, `- name: x`."""
    colon = body.find(": ")
    if colon < 0 and body.endswith(":"):
        colon = len(body) - 1
    key = body[:colon].strip() if colon > 0 else ""
    if key[:1] in ("'", '"'):
        return key.strip("'\"")
    return "" if any(c in key for c in "#[]{},&*!|>") else key


def unusable_path(text: str) -> str | None:
    """Why `text` cannot name a file on this system (a NUL, a name too long), or None."""
    if "\0" in text:
        return "the path contains a NUL character, which no file name can hold"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return "the path holds a lone surrogate (\\ud800-\\udfff), which is not text a file name can hold"
    if len(encoded) > MAX_PATH_BYTES:
        return f"the path is longer than {MAX_PATH_BYTES} bytes, the limit of a path"
    if any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")):
        return f"a name in the path is longer than {MAX_NAME_BYTES} bytes, the limit of a file name"
    return None
