"""Why an export failed, in one or two lines a user can act on.

The exporters answer with pages: a banner with terminal colours, advice to file
an issue, the exception wrapped two or three times. The whole of it goes to the
step's log; the message keeps the root cause (the innermost exception of the
chain), the operator or the guard involved, and the line of the model's code
where it happened when the exception or the exported graph says so.
"""
from __future__ import annotations

import os
import re
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# The boilerplate torch.onnx wraps around a failure: advice, not cause.
_BANNER = re.compile(r"^(Failed to (decompose|convert|export)|- Create an|- If there|- Run |"
                     r"## Exception summary|\(Refer to the full|The error above occurred|⬆️|"
                     r"For more information, run with|For extended logs|If you suspect|For more debugging|"
                     r"For C\+\+ stack trace|consider using data-dependent)")
_CALL_SITE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.+)')
_NODE = re.compile(r"Error when translating node %(\w+)")
_OP = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)")
_TARGET = re.compile(r"target=torch\.ops\.([\w.]+)")
# The TracerWarnings of a tensor turned into a Python value: the trace froze a branch or a size.
TRACER_FREEZING = ("Converting a tensor to a Python", "registered as constants", "Python values")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and what caused it, outermost first."""
    found: list[BaseException] = []
    while exc is not None and exc not in found and len(found) < 16:
        found.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found


def full_report(exc: BaseException) -> str:
    """The whole exception chain with its tracebacks, colours removed: for the log."""
    return strip_ansi("".join(traceback.format_exception(exc)))


def _library_roots() -> tuple[str, ...]:
    import torch

    paths = sysconfig.get_paths()
    return tuple({os.path.dirname(torch.__file__) + os.sep, paths["stdlib"] + os.sep,
                  str(Path(__file__).resolve().parents[1]) + os.sep})


def _site_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(sorted({paths["purelib"] + os.sep, paths["platlib"] + os.sep}, key=len, reverse=True))


def shown_path(path: str, workspace: Path) -> str:
    """A source path as a user reads it: workspace-relative, or from site-packages on."""
    path = os.path.abspath(path)
    root = str(workspace) + os.sep
    if path.startswith(root):
        return path[len(root):]
    for site in _site_roots():
        if path.startswith(site):
            return path[len(site):]
    return path


def model_frame(exc: BaseException, workspace: Path) -> str | None:
    """`file:line` of the innermost frame of the model's own code (not torch, not buildsys) in the chain."""
    libraries = _library_roots()
    best = None
    for e in chain(exc):
        for frame in traceback.extract_tb(e.__traceback__):
            f = os.path.abspath(frame.filename)
            if frame.filename.startswith("<") or f.startswith(libraries):
                continue
            best = f"{shown_path(f, workspace)}:{frame.lineno} ({frame.line.strip() if frame.line else frame.name})"
    return best


def _call_site(text: str, workspace: Path) -> str | None:
    """The `File "…", line N` the exporter quotes as the user's call that failed (last one wins)."""
    found = _CALL_SITE.findall(text)
    libraries = _library_roots()
    user = [m for m in found if not os.path.abspath(m[0]).startswith(libraries)]
    if not user:
        return None
    path, line, _, code = user[-1]
    return f"{shown_path(path, workspace)}:{line} ({code.strip()})"


def _node_site(program, node_name: str, workspace: Path) -> str | None:
    """Where the graph node came from, by the stack trace torch.export keeps on it."""
    if program is None:
        return None
    # Decomposition renames nodes (linalg_eigvals -> linalg_eig): an exact name first, then a stem.
    nodes = [n for n in program.graph.nodes if n.meta.get("stack_trace")]
    found = [n for n in nodes if n.name == node_name] or \
        [n for n in nodes if n.name.startswith(node_name) or node_name.startswith(n.name)]
    return _call_site(found[0].meta["stack_trace"], workspace) if found else None


def _cause_line(exc: BaseException) -> str:
    """The first line of an exception that says something, colours and banners removed."""
    text = strip_ansi(str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _BANNER.match(ln.strip())]
    head = lines[0] if lines else ""
    return f"{type(exc).__name__}: {head[:400]}" if head else type(exc).__name__


@dataclass(frozen=True)
class Cause:
    what: str  # one line: the root cause
    where: str | None  # the model's source line, when known


def root_cause(exc: BaseException, workspace: Path, program=None) -> Cause:
    """The innermost cause of an export failure, and the model code it points at."""
    links = chain(exc)
    texts = "\n".join(strip_ansi(str(e)) for e in links)
    innermost = links[-1]
    what = _cause_line(innermost)
    op = _OP.search(texts)
    if op and "No ONNX function" in texts:
        what = f"no ONNX conversion for the operator {op.group(1)}.{op.group(2)}" + \
               (f" ({_cause_line(innermost)})" if "Failure message" not in texts else
                f": {texts.split('Failure message:', 1)[1].strip().splitlines()[0][:200]}")
    elif "data-dependent" in texts or "GuardOnDataDependentSymNode" in type(innermost).__name__:
        what = f"the model branches on the values of a tensor ({_cause_line(innermost)})"
    else:
        target = _TARGET.search(texts)
        if target and target.group(1) not in what:
            what += f" (in {target.group(1)})"
    node = _NODE.search(texts)
    where = (_node_site(program, node.group(1), workspace) if node else None) \
        or _call_site(texts, workspace) or model_frame(exc, workspace)
    return Cause(what, where)


