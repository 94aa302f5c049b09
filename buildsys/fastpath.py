"""The no-op fast path: answer "nothing to do" from stats alone.

After a build that left everything up to date, buildsys writes a manifest of
every file whose change could alter any step's decision — recipe sources, the
recipes folder itself, the schema, buildsys's own code, checkpoints, the
project sources each model loaded, every artifact under out/ and its store
blob — with its (size, mtime, inode, link count), plus the interpreter, the
installed distributions and the device. The next identical command stats
those files; if nothing moved, it prints what the full no-op would print,
without resolving a single recipe (ninja's manifest check works the same way).
Anything that differs falls back to the full path, which rewrites the manifest.
Standard library only.

A store blob that an artifact under out/ is a hard link of is not stamped on
its own: the two names share one inode, so the artifact's stamp already moves
when the blob's bytes do, and its link count drops when the blob is deleted or
replaced. Stamps are grouped by folder, and each signature's answer is a file
of its own (`noop.json` for a plain command), so recording one rewrites only it.
"""
from __future__ import annotations

import json
import os
import sys
import time

MANIFEST = "noop.json"
VERSION = 2
_NVIDIACTL = "/dev/nvidiactl"
_NVIDIA = "/proc/driver/nvidia"  # version: the driver; gpus/*/information: each GPU's model


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def _stamp(st) -> list[int] | None:
    return None if st is None else [st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink]


def _read(path: str, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return None


def _cpu() -> list[str]:
    """The first processor's model and flags: an artifact tuned for one CPU is keyed on it."""
    found = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.partition(":")[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    found.append(line.strip())
                if key in ("flags", "Features") or not line.strip():
                    break
    except OSError:
        pass
    return found


def _gpu() -> list:
    """What identifies the NVIDIA driver and GPUs here, from files; nothing is run."""
    if not os.path.exists(_NVIDIACTL):
        return [False, os.environ.get("CUDA_VISIBLE_DEVICES")]
    gpus = []
    try:
        for bus in sorted(os.listdir(os.path.join(_NVIDIA, "gpus"))):
            gpus.append(_read(os.path.join(_NVIDIA, "gpus", bus, "information")))
    except OSError:
        pass
    smi = [os.path.join(d, "nvidia-smi") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    return [True, os.environ.get("CUDA_VISIBLE_DEVICES"), _read(os.path.join(_NVIDIA, "version")), gpus,
            next((p for p in smi if os.access(p, os.X_OK)), None)]


def _environment() -> list:
    """What no file stamp covers: the interpreter, installed packages, the processor and GPU."""
    names = []
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            try:
                names.extend(n for n in os.listdir(entry) if n.endswith(".dist-info"))
            except OSError:
                pass
    names.sort()
    return [os.path.realpath(sys.executable), sys.prefix, sys.version, names, _cpu(), _gpu()]


def _package_files() -> list[str]:
    root = os.path.dirname(os.path.abspath(__file__))
    out = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out.extend(os.path.join(dirpath, f) for f in files if f.endswith(".py"))
    return sorted(out)


def _folders_above(meta: str, files: set[str]) -> set[str]:
    """Every folder from the workspace root down to each workspace file outside out/.

    A file added anywhere on the way (a new sub-folder of calibration images that
    a recursive glob would find) changes one of these folders' stamps.
    """
    out = os.path.dirname(os.path.abspath(meta))
    root = os.path.dirname(out)
    found: set[str] = set()
    for path in files:
        if not path.startswith(root + os.sep) or path == out or path.startswith(out + os.sep):
            continue
        folder = os.path.dirname(path)
        while folder not in found and (folder == root or folder.startswith(root + os.sep)):
            found.add(folder)
            folder = os.path.dirname(folder)
    return found


def glob_folders(root: str, pattern: str) -> list[str]:
    """Every folder in which a new file could match `pattern` (a recursive glob relative to `root`).

    That is the pattern's fixed prefix (its components before the first wildcard)
    and the folders below it, as deep as the pattern reaches: all of them under a
    `**`. Stamping them all catches a file added to a folder that holds no match
    yet (data/b/ beside data/a/ for data/**/*.npy), which changes that folder's
    stamp and no other. Hidden folders are left out, as glob leaves them out,
    unless the pattern names some. A pattern without wildcards is its own path.
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
        below = []
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
                                 if (hidden or not e.name.startswith(".")) and e.is_dir())
            except OSError:
                continue
        level, reached = below, reached + 1
    return found


def _path(meta: str, signature: str) -> str:
    """One manifest file per command signature; the plain command's is noop.json."""
    if signature == _PLAIN:
        return os.path.join(meta, MANIFEST)
    # A file name, not a key: the entry inside names its signature and is checked against
    # it. FNV-1a, so that no hashing module is imported on the fast path.
    h = 0xCBF29CE484222325
    for byte in signature.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(meta, f"noop-{h:016x}.json")


_PLAIN = json.dumps([[], [], False])  # `buildsys build` / `status` with no arguments


def check(meta: str, signature: str) -> dict | None:
    """The stored no-op answer for `signature`, when every stamp still matches."""
    try:
        with open(_path(meta, signature), "rb") as f:
            entry = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != VERSION or entry.get("signature") != signature:
        return None
    # Stamps are absolute paths: a copied workspace must not be answered from the original's files.
    if entry.get("meta") != os.path.abspath(meta):
        return None
    stat = os.stat
    try:
        for folder, rows in entry["stamps"].items():
            prefix = folder + os.sep if folder else ""
            for name, *stamp in rows:
                try:
                    st = stat(prefix + name)
                except OSError:
                    if stamp != [None]:
                        return None
                    continue
                if stamp != [st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink]:
                    return None
    except (KeyError, TypeError, ValueError):
        return None
    if entry.get("environment") != json.loads(json.dumps(_environment())):
        return None
    return entry


def record(meta: str, signature: str, files: set[str], answer: dict) -> bool:
    """Store the no-op answer for `signature`; False when a file is too fresh to trust."""
    now = time.time_ns()
    store = os.path.join(meta, "store") + os.sep
    stats = {}
    for path in files | _folders_above(meta, files) | set(_package_files()):
        st = _stat(path)
        # A file changed within the last two seconds could change again within the
        # same mtime tick on a coarse filesystem; the next full no-op records it.
        if st is not None and now - st.st_mtime_ns < 2_000_000_000:
            return False
        stats[path] = st
    linked = {(st.st_dev, st.st_ino) for path, st in stats.items()
              if st is not None and not path.startswith(store)}
    grouped: dict[str, list] = {}
    for path in sorted(stats):
        st = stats[path]
        if st is not None and path.startswith(store) and (st.st_dev, st.st_ino) in linked:
            continue  # covered by the artifact that is a hard link of it (see above)
        folder, name = os.path.split(path)
        stamp = _stamp(st)
        grouped.setdefault(folder, []).append([name, *(stamp if stamp is not None else [None])])
    entry = {"version": VERSION, "signature": signature, "meta": os.path.abspath(meta), "stamps": grouped,
             "environment": _environment(), **answer}
    from buildsys.safepath import write_atomic

    write_atomic(_path(meta, signature), json.dumps(entry, separators=(",", ":")).encode("utf-8"))
    return True


def forget(meta: str) -> None:
    """Invalidate every stored answer (a build is about to change things)."""
    try:
        names = os.listdir(meta)
    except OSError:
        return
    for name in names:
        if name == MANIFEST or (name.startswith("noop-") and name.endswith(".json")):
            try:
                os.unlink(os.path.join(meta, name))
            except FileNotFoundError:
                pass
