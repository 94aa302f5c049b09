"""A judgement: whether something passed, and what was judged or why it failed.

One type for every "passed" buildsys writes or reads: a step's verdict (parity,
an engine's check, export's tracer warnings), a parity result document, one
output's figures against its reference, a row of the reports. `from_json`/`read`
and `to_json` are the only code that reads or writes the "passed", "summary" and
"failures" keys of those JSON documents; the documents keep their shape (a
document that holds more than a verdict takes `to_json()`'s keys where they
were), and a step's verdict read and written again is the same text.

`Verdict` is an immutable value class written out rather than a dataclass: the
no-op answer maps its remembered steps through `engine.status` with it, and
`dataclasses` (or `typing`) alone would add tens of milliseconds to that path.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing itself is an import the no-op answer does without
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_KEYS = ("passed", "summary", "failures")


class Verdict:
    """`passed`, and what the places that show it need: a one-line summary, the reasons it failed.

    Truthy exactly when it passed. Frozen: its fields are set once.
    """

    __slots__ = ("details", "failures", "passed", "summary")
    passed: bool
    summary: str | None  # what was judged, in one line (a step's verdict)
    failures: tuple[str, ...] | None  # why it failed, one reason each (one output's figures)
    details: Mapping[str, Any]  # the document's other keys, as they were (export's tracer_warnings)

    def __init__(self, passed: bool, summary: str | None = None, failures: tuple[str, ...] | None = None,
                 details: Mapping[str, Any] | None = None):
        object.__setattr__(self, "passed", bool(passed))
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "failures", failures)
        object.__setattr__(self, "details", dict(details or {}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Verdict is immutable: cannot set {name}")

    def __bool__(self) -> bool:
        return self.passed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return (self.passed, self.summary, self.failures, self.details) == (
            other.passed, other.summary, other.failures, other.details)

    __hash__ = None  # type: ignore[assignment]  # its details are a dict

    def __repr__(self) -> str:
        return (f"Verdict(passed={self.passed!r}, summary={self.summary!r}, failures={self.failures!r}, "
                f"details={self.details!r})")

    @property
    def said(self) -> str:
        """The summary, or "" where there is none."""
        return self.summary or ""

    def brief(self) -> Verdict:
        """What a build's step row shows of it (`build --json`, the no-op answer): passed and the summary."""
        return Verdict(self.passed, self.said)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Verdict | None:
        """The verdict `doc` carries, or None where it carries none (no document, or no "passed" in it)."""
        return None if doc is None or "passed" not in doc else cls.read(doc)

    @classmethod
    def read(cls, doc: Mapping[str, Any]) -> Verdict:
        """The verdict of a document that is judged (a result, one output's figures): failed where it says nothing."""
        failures = doc.get("failures")
        return cls(bool(doc.get("passed")), doc.get("summary"), None if failures is None else tuple(failures),
                   {k: v for k, v in doc.items() if k not in _KEYS})

    def to_json(self) -> dict[str, Any]:
        """The document's keys: passed, then the summary and the failures where set, then the details."""
        d: dict[str, Any] = {"passed": self.passed}
        if self.summary is not None:
            d["summary"] = self.summary
        if self.failures is not None:
            d["failures"] = list(self.failures)
        d.update(self.details)
        return d


def to_json(verdict: Verdict | None) -> dict[str, Any] | None:
    """`verdict`'s document, or None."""
    return None if verdict is None else verdict.to_json()
