"""The content-addressed store: every artifact's bytes, named by their sha256.

Blobs are committed by rename from the step's scratch directory, made read-only,
and verified against their name whenever they are read back; a blob that fails
verification is deleted and reported as missing, so the step is rebuilt.

A digest becomes a path here, so every method refuses anything but 64 lowercase
hex characters, and nothing is written or deleted through a shard folder that
resolves outside the store.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import stat
from pathlib import Path

from buildsys.core.canonical import digest_file
from buildsys.storage import safepath

_DIGEST = re.compile(r"[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    """Whether `value` is a sha256 digest as the store names blobs: 64 lowercase hex characters."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _checked(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


class Store:
    def __init__(self, root: Path):
        self.root = root
        self._root = os.fspath(root)  # plain strings: a no-op build asks `has` for thousands of blobs

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / _checked(digest)

    def has(self, digest: str) -> bool:
        return is_digest(digest) and os.path.exists(os.path.join(self._root, digest[:2], digest))

    def shard(self, digest: str) -> str:
        """The folder of `digest`'s blob, made if missing; refused when it resolves outside the store."""
        folder = os.path.join(self._root, _checked(digest)[:2])
        os.makedirs(folder, exist_ok=True)
        if os.path.islink(folder):
            safepath.ensure_inside(self._root, folder, "the artifact store")
        return folder

    def temp(self, digest: str) -> tuple[int, str]:
        """A new exclusive temporary file beside `digest`'s blob (a download in progress)."""
        return safepath.create_temp(self.shard(digest), digest, ".part")

    def put(self, src: Path, digest: str) -> Path:
        """Move `src` (whose content hashes to `digest`) into the store."""
        dst = Path(self.shard(digest)) / digest
        if dst.exists():
            src.unlink()
            return dst
        os.chmod(src, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(src, dst)
        return dst

    def remove(self, digest: str) -> None:
        """Delete a blob (`cache gc`, under the workspace lock); one that is gone already is no error."""
        self.path(digest).unlink(missing_ok=True)

    def verify(self, digest: str) -> bool:
        """Re-hash a blob; remove it when its bytes no longer match its name."""
        p = self.path(digest)
        try:
            ok = digest_file(p) == digest
        except FileNotFoundError:
            return False
        if not ok:
            self.shard(digest)  # never delete through a shard that leads elsewhere
            p.unlink(missing_ok=True)
        return ok

    def materialize(self, digest: str, dst: Path) -> None:
        """Place a blob at `dst` atomically (hard link where possible, else a copy)."""
        src = self.path(digest)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if _same_file(src, dst):
            return
        # Temporaries of a build killed mid-placement: the caller holds the workspace lock.
        for stale in dst.parent.glob(f".{glob.escape(dst.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
        tmp = safepath.temp_name(os.fspath(dst.parent), dst.name, ".tmp")
        try:
            os.link(src, tmp)  # link(2) never follows a symlink at its new name
        except OSError:
            tmp = self._copy(src, dst)
        try:
            os.replace(tmp, dst)
        finally:
            # rename(2) between two links of one inode succeeds and leaves both names
            # (a concurrent writer may have linked dst since the check above)
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _copy(src: Path, dst: Path) -> str:
        fd, tmp = safepath.create_temp(os.fspath(dst.parent), dst.name, ".tmp", 0o444)
        try:
            with open(fd, "wb") as out, open(src, "rb") as blob:
                shutil.copyfileobj(blob, out, 1 << 20)
        except OSError as exc:
            os.unlink(tmp)
            raise safepath.with_filename(exc, os.fspath(dst)) from None
        return tmp

    def size(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root):
            for f in files:
                total += os.stat(os.path.join(dirpath, f)).st_size
        return total


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
