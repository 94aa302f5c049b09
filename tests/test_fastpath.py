"""The stat manifest of the no-op fast path: every change a full build would see makes it miss.

Driven on plain files (no recipes, no models): record the manifest, change one
thing, and `check` must no longer answer.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from buildsys import fastpath

SIGNATURE = json.dumps([[], [], False])  # a plain `buildsys build`
ANSWER = {"steps": [{"id": "a:export", "state": "cached", "reason": "up to date", "seconds": 0.0}], "exit": 0}
BLOB = "ab" + "1" * 62


def _age(root: Path) -> None:
    past = time.time() - 60
    for p in [root, *root.rglob("*")]:
        os.utime(p, (past, past), follow_symlinks=False)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    # buildsys's own sources are stamped too; one edited a moment ago would keep any
    # manifest from being recorded, so they are left out here.
    monkeypatch.setattr(fastpath, "_package_files", list)
    root = tmp_path / "ws"
    for rel, text in {"recipes/a.yaml": "name: a\n", "bm/tiny.py": "x = 1\n",
                      "data/calib/one/1.npy": "1", "w.pt": "weights"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    blob = root / "out/.buildsys/store" / BLOB[:2] / BLOB
    blob.parent.mkdir(parents=True)
    blob.write_text("onnx bytes")
    blob.chmod(0o444)
    (root / "out/a").mkdir(parents=True)
    os.link(blob, root / "out/a/model.onnx")  # what Store.materialize does
    (root / "out/a/copied.bin").write_text("copied")  # a copy (the store on another file system)
    copied = root / "out/.buildsys/store/cd" / ("cd" + "2" * 62)
    copied.parent.mkdir(parents=True)
    copied.write_text("copied")
    _age(root)
    return root


def files(root: Path) -> set[str]:
    """What `buildsys build` hands to fastpath.record for this workspace."""
    meta = root / "out/.buildsys"
    return {str(root / p) for p in ("recipes", "recipes/a.yaml", "bm/tiny.py", "w.pt", "data/calib/one/1.npy",
                                    "data/calib/one", "out/a/model.onnx", "out/a/copied.bin")} | {
        str(meta / "store" / BLOB[:2] / BLOB), str(meta / "store/cd" / ("cd" + "2" * 62))}


def record(root: Path) -> None:
    assert fastpath.record(str(root / "out/.buildsys"), SIGNATURE, files(root), ANSWER)


def check(root: Path) -> dict | None:
    return fastpath.check(str(root / "out/.buildsys"), SIGNATURE)


def test_an_unchanged_workspace_is_answered(ws: Path):
    record(ws)
    entry = check(ws)
    assert entry is not None and entry["steps"] == ANSWER["steps"] and entry["exit"] == 0
    assert (ws / "out/.buildsys/noop.json").is_file()


def test_a_store_blob_linked_from_out_is_stamped_through_its_link(ws: Path):
    record(ws)
    text = (ws / "out/.buildsys/noop.json").read_text()
    assert BLOB not in text  # out/a/model.onnx shares its inode
    assert "cd" + "2" * 62 in text  # a copy does not


def _edit(path: Path, text: str = "changed\n") -> None:
    path.chmod(0o644)
    path.write_text(text)


def _replace_blob(root: Path) -> None:
    blob = root / "out/.buildsys/store" / BLOB[:2] / BLOB
    tmp = blob.with_name("tmp")
    tmp.write_text("onnx bytes")
    os.replace(tmp, blob)


CHANGES = {
    "recipe edited": lambda r: _edit(r / "recipes/a.yaml", "name: b\n"),
    "recipe added": lambda r: (r / "recipes/b.yaml").write_text("name: b\n"),
    "model source edited": lambda r: _edit(r / "bm/tiny.py", "x = 2\n"),
    "model source folder gains a module": lambda r: (r / "bm/other.py").write_text(""),
    "checkpoint rewritten": lambda r: _edit(r / "w.pt", "other weights"),
    "data file edited": lambda r: _edit(r / "data/calib/one/1.npy", "2"),
    "data file added beside": lambda r: (r / "data/calib/one/2.npy").write_text("2"),
    "data file added in a new sub-folder": lambda r: ((r / "data/calib/two").mkdir(),
                                                      (r / "data/calib/two/3.npy").write_text("3")),
    "output deleted": lambda r: (r / "out/a/model.onnx").unlink(),
    "output modified": lambda r: _edit(r / "out/a/model.onnx", "garbage"),
    "copied output modified": lambda r: _edit(r / "out/a/copied.bin", "garbage"),
    "store blob deleted": lambda r: (r / "out/.buildsys/store" / BLOB[:2] / BLOB).unlink(),
    "store blob replaced": _replace_blob,
    "store blob modified in place": lambda r: _edit(r / "out/.buildsys/store" / BLOB[:2] / BLOB, "bit flip"),
    "copied store blob deleted": lambda r: (r / "out/.buildsys/store/cd" / ("cd" + "2" * 62)).unlink(),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_a_build_would_see_falls_back_to_the_full_path(ws: Path, change: str):
    record(ws)
    assert check(ws) is not None
    CHANGES[change](ws)
    assert check(ws) is None


def test_a_file_younger_than_two_seconds_is_not_trusted(ws: Path):
    (ws / "recipes/a.yaml").write_text("name: a\n")
    assert not fastpath.record(str(ws / "out/.buildsys"), SIGNATURE, files(ws), ANSWER)
    assert check(ws) is None


def test_cuda_visible_devices_is_part_of_the_environment(ws: Path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    record(ws)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert check(ws) is None


def test_a_gpu_driver_update_falls_back_to_the_full_path(ws: Path, tmp_path: Path, monkeypatch):
    proc = tmp_path / "proc-nvidia"
    (proc / "gpus/0000:01:00.0").mkdir(parents=True)
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n")
    (proc / "gpus/0000:01:00.0/information").write_text("Model: \t\t NVIDIA H200\n")
    (tmp_path / "nvidiactl").write_text("")
    monkeypatch.setattr(fastpath, "_NVIDIACTL", str(tmp_path / "nvidiactl"))
    monkeypatch.setattr(fastpath, "_NVIDIA", str(proc))
    record(ws)
    assert check(ws) is not None
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.10\n")
    assert check(ws) is None
    record(ws)
    (proc / "gpus/0000:01:00.0/information").write_text("Model: \t\t NVIDIA H100\n")
    assert check(ws) is None


def test_the_interpreter_is_known_by_its_real_path(ws: Path, tmp_path: Path, monkeypatch):
    record(ws)
    link = tmp_path / "python-link"
    link.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sys, "executable", str(link))
    assert check(ws) is not None  # the same interpreter by another name
    other = tmp_path / "other-python"
    other.write_text("")
    monkeypatch.setattr(sys, "executable", str(other))
    assert check(ws) is None


def test_each_signature_has_its_own_answer_and_forget_drops_them_all(ws: Path):
    meta = str(ws / "out/.buildsys")
    record(ws)
    only = json.dumps([["a"], [], False])
    assert fastpath.record(meta, only, files(ws), {**ANSWER, "exit": 1})
    assert fastpath.check(meta, only)["exit"] == 1
    assert check(ws)["exit"] == 0
    fastpath.forget(meta)
    assert check(ws) is None and fastpath.check(meta, only) is None
    assert not [n for n in os.listdir(meta) if n.startswith("noop")]


def test_a_damaged_manifest_is_a_miss(ws: Path):
    record(ws)
    (ws / "out/.buildsys/noop.json").write_text('{"version": 2, "signature": ')
    assert check(ws) is None
    (ws / "out/.buildsys/noop.json").write_text('[1, 2]')
    assert check(ws) is None


def _recipe_with(data: str) -> str:
    from tests.e2e.conftest import tiny_recipe

    if data == "calibration":
        return (tiny_recipe().split("tolerances:")[0]
                + "calibration: {data: {kind: npy, path: 'data/**/*.npy'}, samples: 4}\n"
                + "tolerances:\n  int8: {min_cosine: 0.9}\ntargets:\n  - {backend: onnxruntime, precision: int8}\n")
    return tiny_recipe().replace("data: {kind: normal, mean: 0.0, std: 1.0}", "data: {kind: npy, path: 'data/**/*.npy'}")


@pytest.mark.parametrize("data", ["calibration", "inputs"])
def test_a_file_added_to_a_folder_a_recursive_glob_has_no_match_in_yet_is_seen(tmp_path: Path, monkeypatch,
                                                                                 data: str):
    """`data/**/*.npy` with matches only in data/a/: a file new in data/b/ is a new match."""
    from buildsys import cli
    from buildsys.build import Workspace
    from buildsys.engine.answer import Outcome
    from buildsys.recipe import load_recipe
    from buildsys.resolve import resolve

    monkeypatch.setattr(fastpath, "_package_files", list)
    root = tmp_path / "ws"
    for rel in ("recipes", "tm", "data/a", "data/b/deeper", "out/.buildsys"):
        (root / rel).mkdir(parents=True)
    (root / "tm/tiny.py").write_text("def tiny(features=4): ...\n")  # found, never imported
    (root / "recipes/tiny.yaml").write_text(_recipe_with(data))
    (root / "data/a/0.npy").write_bytes(b"not read here")
    _age(root)
    ws = Workspace(root)
    graph = resolve([load_recipe(root / "recipes/tiny.yaml", root)], root)
    outcomes = [Outcome(sid, "unavailable", "not built here") for sid in graph.steps]
    cli._record_noop(ws, graph, outcomes, {}, SIGNATURE, 0)
    assert check(root) is not None

    (root / "data/b/1.npy").write_bytes(b"a new match")
    assert check(root) is None
    cli._record_noop(ws, graph, outcomes, {}, SIGNATURE, 0)
    _age(root)
    cli._record_noop(ws, graph, outcomes, {}, SIGNATURE, 0)
    assert check(root) is not None
    (root / "data/b/deeper/2.npy").write_bytes(b"a new match, further down")
    assert check(root) is None


def test_glob_folders_reach_as_deep_as_the_pattern(tmp_path: Path):
    for rel in ("data/a/x", "data/b", "data/.hidden", "other"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data/a/up").symlink_to(tmp_path / "data", target_is_directory=True)

    def rel(pattern: str) -> set[str]:
        return {os.path.relpath(p, tmp_path) for p in fastpath.glob_folders(str(tmp_path), pattern)}

    assert rel("data/*.npy") == {"data"}
    assert rel("data/*/*.npy") == {"data", "data/a", "data/b"}
    assert rel("data/**/*.npy") == {"data", "data/a", "data/a/x", "data/a/up", "data/b"}
    assert rel("data/.*/*.npy") == {"data", "data/a", "data/b", "data/.hidden"}
    assert rel("data/a/x/one.npy") == {"data/a/x/one.npy"}
    assert rel("missing/**/*.npy") == {"missing"}


def test_a_copied_workspace_is_not_answered_from_the_original(ws: Path, tmp_path: Path):
    import shutil

    record(ws)
    copy = tmp_path / "copy"
    shutil.copytree(ws, copy, symlinks=True, copy_function=shutil.copy2)
    (copy / "recipes/a.yaml").write_text("name: a\nedited: 1\n")
    _age(copy)
    assert check(copy) is None  # the manifest's stamps name the original's files
    assert check(ws) is not None
