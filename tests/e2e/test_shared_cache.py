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


def test_an_entry_naming_a_file_outside_out_is_rejected_and_nothing_is_written_there(workspace, tmp_path_factory):
    import hashlib
    import json

    cache = tmp_path_factory.mktemp("shared-cache")
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build("--cache", str(cache)).code == 0
    outside = tmp_path_factory.mktemp("outside")
    victim = outside / "victim.txt"
    payload = b"pwn\n"
    digest = hashlib.sha256(payload).hexdigest()
    (cache / "blobs" / digest[:2]).mkdir(parents=True, exist_ok=True)
    (cache / "blobs" / digest[:2] / digest).write_bytes(payload)
    tampered = 0
    for action in (cache / "actions").glob("*.json"):
        entries = json.loads(action.read_text())
        if "model" in entries[0]["outputs"] and entries[0]["outputs"]["model"][0][0] == "model.onnx":
            entries[0]["outputs"]["model"].append(["../" * 12 + str(victim).lstrip("/"), digest, 4])
            action.write_text(json.dumps(entries))
            tampered += 1
    assert tampered == 1

    other = Workspace(tmp_path_factory.mktemp("colleague"))
    for d in ("recipes", "tm"):
        shutil.copytree(workspace.root / d, other.root / d)
    r = other.build("--cache", str(cache), "--cache-read-only")
    assert r.code == 0, r.stderr
    assert not victim.exists()
    export = next(s for s in r.json["steps"] if s["id"] == "tiny:export")
    assert export["state"] == "ran"
    assert export["reason"].startswith("shared cache entry rejected: outputs.model.1: file name '../../")
    assert "warning: tiny:export: shared cache entry rejected" in r.stderr
    assert _artifacts(other.root).keys() == _artifacts(workspace.root).keys()
