"""What a build works on: the workspace's folders, and the steps a command selects.

The orchestration itself is buildsys.engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from buildsys.recipe.resolve import Graph
from buildsys.storage import safepath


@dataclass
class Workspace:
    root: Path
    out: Path = field(init=False)
    meta: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.out = self.root / "out"
        self.meta = self.out / ".buildsys"

    @property
    def tmp(self) -> Path:
        return self.meta / "tmp"

    def refuse_links(self) -> None:
        """Raise UnsafePath when a folder buildsys writes or empties resolves outside out/."""
        for folder in (self.meta, self.meta / "store", self.tmp, self.out / "reports"):
            safepath.ensure_inside(self.out, folder, "out/")


def select(graph: Graph, only: list[str] | None) -> set[str]:
    """The steps a build covers: all, or `--only` steps (by name or family) and what they need."""
    if not only:
        return set(graph.steps)
    wanted = {s.id for s in graph.steps.values() if s.name in only or s.family in only}
    return graph.closure(wanted)
