"""Why an export failed, in one or two lines a user can act on.

The exporters answer with pages: a banner with terminal colours, advice to file
an issue, the exception wrapped two or three times. The whole of it goes to the
step's log; the message keeps the root cause (the innermost exception of the
chain), the operator or the guard involved, and the line of the model's code
where it happened when the exception or the exported graph says so.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path

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
_VIOLATION = re.compile(r"Not all values of (\w+) = \S+ in the specified range (?:\d+ <= )?\1 <= \d+ "
                        r"satisfy the generated guard (.+?)\.?$", re.M)
_GUARD_AT = re.compile(r"\[guard added\] \(([^)]+?):(\d+) in (\w+)\)")


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
    for m in _VIOLATION.finditer(text):
        if m.group(1) in declared and m.group(1) not in holds:
            holds[m.group(1)] = f"only sizes satisfying {m.group(2)[:160]}"
    return holds


class GuardRecorder(logging.Handler):
    """Collects the source lines where torch.export added shape guards (its INFO log records)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.sites: list[tuple[str, str]] = []  # (file, where in it)

    def emit(self, record: logging.LogRecord) -> None:
        # Only the guard records, and only their location argument: formatting every record
        # (sympy expressions thousands of terms long) would cost more than the export.
        if "[guard added]" not in str(record.msg) or not isinstance(record.args, tuple) or len(record.args) < 3:
            return
        m = _GUARD_AT.search(f"[guard added] {record.args[2]}")
        if m:
            self.sites.append((m.group(1), f":{m.group(2)} in {m.group(3)}"))

    def first_model_site(self, workspace: Path) -> str | None:
        """The first guard added by code outside torch (the model's own shape logic)."""
        import torch

        torch_dir = Path(torch.__file__).parent
        for path, rest in self.sites:
            if not (torch_dir / path).exists():
                return _in_workspace(path, workspace) + rest
        return None

    def __enter__(self) -> GuardRecorder:
        self._logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
        self._level = self._logger.level
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def _in_workspace(path: str, workspace: Path) -> str:
    """torch's log shortens paths by a common prefix: the workspace file it names, when there is one."""
    parts = Path(path).parts
    for i in range(len(parts) - 1):
        candidate = Path(*parts[i:])
        if (workspace / candidate).is_file():
            return candidate.as_posix()
    return path


def is_constraint_violation(exc: BaseException) -> bool:
    text = strip_ansi(str(exc))
    return "Constraints violated" in text or "Not all values of" in text


def print_report(exc: BaseException) -> None:
    """The exporter's whole report, as plain text, into the step's log."""
    print(full_report(exc), file=sys.stdout, flush=True)
