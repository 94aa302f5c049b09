"""The no-op fast path: answer "nothing to do" from stats alone.

After a build that left everything up to date, buildsys writes a manifest of
every file whose change could alter any step's decision — recipe sources, the
recipes folder itself, the schema, buildsys's own code, checkpoints, the
project sources each model loaded, every artifact under out/ and its store
blob — with its (size, mtime, inode), plus the installed distributions and the
device. The next identical command stats those files; if nothing moved, it
prints what the full no-op would print, without resolving a single recipe
(ninja's manifest check works the same way). Anything that differs falls back
to the full path, which rewrites the manifest. Standard library only.
"""
from __future__ import annotations

import json
import os
import sys
import time

MANIFEST = "noop.json"
VERSION = 1


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _environment() -> list:
    """What no file stamp covers: the interpreter, installed packages, the device."""
    names = []
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            try:
                names.extend(n for n in os.listdir(entry) if n.endswith(".dist-info"))
            except OSError:
                pass
    names.sort()
    return [sys.executable, sys.version, names, os.path.exists("/dev/nvidiactl")]


def _package_files() -> list[str]:
    root = os.path.dirname(os.path.abspath(__file__))
    out = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out.extend(os.path.join(dirpath, f) for f in files if f.endswith(".py"))
    return sorted(out)


def _path(meta: str) -> str:
    return os.path.join(meta, MANIFEST)


def check(meta: str, signature: str) -> dict | None:
    """The stored no-op answer for `signature`, when every stamp still matches."""
    try:
        with open(_path(meta), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("version") != VERSION:
        return None
    entry = manifest.get("entries", {}).get(signature)
    if entry is None:
        return None
    for path, stamp in entry["stamps"]:
        if _stamp(path) != stamp:
            return None
    if entry["environment"] != json.loads(json.dumps(_environment())):
        return None
    return entry


def record(meta: str, signature: str, files: set[str], answer: dict) -> bool:
    """Store the no-op answer for `signature`; False when a file is too fresh to trust."""
    now = time.time_ns()
    stamps = []
    for path in sorted(files | set(_package_files())):
        s = _stamp(path)
        # A file changed within the last two seconds could change again within the
        # same mtime tick on a coarse filesystem; the next full no-op records it.
        if s is not None and now - s[1] < 2_000_000_000:
            return False
        stamps.append([path, s])
    try:
        with open(_path(meta), encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("version") != VERSION:
            raise ValueError
    except (OSError, ValueError):
        manifest = {"version": VERSION, "entries": {}}
    manifest["entries"][signature] = {"stamps": stamps, "environment": _environment(), **answer}
    tmp = _path(meta) + f".{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    os.replace(tmp, _path(meta))
    return True


def forget(meta: str) -> None:
    """Invalidate every stored answer (a build is about to change things)."""
    try:
        os.unlink(_path(meta))
    except FileNotFoundError:
        pass
