"""Canonical JSON and digests: the one way buildsys turns data and bytes into keys."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

CHUNK = 1 << 20


def canonical(data: Any) -> str:
    """Deterministic JSON text: sorted keys, no whitespace, tuples as lists."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_data(data: Any) -> str:
    return digest_text(canonical(data))


def digest_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed so large weights need little memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
