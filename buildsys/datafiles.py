"""The data files a recipe names: globs and folders expanded inside the workspace.

The resolver puts the files it finds in the steps' keys; the steps that read
them expand the same glob the same way.
"""
from __future__ import annotations

from pathlib import Path


class OutsideWorkspace(ValueError):
    """A data file that resolves outside the workspace (through `..` or a symbolic link)."""


def npy_files(root: Path, pattern: str) -> list[str]:
    """The files an `npy` glob (relative to the workspace) matches, sorted: as the keys and the steps see them.

    Raises OutsideWorkspace when a match resolves outside the workspace.
    """
    import glob
    import os

    return inside_workspace(root, sorted(p for p in glob.glob(str(root / pattern), recursive=True)
                                         if os.path.isfile(p)))


def inside_workspace(root: Path, files: list[str]) -> list[str]:
    """`files`, once each is known to resolve inside the workspace `root`; else OutsideWorkspace."""
    import os

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
