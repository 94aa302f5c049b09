"""What a build shows while it runs: live lines on a terminal, plain log lines elsewhere."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from buildsys.engine.answer import Outcome
from buildsys.recipe.resolve import StepSpec

if TYPE_CHECKING:
    from rich.live import Live

_MARK = {"ran": "ran", "cached": "cached", "cutoff": "cutoff", "failed": "FAILED", "skipped": "skipped",
         "unavailable": "unavailable", "would-run": "would run"}


def describe(o: Outcome) -> str:
    head = f"{_MARK[o.state]:<11} {o.step}"
    if o.state == "ran":
        head += f"  {o.seconds:.1f}s"
    text = f"{head}  ({o.reason})" if o.reason else head
    if o.verdict is not None:
        text += f"\n            {o.verdict.said}"
    if o.note:
        text += f"\n            note: {o.note}"
    if o.message:
        text += "\n            " + o.message.replace("\n", "\n            ")
    return text


class PlainReporter:
    """One line per step that did something; cached steps only with `verbose`."""

    def __init__(self, stream: TextIO = sys.stderr, verbose: bool = False):
        self.stream = stream
        self.verbose = verbose

    def problems(self, found) -> None:
        for pr in found:
            print(f"error: {pr.render()}", file=self.stream, flush=True)

    def started(self, step: StepSpec) -> None:
        print(f"{'start':<11} {step.id}", file=self.stream, flush=True)

    def finished(self, o: Outcome) -> None:
        if self.verbose or o.state not in ("cached", "cutoff") or (o.verdict is not None and not o.verdict):
            print(describe(o), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveReporter(PlainReporter):
    """On a terminal: finished steps scroll, running steps stay at the bottom with their elapsed time."""

    def __init__(self, stream: TextIO = sys.stderr, verbose: bool = False):
        super().__init__(stream, verbose)
        self.running: dict[str, float] = {}
        self.live: Live | None = None

    def _render(self):
        from rich.text import Text

        now = time.monotonic()
        lines = [f"  running  {sid}  {now - t0:5.1f}s" for sid, t0 in self.running.items()]
        return Text("\n".join(lines), style="cyan")

    def started(self, step: StepSpec) -> None:
        if self.live is None:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4,
                             get_renderable=self._render, transient=True)
            self.live.start()
        self.running[step.id] = time.monotonic()

    def finished(self, o: Outcome) -> None:
        self.running.pop(o.step, None)
        if self.live is not None:
            if self.verbose or o.state not in ("cached", "cutoff") or (o.verdict is not None and not o.verdict):
                self.live.console.print(describe(o), highlight=False, markup=False)
        else:
            super().finished(o)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def reporter(stream: TextIO, verbose: bool, live: bool = True) -> PlainReporter:
    """One line per running step, redrawn, on a terminal (unless `live` is off); plain log lines otherwise."""
    return (LiveReporter if live and stream.isatty() else PlainReporter)(stream, verbose)
