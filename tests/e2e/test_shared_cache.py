"""Two workspaces, one shared cache: the second builds nothing and gets the same bytes."""
from __future__ import annotations

import os
import shutil

from tests.e2e.conftest import Workspace, tiny_recipe


def _artifacts(root):
    out = root / "out"
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and ".buildsys" not in p.parts and "logs" not in p.parts}


def test_second_workspace_is_served_from_the_shared_cache(workspace, tmp_path_factory):
    cache = tmp_path_factory.mktemp("shared-cache")
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    first = workspace.build("--cache", str(cache))
    assert first.code == 0 and len(first.ran()) == 5

    other = Workspace(tmp_path_factory.mktemp("colleague"))
    for d in ("recipes", "tm"):
        shutil.copytree(workspace.root / d, other.root / d)
    r = other.build("--cache", str(cache), "--cache-read-only")
    assert r.code == 0, r.stderr
    assert r.ran() == []  # hit rate 100%
    assert {s["reason"] for s in r.json["steps"]} == {"fetched from the shared cache"}
    assert _artifacts(other.root) == _artifacts(workspace.root)


def test_a_damaged_shared_blob_is_a_miss_and_read_only_writes_nothing(workspace, tmp_path_factory):
    cache = tmp_path_factory.mktemp("shared-cache")
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build("--cache", str(cache)).code == 0
    for blob in (cache / "blobs").rglob("*"):
        if blob.is_file():
            os.chmod(blob, 0o644)
            blob.write_bytes(b"tampered")
    before = sorted(p.name for p in cache.rglob("*"))

    other = Workspace(tmp_path_factory.mktemp("colleague"))
    for d in ("recipes", "tm"):
        shutil.copytree(workspace.root / d, other.root / d)
    r = other.build("--cache", str(cache), "--cache-read-only")
    assert r.code == 0
    assert len(r.ran()) == 5  # nothing tampered was served
    assert sorted(p.name for p in cache.rglob("*")) == before
    assert b"tampered" not in (other.root / "out/tiny/model.onnx").read_bytes()
