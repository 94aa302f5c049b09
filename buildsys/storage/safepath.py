"""Where buildsys may write and delete: below a folder it owns, never through a symlink out of it.

Also the one way buildsys creates a temporary file beside its target: an
unpredictable name, created exclusively and never through a symlink, so a
name planted in advance (a link to a file elsewhere) is never written through.
Standard library only: the store and the no-op path use it.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil

from buildsys.core.errors import BuildsysError

# O_EXCL fails on any existing name, a dangling symlink included; O_NOFOLLOW says so explicitly.
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(BuildsysError):
    """A folder buildsys would write or delete in resolves outside the folder it owns (exit 3, as any BuildsysError)."""


def temp_name(folder: str, name: str, suffix: str) -> str:
    """`folder/.name.<16 random hex>suffix`: a name nobody can plant in advance."""
    return os.path.join(folder, f".{name}.{secrets.token_hex(8)}{suffix}")


def create_temp(folder: str, name: str, suffix: str, mode: int = 0o600) -> tuple[int, str]:
    """Create a new temporary file beside `name` in `folder`; (open descriptor, path)."""
    for _ in range(8):
        path = temp_name(folder, name, suffix)
        try:
            return os.open(path, _EXCLUSIVE, mode), path
        except FileExistsError:  # 64 random bits: never in practice, unless someone guesses
            continue
    raise FileExistsError(errno.EEXIST, "could not create a fresh temporary file", folder)


def write_atomic(path: str, data: bytes) -> None:
    """Write `path` whole through an exclusive temporary and a rename."""
    folder, name = os.path.split(path)
    fd, tmp = create_temp(folder, name, ".tmp", 0o644)
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise with_filename(exc, path) from None


def with_filename(exc: OSError, path: str) -> OSError:
    """`exc` naming `path` (a write on a descriptor fails without naming its file)."""
    if exc.filename is not None:
        return exc
    return type(exc)(exc.errno, exc.strerror or str(exc), path)


def outside(root: str, path: str) -> str | None:
    """Where `path` really is when that is outside `root` (both resolved), else None."""
    root_real = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep):
        return None
    return real


def ensure_inside(root: str | os.PathLike, path: str | os.PathLike, owner: str = "") -> None:
    """Raise UnsafePath when `path` (at or below `root`) resolves outside `root`."""
    root, path = os.fspath(root), os.fspath(path)
    real = outside(root, path)
    if real is None:
        return
    link = _first_link(root, path) or path
    raise UnsafePath(f"{path} resolves to {real}, outside {root}; buildsys writes and deletes "
                     f"only under {owner or root}, never through a symbolic link out of it",
                     hint=f"remove the link ({link}) and run the command again; buildsys recreates the folder")


def _first_link(root: str, path: str) -> str | None:
    rel = os.path.relpath(path, root)
    at = root
    for part in rel.split(os.sep):
        at = os.path.join(at, part)
        if os.path.islink(at):
            return at
    return None


def remove(path: str | os.PathLike) -> None:
    """Delete `path`: a link or file by itself (never what a link points to), a folder with its content.

    Whatever vanishes meanwhile (another command removed it, SQLite dropped its
    -wal file on close) is not an error: it is gone, as asked.
    """
    path = os.fspath(path)
    if os.path.islink(path) or not os.path.isdir(path):
        _unlink_quietly(path, missing_only=True)
        return

    def gone_meanwhile(func, at, exc_info):
        if not issubclass(exc_info[0], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=gone_meanwhile)  # rmtree itself never follows links inside the tree


def _unlink_quietly(path: str, missing_only: bool = False) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if missing_only:
            raise
