"""Timing one command in a fresh process, and the median of a series of such runs."""
from __future__ import annotations

import resource
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class BenchError(Exception):
    """A command the benchmark relies on failed; the message holds its output."""


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


@dataclass(frozen=True)
class Proc:
    code: int
    stdout: str
    stderr: str


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[Sample, Proc]:
    """Run `argv` and return its wall time and the CPU time (user+sys) of the child processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu), Proc(p.returncode, p.stdout, p.stderr)


def must(argv: list[str], env: dict[str, str], cwd: Path | None = None, what: str = "") -> tuple[Sample, Proc]:
    """`timed`, raising BenchError when the command fails."""
    s, p = timed(argv, env, cwd)
    if p.code != 0:
        raise BenchError(f"{what or ' '.join(argv)} failed (exit {p.code}):\n{(p.stderr or p.stdout)[-3000:]}")
    return s, p


@dataclass
class Cell:
    """The samples of one tool and one operation: a cell of the table."""

    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def spread(self) -> float:
        """Half the interquartile range of the wall times, relative to the median."""
        walls = [s.wall for s in self.samples]
        if len(walls) < 4:
            return (max(walls) - min(walls)) / 2 / self.wall if walls else 0.0
        q = statistics.quantiles(walls, n=4)
        return (q[2] - q[0]) / 2 / self.wall


def fmt(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"