# ---- dims the exporter could not keep dynamic over the declared range ----

_FIX_DIM = re.compile(r"^\s*(\w+) = Dim\('\w+'(?:, min=(\d+))?(?:, max=(\d+))?\)\s*$")
_FIX_MULTIPLE = re.compile(r"^\s*(\w+) = (\d+)\*(\w+)(?: \+ (\d+))?\s*$")
_FIX_CONST = re.compile(r"^\s*(\w+) = (\d+)\s*$")


def violated_dims(text: str, declared: dict[str, dict[str, int]]) -> dict[str, str]:
    """Declared dim -> the sizes the exported graph would hold for, from torch.export's suggested fixes."""
    text = strip_ansi(text)
    fixes = text.split("Suggested fixes:", 1)[1] if "Suggested fixes:" in text else ""
    ranges: dict[str, tuple[int | None, int | None]] = {}
    holds: dict[str, str] = {}
    for line in fixes.splitlines():
        m = _FIX_DIM.match(line)
        if m:
            ranges[m.group(1)] = (int(m.group(2)) if m.group(2) else None, int(m.group(3)) if m.group(3) else None)
    for line in fixes.splitlines():
        if _FIX_DIM.match(line):
            continue
        m = _FIX_MULTIPLE.match(line)
        if m and m.group(1) in declared:
            k, offset = int(m.group(2)), int(m.group(4) or 0)
            lo, hi = ranges.get(m.group(3), (None, None))
            span = f" from {k * lo + offset} to {k * hi + offset}" if lo is not None and hi is not None else ""
            holds[m.group(1)] = f"only sizes {k}·n{f' + {offset}' if offset else ''}{span}"
            continue
        m = _FIX_CONST.match(line)
        if m and m.group(1) in declared:
            holds[m.group(1)] = f"only the size {m.group(2)}"
    for name, (lo, hi) in ranges.items():
        if name in declared and name not in holds:
            d = declared[name]
            holds[name] = f"{lo if lo is not None else d['min']}..{hi if hi is not None else d['max']}"
    return holds


@dataclass(frozen=True)
class Narrowing:
    """What a capture claims about one dim: the sizes of its declared range that hold, and the model's line."""

    dim: str
    holds: tuple[int, ...]  # the sizes checked that hold (all of them, or an even sample of a long range)
    checked: int  # how many sizes of the range were checked
    site: str | None  # `file:line in function` of the first claim in the model's own code

    def failing(self, lo: int, hi: int, step: int = 1) -> list[int]:
        held = set(self.holds)
        return [n for n in _sample(lo, hi, step) if n not in held]


# The sizes of a range a claim is checked at: all of them up to this many, else an even sample.
CLAIM_SIZES = 256


def _sample(lo: int, hi: int, step: int = 1, limit: int = CLAIM_SIZES) -> list[int]:
    """The sizes of lo..hi that are multiples of `step` (a dim's multiple_of): all, or an even sample of `limit`."""
    sizes = taken_sizes(lo, hi, step)
    if len(sizes) <= limit:
        return list(sizes)
    return sorted({sizes[round(i * (len(sizes) - 1) / (limit - 1))] for i in range(limit)})


