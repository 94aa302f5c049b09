"""A shared second-level cache behind the local store: a folder or any fsspec URL.

Layout under the cache root:
    blobs/<2 hex>/<sha256>      artifact bytes, named by their digest
    actions/<key>.json          [{"deps", "outputs", "verdict"}, ...] for one step key
    uses/<key>                  empty; its modification time is the key's last hit

Reads are verified against the digest before a blob enters the local store, so
a damaged or tampered entry is a miss. Writes go blobs first, action last, so a
reader never finds an action whose blobs are missing. Device-bound steps carry
the device in their key: an engine is only ever served to a matching machine.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from buildsys.store import Store


class SharedCache:
    def __init__(self, url: str, read_only: bool = False):
        import fsspec

        self.url = url
        self.read_only = read_only
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.hits = 0
        self.misses = 0
        self.uploads = 0

    def _blob(self, digest: str) -> str:
        return f"{self.root}/blobs/{digest[:2]}/{digest}"

    def _action(self, key: str) -> str:
        return f"{self.root}/actions/{key}.json"

    def actions(self, key: str) -> list[dict[str, Any]]:
        try:
            with self.fs.open(self._action(key), "rb") as f:
                entries = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # unreadable entry: treated as a miss, rebuilt and overwritten
        return entries if isinstance(entries, list) else []

    def has_blobs(self, outputs: dict[str, list[list]]) -> bool:
        return all(self.fs.exists(self._blob(d)) for files in outputs.values() for _, d, _ in files)

    def fetch(self, outputs: dict[str, list[list]], store: Store) -> bool:
        """Copy an entry's blobs into the local store, verifying each; False on any bad blob."""
        for files in outputs.values():
            for _, digest, _ in files:
                if store.has(digest):
                    continue
                dst = store.path(digest)
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{digest}.{os.getpid()}.part")
                h = hashlib.sha256()
                try:
                    with self.fs.open(self._blob(digest), "rb") as src, open(tmp, "wb") as out:
                        while chunk := src.read(1 << 20):
                            h.update(chunk)
                            out.write(chunk)
                except (OSError, FileNotFoundError):
                    tmp.unlink(missing_ok=True)
                    return False
                if h.hexdigest() != digest:
                    tmp.unlink(missing_ok=True)
                    return False
                store.put(tmp, digest)
        return True

    def publish(self, key: str, deps: dict, outputs: dict[str, list[list]], verdict: dict | None,
                store: Store) -> None:
        """Upload a successful step's blobs, then its action entry (write-back)."""
        if self.read_only:
            return
        self.publish_blobs(outputs, store)
        entries = [e for e in self.actions(key) if e.get("deps") != deps]
        entries.insert(0, {"deps": deps, "outputs": outputs, "verdict": verdict})
        path = self._action(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        part = f"{path}.{os.getpid()}.part"
        with self.fs.open(part, "wb") as f:
            f.write(json.dumps(entries[:16]).encode("utf-8"))
        self.fs.mv(part, path)

    def publish_blobs(self, outputs: dict[str, list[list]], store: Store) -> None:
        """Upload the blobs of `outputs` that the cache lacks."""
        for files in outputs.values():
            for _, digest, _ in files:
                target = self._blob(digest)
                if not self.fs.exists(target):
                    self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                    part = f"{target}.{os.getpid()}.part"
                    self.fs.put_file(str(store.path(digest)), part)
                    self.fs.mv(part, target)
                    self.uploads += 1

    # -- last use and collection (buildsys.cachegc) -------------------------------

    def record_use(self, key: str) -> None:
        """Stamp a hit on `key`: one empty write, whose time `cache gc` reads back from a listing."""
        if self.read_only:
            return
        path = f"{self.root}/uses/{key}"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, b"")
        except OSError:
            pass  # the hit was served; without the stamp the entry only looks older to `cache gc`

    def listing(self, folder: str) -> dict[str, dict[str, Any]]:
        """Every file under `folder` (blobs, actions, uses), by path relative to the cache root, with its info."""
        base = f"{self.root}/{folder}"
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        root = self.root.rstrip("/") + "/"
        return {name[len(root):] if name.startswith(root) else name: info for name, info in found.items()
                if info.get("type", "file") == "file"}

    def read_files(self, names: list[str]) -> dict[str, bytes]:
        """The bytes of files named relative to the cache root; those that vanished meanwhile are left out."""
        if not names:
            return {}
        paths = [f"{self.root}/{n}" for n in names]
        got = self.fs.cat(paths, on_error="omit")
        if not isinstance(got, dict):  # some filesystems answer one path with its bytes alone
            got = {paths[0]: got}
        back = {p: n for p, n in zip(paths, names)}
        return {back.get(p, back.get("/" + p.lstrip("/"), p)): data for p, data in got.items()
                if isinstance(data, bytes)}

    def remove_files(self, names: list[str]) -> None:
        """Delete files named relative to the cache root; one already gone is not an error."""
        paths = [f"{self.root}/{n}" for n in names]
        if not getattr(self.fs, "async_impl", False):
            # A filesystem of local calls deletes file by file anyway (and memory://'s rm of a
            # list checks each path by scanning every file); object stores delete a list in bulk.
            paths, singles = [], paths
            for path in singles:
                try:
                    self.fs.rm_file(path)
                except FileNotFoundError:
                    continue
        for i in range(0, len(paths), 1000):
            chunk = paths[i:i + 1000]
            try:
                self.fs.rm(chunk)
            except FileNotFoundError:  # one of them went meanwhile: the rest one by one
                for path in chunk:
                    try:
                        self.fs.rm_file(path)
                    except FileNotFoundError:
                        continue


def open_cache(url: str | None, read_only: bool) -> SharedCache | None:
    if not url:
        return None
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
        url = str(Path(url).resolve())
    return SharedCache(url, read_only)
