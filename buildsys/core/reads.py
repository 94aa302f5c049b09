"""What a build read: the paths its decisions depended on, for the no-op answer.

`State` notes every file it digests, recipe loading the recipe sources and the
schema, the resolver every folder a data glob can reach; `engine.noop` stamps
them all, so the no-op answer is derived from the build's one dependency model.
Standard library only: the collector sits below everything that fills it.
"""
from __future__ import annotations

import os

from buildsys.core.datafiles import PRUNED


class Reads:
    """The paths a build's decisions read: files digested, folders listed, every folder a glob can reach."""

    __slots__ = ("paths",)

    def __init__(self, paths: set[str] | None = None):
        self.paths: set[str] = set(paths or ())

    def file(self, path: str | os.PathLike) -> None:
        """A file (or folder) whose content or listing was read; one that does not exist counts too."""
        self.paths.add(os.path.abspath(path))

    def glob(self, root: str | os.PathLike, pattern: str) -> None:
        """A recursive glob relative to `root` was expanded: every folder a new match could appear in."""
        self.paths.update(glob_folders(os.path.abspath(root), pattern))


def glob_folders(root: str, pattern: str) -> list[str]:
    """Every folder in which a new file could match `pattern` (a recursive glob relative to `root`).

    That is the pattern's fixed prefix (its components before the first wildcard)
    and the folders below it, as deep as the pattern reaches: all of them under a
    `**`. Stamping them all catches a file added to a folder that holds no match
    yet (data/b/ beside data/a/ for data/**/*.npy), which changes that folder's
    stamp and no other. Hidden folders are left out, as glob leaves them out,
    unless the pattern names some, and so are out/, .venv/ and .git/ at the root, which
    the glob never enters (buildsys.core.datafiles). A pattern without wildcards is its own path.
    """
    parts = pattern.split("/")
    first = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if first is None:
        return [os.path.join(root, pattern)]
    prefix = "/".join(parts[:first])
    base = os.path.join(root, prefix) if prefix else root
    depth = None if "**" in parts[first:] else len(parts) - 1 - first
    hidden = any(part.startswith(".") for part in parts[first:])
    found: list[str] = []
    seen: set[tuple[int, int]] = set()  # folders by identity: a symlink loop is walked once
    level, reached = [base], 0
    while level:
        below: list[str] = []
        for folder in level:
            found.append(folder)
            if depth is not None and reached >= depth:
                continue
            st = _stat(folder)
            if st is None or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            try:
                with os.scandir(folder) as entries:
                    below.extend(e.path for e in entries
                                 if (hidden or not e.name.startswith(".")) and e.is_dir()
                                 and not (folder == root and e.name in PRUNED))
            except OSError:
                continue
        level, reached = below, reached + 1
    return found


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None