def taken_sizes(lo: int, hi: int, step: int = 1) -> range:
    """The sizes of lo..hi a dim with `multiple_of: step` takes."""
    return range(-(-lo // step) * step, hi + 1, step)


def sizes_in_words(holds: tuple[int, ...] | list[int], checked: int, lo: int, hi: int, step: int = 1) -> str:
    """Which sizes hold, as a user reads it: `9..16`, `only sizes 8·n from 32 to 96`, `only the size 40`.

    `step` is the dim's multiple_of: the range's sizes are its multiples, and a run of them is `16..64`."""
    sizes = sorted(holds)
    if not sizes:
        return "no size of the range"
    if len(sizes) == 1:
        return f"only the size {sizes[0]}"
    steps = {b - a for a, b in zip(sizes, sizes[1:])}
    every = checked == len(taken_sizes(lo, hi, step))
    if steps == {step} and every:
        return f"{sizes[0]}..{sizes[-1]}"
    if len(steps) == 1 and every:
        k = steps.pop()
        offset = sizes[0] % k
        return f"only sizes {k}·n{f' + {offset}' if offset else ''} from {sizes[0]} to {sizes[-1]}"
    shown = ", ".join(str(n) for n in sizes[:6])
    return f"only the sizes {shown}{', …' if len(sizes) > 6 else ''} ({len(sizes)} of the {checked} checked)"


def claimed_narrowings(shape_env, claims: list[tuple[Any, str | None]], symbols: dict[object, str],
                       declared: dict[str, dict[str, int]], factors: dict[object, int] | None = None
                       ) -> dict[str, Narrowing]:
    """Per dim, the sizes of its declared range for which every claim (a sympy condition on the
    dims' symbols) holds, the other dims at their traced sizes; only dims some size fails are listed.

    `symbols` maps each input dim's symbol to its recipe name; a claim over symbols outside
    it (sizes the graph computes, not an input's) says nothing about the declared ranges.
    A dim with `multiple_of: k` is checked at its multiples only; where it was captured as
    `k * symbol` (a derived dim), `factors` holds k for that symbol, which takes the size / k.
    """
    factors = factors or {}
    import sympy

    traced = {sym: sympy.Integer(shape_env.var_to_val[sym]) for sym in symbols if sym in shape_env.var_to_val}
    found: dict[str, Narrowing] = {}
    for sym, name in symbols.items():
        if name in found or name not in declared:
            continue
        # each claim once, the other dims put in first: what is left is a condition on this dim alone
        others = {k: v for k, v in traced.items() if k != sym}
        mine: dict[Any, str | None] = {}  # sympy expressions (untyped)
        for expr, site in claims:
            if sym in expr.free_symbols and expr.free_symbols <= set(traced):
                mine.setdefault(expr.xreplace(others), site)
        if not mine:
            continue
        d = declared[name]
        sizes = _sample(d["min"], d["max"], d.get("multiple_of", 1))
        factor = factors.get(sym, 1)
        holds, site = [], None
        for n in sizes:
            value = {sym: sympy.Integer(n // factor)}
            broken: str | None | Literal[False] = next(
                (s for expr, s in mine.items() if not _holds(expr, value)), False)
            if broken is False:
                holds.append(n)
            elif site is None:
                site = broken
        if len(holds) < len(sizes):
            found[name] = Narrowing(name, tuple(holds), len(sizes), site)
    return found


def _holds(expr, values: dict) -> bool:
    try:
        return bool(expr.xreplace(values))
    except TypeError:  # not decided by the sizes alone: count it as a claim to check
        return False


def guard_narrowings(exc: BaseException, declared: dict[str, dict[str, int]], workspace: Path) -> dict[str, Narrowing]:
    """From a capture that raised a constraint violation: what its guards claim about each dim it names.

    The guards and their source lines are read from the failed capture's own ShapeEnv
    (still held by the exception's frames): no second capture to find them.
    """
    shape_env = failed_shape_env(exc)
    if shape_env is None:
        return {}
    text = strip_ansi(str(exc))
    by_source = {}
    for sym, sources in shape_env.var_to_sources.items():
        for source in sources:
            by_source[source.name] = sym
    symbols = {}
    for m in _VIOLATION_SOURCE.finditer(text):
        if m.group(2) in by_source and m.group(1) in declared:
            symbols[by_source[m.group(2)]] = m.group(1)
    claims = [(g.expr, guard_site(g.sloc, workspace)) for g in shape_env.guards]
    claims += [_range_claim(shape_env, sym, workspace) for sym in symbols if sym in shape_env.var_to_range]
    return claimed_narrowings(shape_env, claims, symbols, declared)


def _range_claim(shape_env, sym, workspace: Path) -> tuple[object, str | None]:
    """A guard torch turned into a narrower range of the dim's symbol (`if x.shape[1] > 8`), as a claim."""
    import sympy

    bounds = shape_env.var_to_range[sym]
    claim = sympy.And(sympy.Ge(sym, bounds.lower), sympy.Le(sym, bounds.upper))
    slocs = getattr(shape_env, "var_to_range_sloc", {}).get(sym)
    sites = [guard_site(s, workspace) for s in ((slocs.lower, slocs.upper) if slocs else ())]
    return claim, next((s for s in sites if s), None)


_VIOLATION_SOURCE = re.compile(r"Not all values of (\w+) = (\S+) in the specified range")


def failed_shape_env(exc: BaseException):
    """The ShapeEnv of a capture that failed: the innermost one the exception's frames hold."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    found = None
    for e in chain(exc):
        tb = e.__traceback__
        while tb is not None:
            found = next((v for v in tb.tb_frame.f_locals.values() if isinstance(v, ShapeEnv)), found)
            tb = tb.tb_next
    return found


def guard_site(sloc, workspace: Path) -> str | None:
    """`file:line in function` of a guard added by the model's own code (outside torch), else None."""
    import torch

    frame = getattr(sloc, "framework_loc", None)
    if frame is None or isinstance(frame, str):
        return None
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    if os.path.abspath(frame.filename).startswith(torch_dir) or frame.filename.startswith("<"):
        return None
    return f"{shown_path(frame.filename, workspace)}:{frame.lineno} in {frame.name}"


def stack_site(stack_trace: str | None, workspace: Path) -> str | None:
    """`file:line (code)` of the model's line in a graph node's stack trace."""
    return _call_site(stack_trace, workspace) if stack_trace else None


def is_constraint_violation(exc: BaseException) -> bool:
    text = strip_ansi(str(exc))
    return "Constraints violated" in text or "Not all values of" in text


def print_report(exc: BaseException) -> None:
    """The exporter's whole report, as plain text, into the step's log."""
    print(full_report(exc), file=sys.stdout, flush=True)
