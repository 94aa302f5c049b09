"""What buildsys reads from others, checked before any of it is used.

A shared cache's action entries and a cluster worker's answer name the files a
step produced and their digests; both become paths under out/ and in the store.
Anyone who can write to the cache folder (or speak for a worker) controls those
values, so they are checked here, in one place, against what the step itself
declares: its output names, plain file names (the primary one the declared
name), sha256 digests, sane sizes, and discovered dependencies that stay inside
the workspace. A value that fails is a rejected entry, never a path.
"""
from __future__ import annotations

from typing import Any

from buildsys.storage.store import is_digest

MAX_FILE_BYTES = 1 << 40  # 1 TiB: larger than any model file, small enough to be a real size
MAX_NAME_CHARS = 255  # NAME_MAX of every common file system
# What may follow an artifact's first file: ONNX external data, named after the model file
COMPANIONS = (".data",)


class Rejected(Exception):
    """An entry that cannot be used; the message says which value and why."""


def declared_files(outputs: dict[str, str]) -> dict[str, str]:
    """A step's outputs (name -> path under out/) as the file names it writes (name -> file name)."""
    return {name: path.rsplit("/", 1)[-1] for name, path in outputs.items()}


def check_entry(declared: dict[str, str], entry: Any) -> None:
    """Raise Rejected unless `entry` ({"outputs", "deps", "verdict"}) fits a step declaring `declared`."""
    if not isinstance(entry, dict):
        raise Rejected(f"expected an object, found {_kind(entry)}")
    check_outputs(declared, entry.get("outputs"))
    check_deps(entry.get("deps", {}))
    verdict = entry.get("verdict")
    if verdict is not None and not isinstance(verdict, dict):
        raise Rejected(f"verdict: expected an object or null, found {_kind(verdict)}")


def check_outputs(declared: dict[str, str], outputs: Any) -> None:
    """Raise Rejected unless `outputs` ({name: [[file, digest, size], ...]}) fits `declared` (name -> file)."""
    if not isinstance(outputs, dict):
        raise Rejected(f"outputs: expected an object, found {_kind(outputs)}")
    if set(outputs) != set(declared):
        raise Rejected(f"outputs: the step declares {sorted(declared)}, the entry has {sorted(map(str, outputs))}")
    for name, primary in declared.items():
        files = outputs[name]
        if not isinstance(files, list) or not files:
            raise Rejected(f"outputs.{name}: expected a non-empty list of files, found {_kind(files)}")
        seen = set()
        for i, item in enumerate(files):
            where = f"outputs.{name}.{i}"
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise Rejected(f"{where}: expected [file name, digest, size], found {_short(item)}")
            file, digest, size = item
            if isinstance(file, str) and file in seen:
                raise Rejected(f"{where}: the file {_short(file)} is listed twice")
            _check_file_name(where, file, primary, None if i == 0 else files[0][0])
            seen.add(file)
            if not is_digest(digest):
                raise Rejected(f"{where}: digest {_short(digest)} is not 64 lowercase hex characters")
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
                raise Rejected(f"{where}: size {_short(size)} is not a whole number of bytes "
                               f"between 0 and {MAX_FILE_BYTES}")


def _check_file_name(where: str, file: Any, primary: str, first_file: str | None) -> None:
    """A plain name; the first file `primary` (or its stem with another extension), then its external data."""
    if not isinstance(file, str) or not file:
        raise Rejected(f"{where}: file name {_short(file)} is not a name")
    if ("/" in file or "\\" in file or "\0" in file or file in (".", "..") or file.startswith(".")
            or len(file) > MAX_NAME_CHARS or not file.isprintable()):
        raise Rejected(f"{where}: file name {_short(file)} is not a plain file name")
    if first_file is None:
        if file != primary and ("." not in file or _stem(file) != _stem(primary)):
            raise Rejected(f"{where}: the first file must be the declared {primary!r} (or its stem with another "
                           f"extension), found {_short(file)}")
    elif file not in {first_file + suffix for suffix in COMPANIONS}:
        raise Rejected(f"{where}: a companion file must be {first_file + COMPANIONS[0]!r}, found {_short(file)}")


def _stem(name: str) -> str:
    """`model.onnx` -> `model`: a step may write its declared output in another format (ORT over 2 GiB)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def check_deps(deps: Any) -> None:
    """Raise Rejected unless `deps` is {"files": {workspace path: digest}, "dists": {name: version}}."""
    if not isinstance(deps, dict):
        raise Rejected(f"deps: expected an object, found {_kind(deps)}")
    unknown = set(deps) - {"files", "dists"}
    if unknown:
        raise Rejected(f"deps: unknown field {sorted(map(str, unknown))[0]!r}")
    files = deps.get("files", {})
    if not isinstance(files, dict):
        raise Rejected(f"deps.files: expected an object, found {_kind(files)}")
    for rel, digest in files.items():
        parts = rel.split("/")
        if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
            raise Rejected(f"deps.files: {_short(rel)} is not a path inside the workspace")
        if not is_digest(digest):
            raise Rejected(f"deps.files.{rel}: digest {_short(digest)} is not 64 lowercase hex characters")
    dists = deps.get("dists", {})
    if not isinstance(dists, dict) or not all(isinstance(v, str) for v in dists.values()):
        raise Rejected("deps.dists: expected an object of package versions")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
