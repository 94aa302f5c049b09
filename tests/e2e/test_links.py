"""Symbolic links in the workspace: nothing is written or deleted through one that leads out of out/,
and no data file is read from outside the workspace.

Each test plants the link a careless script or a hostile checkout could leave, runs the real
command and asserts the exit code, the message, and that the files behind the link are intact.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.e2e.conftest import Workspace, tiny_recipe

TRACEBACK = "Traceback (most recent call last)"


def keepsake(folder) -> dict[str, bytes]:
    """Files that must survive, planted in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "precious.txt").write_text("keep me")
    (folder / "tmp").mkdir(exist_ok=True)
    (folder / "tmp" / "also.txt").write_text("keep me too")
    return snapshot(folder)


def snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(r, path: str) -> None:
    assert r.code == 3, r.stderr
    assert TRACEBACK not in r.stderr
    assert f"{path} resolves to" in r.stderr and "outside" in r.stderr
    assert "hint: remove the link" in r.stderr


def test_clean_cache_with_buildsys_folder_linked_to_the_workspace_deletes_nothing(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    (workspace.root / ".git").mkdir()
    (workspace.root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (workspace.root / "out").mkdir()
    (workspace.root / "out/.buildsys").symlink_to("..")
    before = snapshot(workspace.root / "recipes"), snapshot(workspace.root / ".git")

    r = workspace.run("clean", "--cache")
    refused(r, str(workspace.root / "out/.buildsys"))
    assert (snapshot(workspace.root / "recipes"), snapshot(workspace.root / ".git")) == before


@pytest.mark.parametrize("command", [("build",), ("status",), ("check",), ("clean",), ("explain", "tiny")])
def test_every_command_refuses_a_buildsys_folder_linked_elsewhere(workspace, tmp_path_factory, command):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    before = keepsake(elsewhere)
    (workspace.root / "out").mkdir()
    (workspace.root / "out/.buildsys").symlink_to(elsewhere)

    r = workspace.run(*command)
    refused(r, str(workspace.root / "out/.buildsys"))
    assert snapshot(elsewhere) == before  # tmp/ was not removed, no state or lock was written


@pytest.mark.parametrize("inner", ["tmp", "store"])
def test_build_refuses_its_scratch_or_store_folder_linked_elsewhere(workspace, tmp_path_factory, inner):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    before = keepsake(elsewhere)
    (workspace.root / "out/.buildsys").mkdir(parents=True)
    (workspace.root / f"out/.buildsys/{inner}").symlink_to(elsewhere)

    r = workspace.build()
    refused(r, str(workspace.root / f"out/.buildsys/{inner}"))
    assert snapshot(elsewhere) == before


def test_check_refuses_a_reports_folder_linked_elsewhere(workspace, tmp_path_factory):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    before = keepsake(elsewhere)
    (workspace.root / "out").mkdir()
    (workspace.root / "out/reports").symlink_to(elsewhere)
    r = workspace.run("check")
    refused(r, str(workspace.root / "out/reports"))
    assert snapshot(elsewhere) == before


def test_store_shards_linked_elsewhere_are_refused_and_the_next_build_succeeds(workspace, tmp_path_factory):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    before = keepsake(elsewhere)
    store = workspace.root / "out/.buildsys/store"
    store.mkdir(parents=True)
    for i in range(256):
        (store / f"{i:02x}").symlink_to(elsewhere)

    r = workspace.build()
    assert r.code == 3 and TRACEBACK not in r.stderr, r.stderr
    assert re.search(rf"{re.escape(str(store))}/[0-9a-f]{{2}} resolves to {re.escape(str(elsewhere))}, outside",
                     r.stderr), r.stderr
    assert snapshot(elsewhere) == before

    for link in store.iterdir():
        link.unlink()
    r = workspace.build()
    assert r.code == 0, r.stderr


def test_clean_removes_a_linked_output_folder_itself_and_never_what_it_points_to(workspace, tmp_path_factory):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    before = keepsake(elsewhere)
    (workspace.root / "out/other").mkdir(parents=True)
    (workspace.root / "out/other/file.txt").write_text("x")
    (workspace.root / "out/tiny").symlink_to(elsewhere)
    (workspace.root / "out/zzz").symlink_to(elsewhere)

    r = workspace.run("clean", "tiny")
    assert r.code == 0 and TRACEBACK not in r.stderr, r.stderr
    assert not (workspace.root / "out/tiny").is_symlink() and snapshot(elsewhere) == before

    r = workspace.run("clean", "--cache")
    assert r.code == 0 and TRACEBACK not in r.stderr, r.stderr
    assert sorted(p.name for p in (workspace.root / "out").iterdir()) == [".buildsys"]
    assert snapshot(elsewhere) == before


def test_an_npy_glob_reaching_outside_the_workspace_is_a_located_recipe_error(workspace, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    np.save(elsewhere / "secret.npy", np.zeros((4, 4), np.float32))
    (workspace.root / "data/a").mkdir(parents=True)
    np.save(workspace.root / "data/a/ok.npy", np.zeros((4, 4), np.float32))
    pattern = f"data/*/{'../' * (len(workspace.root.parts) + 2)}{str(elsewhere).lstrip('/')}/*.npy"
    recipe = tiny_recipe().replace("data: {kind: normal, mean: 0.0, std: 1.0}",
                                   f"data: {{kind: npy, path: '{pattern}'}}")
    workspace.write("recipes/tiny.yaml", recipe)

    for command in (("validate",), ("build",)):
        r = workspace.run(*command)
        assert r.code == 2, r.stderr
        assert TRACEBACK not in r.stderr
        # refused from the pattern's text, before any folder is walked
        assert f"recipes/tiny.yaml:7:29: inputs.0.data.path: '{pattern}' climbs out of the workspace through '..'" \
            in r.stderr, r.stderr
        assert "hint: data paths are relative to the project root and must stay inside it" in r.stderr
        assert "secret.npy" not in r.stderr.replace(pattern, "")


def test_an_npy_file_linked_from_outside_the_workspace_is_refused(workspace, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    np.save(elsewhere / "secret.npy", np.zeros((4, 4), np.float32))
    (workspace.root / "data").mkdir()
    np.save(workspace.root / "data/ok.npy", np.zeros((4, 4), np.float32))
    (workspace.root / "data/link.npy").symlink_to(elsewhere / "secret.npy")
    recipe = tiny_recipe().replace("data: {kind: normal, mean: 0.0, std: 1.0}",
                                   "data: {kind: npy, path: 'data/*.npy'}")
    workspace.write("recipes/tiny.yaml", recipe)
    r = workspace.run("validate")
    assert r.code == 2 and "inputs.0.data.path: 'data/*.npy' matches data/link.npy, which resolves to" in r.stderr, r.stderr


def test_the_workspace_own_real_folders_still_build(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.build()
    assert r.code == 0, r.stderr
    other = Workspace(workspace.root)
    assert other.run("clean", "--cache").code == 0
