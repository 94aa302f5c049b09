"""The data files a recipe names: globs and folders expanded inside the workspace.

The resolver puts the files it finds in the steps' keys; the steps that read
them expand the same glob the same way.

A glob is refused from its text before any folder is read when it is absolute,
climbs out through `..`, or names out/, .venv/ or .git/. Its expansion follows
glob.glob's rules (`**` for any depth, hidden names matched only by a pattern that
starts with a dot) but never enters out/, .venv/ or .git/ at the workspace root,
never follows a symbolic link back into a folder it is inside, and stops
with an error after MAX_WALKED entries instead of reading a whole file system.
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

# Folders at the workspace root that no data glob reads: build outputs, the virtual environment, history.
PRUNED = frozenset({"out", ".venv", ".git"})
MAX_WALKED = 100_000  # folder entries one glob may look at
_MAGIC = re.compile(r"[*?[]")


class DataPathError(ValueError):
    """A data path or glob that cannot be expanded inside the workspace."""


class OutsideWorkspace(DataPathError):
    """A data file that resolves outside the workspace (through `..` or a symbolic link), or a glob that would."""


class GlobTooWide(DataPathError):
    """A glob that looks at more than MAX_WALKED folder entries."""


def pattern_problem(pattern: str) -> str | None:
    """Why a workspace-relative glob is refused from its text alone, or None."""
    if os.path.isabs(pattern):
        return "is an absolute path; data globs are relative to the workspace root"
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "climbs out of the workspace through '..'"
    if parts and parts[0] in PRUNED:
        return (f"reaches into {parts[0]}/, which holds no data (build outputs, the virtual environment "
                "or git's history)")
    return None


def npy_files(root: Path, pattern: str, limit: int | None = None) -> list[str]:
    """The files an `npy` glob (relative to the workspace) matches, sorted: as the keys and the steps see them.

    Raises OutsideWorkspace when the glob's text leaves the workspace or a match
    resolves outside it, GlobTooWide when it looks at more than `limit` entries (MAX_WALKED).
    """
    return inside_workspace(root, sorted(p for p in glob_paths(root, pattern, limit) if os.path.isfile(p)))


def glob_paths(root: Path, pattern: str, limit: int | None = None) -> set[str]:
    """What glob.glob(root/pattern, recursive=True) finds, walked within the bounds above."""
    problem = pattern_problem(pattern)
    if problem is not None:
        raise OutsideWorkspace(f"{pattern!r} {problem}")
    walk = _Walk(os.path.join(os.fspath(root), ""), pattern, MAX_WALKED if limit is None else limit)
    walk.expand(walk.root.rstrip(os.sep) or os.sep, [p for p in pattern.split("/") if p not in ("", ".")])
    return walk.found


class _Walk:
    def __init__(self, root: str, pattern: str, limit: int):
        self.root, self.pattern, self.limit = root, pattern, limit
        self.looked = 0
        self.found: set[str] = set()

    def expand(self, folder: str, parts: list[str]) -> None:
        if not parts:
            self.found.add(folder)
            return
        part, rest = parts[0], parts[1:]
        if part == "**":
            while rest and rest[0] == "**":
                rest = rest[1:]
            for below in self._folders(folder):
                if rest:
                    self.expand(below, rest)
                else:
                    self.found.add(below)
                    self.found.update(path for path, _ in self._entries(below, hidden=False))
        elif _MAGIC.search(part):
            for path, is_dir in self._entries(folder, hidden=part.startswith(".")):
                if fnmatch.fnmatchcase(os.path.basename(path), part) and (is_dir or not rest):
                    self.expand(path, rest)
        else:
            path = os.path.join(folder, part)
            if (os.path.isdir(path) if rest else os.path.lexists(path)):
                self.expand(path, rest)

    def _entries(self, folder: str, hidden: bool) -> list[tuple[str, bool]]:
        """(path, is a folder) of each entry, hidden ones only if asked, none of PRUNED at the root."""
        top = os.path.join(folder, "") == self.root
        found = []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    self.looked += 1
                    if self.looked > self.limit:
                        raise GlobTooWide(f"{self.pattern!r} looks at more than {self.limit} files and folders")
                    if (e.name.startswith(".") and not hidden) or (top and e.name in PRUNED):
                        continue
                    try:
                        is_dir = e.is_dir()
                    except OSError:
                        is_dir = False
                    found.append((e.path, is_dir))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []
        return found

    def _folders(self, folder: str) -> list[str]:
        """`folder` and every folder below it that is not hidden (a `**`); a link back to a folder above is not followed."""
        out: list[str] = []
        stack: list[tuple[str, frozenset]] = [(folder, frozenset())]
        while stack:
            f, above = stack.pop()
            try:
                st = os.stat(f)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in above:
                continue
            out.append(f)
            here = above | {(st.st_dev, st.st_ino)}
            stack.extend((path, here) for path, is_dir in reversed(self._entries(f, hidden=False)) if is_dir)
        return out


def inside_workspace(root: Path, files: list[str]) -> list[str]:
    """`files`, once each is known to resolve inside the workspace `root`; else OutsideWorkspace."""
    inside = os.path.realpath(root).rstrip(os.sep) + os.sep
    folders: dict[str, str] = {}  # folder -> its real path: thousands of images share a few folders
    for p in files:
        folder, name = os.path.split(p)
        real_folder = folders.get(folder)
        if real_folder is None:
            real_folder = folders[folder] = os.path.realpath(folder)
        real = os.path.realpath(p) if os.path.islink(p) else os.path.join(real_folder, name)
        if not real.startswith(inside):
            raise OutsideWorkspace(f"matches {os.path.relpath(p, root)}, which resolves to {real}, "
                                   f"outside the workspace {root}")
    return files
