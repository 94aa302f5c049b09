"""A shared second-level cache behind the local store: a folder or any fsspec URL.

Layout under the cache root:
    blobs/<2 hex>/<sha256>      artifact bytes, named by their digest
    actions/<key>.json          [{"deps", "outputs", "verdict"}, ...] for one step key
    uses/<key>                  empty; its modification time is the key's last hit

Everything read here is untrusted: whoever can write to the cache can write
any entry. Entries are checked by buildsys.storage.untrusted before their names and
digests are used; blobs are read no further than their recorded size and
verified against their digest before they enter the local store, so a damaged
or tampered entry is a rejected miss. A blob found damaged is replaced by the
good one when the step's own result is published. Writes go blobs first,
action last, so a reader never finds an action whose blobs are missing; each
goes to an unpredictable temporary name first. Device-bound steps carry the
device in their key: an engine is only ever served to a matching machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from buildsys.storage import safepath
from buildsys.storage.store import Store, is_digest
from buildsys.storage.untrusted import Rejected, check_outputs

MAX_ACTION_BYTES = 4 << 20  # one key's entries (at most 16) are a few KiB


class SharedCache:
    def __init__(self, url: str, read_only: bool = False):
        import fsspec

        self.url = url
        self.read_only = read_only
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = bool(getattr(self.fs, "local_file", False))  # a folder: plain os calls, no links followed
        self.uploads = 0  # blobs this object wrote to the cache
        self._verified: set[str] = set()  # blobs this process read or wrote whole and found matching

    def _blob(self, digest: str) -> str:
        if not is_digest(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return f"{self.root}/blobs/{digest[:2]}/{digest}"

    def _action(self, key: str) -> str:
        if not is_digest(key):
            raise ValueError(f"not a step key: {key!r}")
        return f"{self.root}/actions/{key}.json"

    def actions(self, key: str) -> list[Any]:
        """The entries stored for `key`, unchecked (see buildsys.storage.untrusted); [] when none can be read."""
        try:
            with self.fs.open(self._action(key), "rb") as f:
                raw = f.read(MAX_ACTION_BYTES + 1)
            if len(raw) > MAX_ACTION_BYTES:
                return []  # not something buildsys wrote: a miss, overwritten by the next publish
            entries = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # unreadable entry: treated as a miss, rebuilt and overwritten
        return entries if isinstance(entries, list) else []

    def has_blobs(self, outputs: dict[str, list[list]]) -> bool:
        """Whether every blob of a checked entry is there with its recorded size (no bytes read)."""
        for files in outputs.values():
            for _, digest, size in files:
                try:
                    if self.fs.info(self._blob(digest)).get("size") != size:
                        raise Rejected(f"blob {digest} does not have its recorded size ({size} bytes)")
                except FileNotFoundError:
                    return False
        return True

    def fetch(self, outputs: dict[str, list[list]], store: Store) -> bool:
        """Copy a checked entry's blobs into the local store, verifying each.

        False when a blob is missing (a plain miss); Rejected when one is there but
        its bytes do not match its recorded size and digest.
        """
        for files in outputs.values():
            for _, digest, size in files:
                if store.has(digest):
                    if os.path.getsize(store.path(digest)) != size:
                        raise Rejected(f"blob {digest} does not have its recorded size ({size} bytes)")
                    continue
                fd, tmp = store.temp(digest)
                try:
                    with open(fd, "wb") as out:
                        got, actual = self._download(digest, size, out, str(store.path(digest)))
                except FileNotFoundError:
                    os.unlink(tmp)
                    return False
                except BaseException:
                    os.unlink(tmp)
                    raise
                if got != size or actual != digest:
                    os.unlink(tmp)
                    raise Rejected(f"blob {digest} does not match its digest" if got == size else
                                   f"blob {digest} does not have its recorded size ({size} bytes)")
                store.put(Path(tmp), digest)
                self._verified.add(digest)
        return True

    def _download(self, digest: str, size: int, out, where: str = "the store") -> tuple[int, str]:
        """Copy at most `size` + 1 bytes of a blob into `out` (writing `where`): (bytes read, their sha256)."""
        h = hashlib.sha256()
        got = 0
        with self.fs.open(self._blob(digest), "rb") as src:
            while got <= size:
                chunk = src.read(min(1 << 20, size + 1 - got))
                if not chunk:
                    break
                got += len(chunk)
                h.update(chunk)
                if out is not None:
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise safepath.with_filename(exc, where) from None
        return got, h.hexdigest()

    def publish(self, key: str, deps: dict, outputs: dict[str, list[list]], verdict: dict | None,
                store: Store) -> None:
        """Upload a successful step's blobs, then its action entry (write-back)."""
        if self.read_only:
            return
        self.publish_blobs(outputs, store)
        declared = {name: files[0][0] for name, files in outputs.items()}
        entries = [e for e in self.actions(key) if _usable(declared, e) and e.get("deps") != deps]
        entries.insert(0, {"deps": deps, "outputs": outputs, "verdict": verdict})
        self._write(self._action(key), json.dumps(entries[:16]).encode("utf-8"))

    def publish_blobs(self, outputs: dict[str, list[list]], store: Store) -> None:
        """Upload the blobs of `outputs` that the cache lacks or holds damaged."""
        for files in outputs.values():
            for _, digest, size in files:
                if digest in self._verified or self._intact(digest, size):
                    continue
                self._write(self._blob(digest), store.path(digest))
                self._verified.add(digest)
                self.uploads += 1

    def _intact(self, digest: str, size: int) -> bool:
        """Whether the cache holds `digest`'s blob with the right bytes (read only when the size fits)."""
        try:
            if self.fs.info(self._blob(digest)).get("size") != size:
                return False
            got, actual = self._download(digest, size, None)
        except FileNotFoundError:
            return False
        return got == size and actual == digest

    def _write(self, target: str, data: bytes | Path) -> None:
        """Put `data` (bytes, or a file's content) at `target` through a fresh temporary name."""
        folder = target.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        if not self.local:
            part = f"{target}.{secrets.token_hex(8)}.part"
            if isinstance(data, Path):
                self.fs.put_file(str(data), part)
            else:
                with self.fs.open(part, "wb") as f:
                    f.write(data)
            self.fs.mv(part, target)
            return
        safepath.ensure_inside(self.root, folder, f"the shared cache {self.root}")
        if isinstance(data, bytes):
            safepath.write_atomic(target, data)
            return
        fd, part = safepath.create_temp(folder, target.rsplit("/", 1)[1], ".part", 0o644)
        try:
            with open(fd, "wb") as out, open(data, "rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(part, target)
        except OSError as exc:
            Path(part).unlink(missing_ok=True)
            raise safepath.with_filename(exc, target) from None

    # -- last use and collection (buildsys.storage.cachegc) -------------------------------

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
        return {name[len(root):]: info for name, info in found.items()}  # find() lists files only, under base

    def read_files(self, names: list[str]) -> dict[str, bytes]:
        """The bytes of files named relative to the cache root; those that vanished meanwhile are left out."""
        if not names:
            return {}
        paths = {f"{self.root}/{n}": n for n in names}
        # A list in, {path: bytes} out, under the paths asked for (the root is in fsspec's form already)
        got = self.fs.cat(list(paths), on_error="omit")
        return {paths[p]: data for p, data in got.items()}

    def remove_files(self, names: list[str]) -> None:
        """Delete files named relative to the cache root; one already gone is not an error."""
        paths = [f"{self.root}/{n}" for n in names]
        if not self.fs.async_impl:
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


def _usable(declared: dict[str, str], entry: Any) -> bool:
    """Whether a stored entry is well formed for these outputs (damaged ones are dropped on publish)."""
    try:
        check_outputs(declared, entry.get("outputs") if isinstance(entry, dict) else None)
    except Rejected:
        return False
    return True


def open_cache(url: str | None, read_only: bool) -> SharedCache | None:
    if not url:
        return None
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
        url = str(Path(url).resolve())
    return SharedCache(url, read_only)
