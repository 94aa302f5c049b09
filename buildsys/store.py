"""The content-addressed store: every artifact's bytes, named by their sha256.

Blobs are committed by rename from the step's scratch directory, made read-only,
and verified against their name whenever they are read back; a blob that fails
verification is deleted and reported as missing, so the step is rebuilt.
"""
from __future__ import annotations

import glob
import os
import shutil
import stat
from pathlib import Path

from buildsys.canonical import digest_file


class Store:
    def __init__(self, root: Path):
        self.root = root
        self._root = os.fspath(root)  # plain strings: a no-op build asks `has` for thousands of blobs

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return os.path.exists(os.path.join(self._root, digest[:2], digest))

    def put(self, src: Path, digest: str) -> Path:
        """Move `src` (whose content hashes to `digest`) into the store."""
        dst = self.path(digest)
        if dst.exists():
            src.unlink()
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(src, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(src, dst)
        return dst

    def verify(self, digest: str) -> bool:
        """Re-hash a blob; remove it when its bytes no longer match its name."""
        p = self.path(digest)
        try:
            ok = digest_file(p) == digest
        except FileNotFoundError:
            return False
        if not ok:
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
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        try:
            os.replace(tmp, dst)
        finally:
            # rename(2) between two links of one inode succeeds and leaves both names
            # (a concurrent writer may have linked dst since the check above)
            tmp.unlink(missing_ok=True)

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
