"""safepath: temporary files nobody can plant in advance, writes that stay below their folder, removal."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from buildsys.storage import safepath


def test_temporary_names_are_hidden_beside_their_target_with_64_random_bits(tmp_path):
    name = safepath.temp_name(str(tmp_path), "model.onnx", ".tmp")
    folder, base = os.path.split(name)
    assert folder == str(tmp_path)
    assert base.startswith(".model.onnx.") and base.endswith(".tmp")
    assert len(base) == len(".model.onnx.") + 16 + len(".tmp")
    int(base[len(".model.onnx."):-len(".tmp")], 16)  # hexadecimal


def test_a_temporary_file_is_new_private_and_open_for_writing(tmp_path):
    fd, path = safepath.create_temp(str(tmp_path), "blob", ".part")
    with open(fd, "wb") as f:
        f.write(b"data")
    assert Path(path).read_bytes() == b"data"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fd, other = safepath.create_temp(str(tmp_path), "blob", ".part", 0o644)
    os.close(fd)
    assert other != path and stat.S_IMODE(os.stat(other).st_mode) & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_creation_gives_up_after_eight_names_that_all_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(safepath.secrets, "token_hex", lambda n: "taken")
    (tmp_path / ".blob.taken.part").write_bytes(b"someone's")
    with pytest.raises(FileExistsError) as err:
        safepath.create_temp(str(tmp_path), "blob", ".part")
    assert err.value.errno == errno.EEXIST and err.value.filename == str(tmp_path)
    assert (tmp_path / ".blob.taken.part").read_bytes() == b"someone's"
    tried = []
    names = iter(["taken"] * 7 + ["free"])
    monkeypatch.setattr(safepath.secrets, "token_hex", lambda n: tried.append(n) or next(names))
    fd, path = safepath.create_temp(str(tmp_path), "blob", ".part")  # the eighth try is the last
    os.close(fd)
    assert path.endswith(".blob.free.part") and tried == [8] * 8


def test_a_dangling_link_at_the_name_is_not_created_through(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere" / "made-through-the-link"
    target.parent.mkdir()
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(safepath.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".x.planted.tmp").symlink_to(target)  # points at nothing yet
    fd, path = safepath.create_temp(str(tmp_path), "x", ".tmp")
    os.close(fd)
    assert path.endswith(".x.fresh.tmp") and not target.exists()


def test_write_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    safepath.write_atomic(str(target), b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["state.json"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644 & ~_umask()


def test_a_failed_atomic_write_names_the_target_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safepath.os, "replace", full)
    with pytest.raises(OSError) as err:
        safepath.write_atomic(str(target), b"new")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_with_filename_names_a_nameless_error_and_keeps_a_named_one():
    named = safepath.with_filename(OSError(errno.ENOSPC, "No space left on device"), "/out/a")
    assert (type(named), named.errno, named.strerror, named.filename) == (OSError, errno.ENOSPC,
                                                                          "No space left on device", "/out/a")
    own = PermissionError(errno.EACCES, "Permission denied", "/store/ab")
    assert safepath.with_filename(own, "/out/a") is own
    bare = safepath.with_filename(FileNotFoundError(errno.ENOENT, ""), "/x")
    assert isinstance(bare, FileNotFoundError) and bare.filename == "/x" and bare.strerror


def test_outside_says_where_a_path_really_is_when_that_is_outside(tmp_path):
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "out-sibling").mkdir()
    assert safepath.outside(str(root), str(root)) is None
    assert safepath.outside(str(root), str(root / "a")) is None
    assert safepath.outside(str(root), str(root / "a" / "new")) is None
    assert safepath.outside(str(root), str(root / "link")) == str(tmp_path / "elsewhere")
    assert safepath.outside(str(root), str(tmp_path / "out-sibling")) == str(tmp_path / "out-sibling")  # not a prefix
    assert safepath.outside(str(root) + "/", str(root / "a")) is None


def test_ensure_inside_names_the_link_to_remove(tmp_path):
    root = tmp_path / "out"
    (root / "r").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "r" / "logs").symlink_to(tmp_path / "elsewhere")
    safepath.ensure_inside(root, root / "r")  # inside: nothing to say
    with pytest.raises(safepath.UnsafePath) as err:
        safepath.ensure_inside(root, root / "r" / "logs" / "deeper", "out/")
    assert err.value.message == (f"{root / 'r' / 'logs' / 'deeper'} resolves to {tmp_path / 'elsewhere' / 'deeper'}, "
                                 "outside " f"{root}; buildsys writes and deletes only under out/, never through a "
                                 "symbolic link out of it")
    assert err.value.hint == (f"remove the link ({root / 'r' / 'logs'}) and run the command again; buildsys "
                              "recreates the folder")
    with pytest.raises(safepath.UnsafePath) as err:
        safepath.ensure_inside(root, tmp_path / "elsewhere")  # no link on the way: the path itself is named
    assert f"only under {root}," in err.value.message and f"remove the link ({tmp_path / 'elsewhere'})" in err.value.hint


def test_remove_deletes_a_link_never_what_it_points_to(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "file").write_text("x")
    (tmp_path / "link").symlink_to(kept)
    safepath.remove(tmp_path / "link")
    assert not (tmp_path / "link").exists() and (kept / "file").read_text() == "x"
    (tmp_path / "file-link").symlink_to(kept / "file")
    safepath.remove(str(tmp_path / "file-link"))
    assert (kept / "file").exists() and not os.path.lexists(tmp_path / "file-link")


def test_remove_deletes_files_and_folders_and_what_is_gone_already(tmp_path):
    (tmp_path / "f").write_text("x")
    safepath.remove(tmp_path / "f")
    assert not (tmp_path / "f").exists()
    safepath.remove(tmp_path / "f")  # gone: as asked
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "c").write_text("x")
    (tree / "inner-link").symlink_to(tmp_path / "kept")
    (tmp_path / "kept").write_text("keep")
    safepath.remove(tree)
    assert not tree.exists() and (tmp_path / "kept").read_text() == "keep"


def test_remove_goes_on_when_a_file_vanishes_meanwhile_and_stops_on_other_errors(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("a", "b"):
        (tree / name).write_text("x")
    unlink = os.unlink
    calls = []

    def vanishing(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        if os.path.basename(path) == "a":
            unlink(path, *args, **kwargs)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", vanishing)
    safepath.remove(tree)
    assert not tree.exists() and "a" in calls

    tree.mkdir()
    (tree / "c").write_text("x")

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "unlink", refused)
    with pytest.raises(PermissionError):
        safepath.remove(tree)
    with pytest.raises(PermissionError):
        safepath.remove(tree / "c")  # a file: the refusal is shown, not swallowed


def test_the_eight_tries_and_the_message_when_all_are_taken(tmp_path, monkeypatch):
    tried = []
    monkeypatch.setattr(safepath.secrets, "token_hex", lambda n: tried.append(n) or "taken")
    (tmp_path / ".blob.taken.part").write_bytes(b"")
    with pytest.raises(FileExistsError) as err:
        safepath.create_temp(str(tmp_path), "blob", ".part")
    assert len(tried) == 8 and err.value.strerror == "could not create a fresh temporary file"


def test_an_atomic_write_names_its_temporary_after_the_target(tmp_path, monkeypatch):
    replaced = []
    replace = os.replace
    monkeypatch.setattr(safepath.os, "replace", lambda src, dst: replaced.append(os.path.basename(src))
                        or replace(src, dst))
    safepath.write_atomic(str(tmp_path / "state.json"), b"x")
    (name,) = replaced
    assert name.startswith(".state.json.") and name.endswith(".tmp") and len(name) == len(".state.json..tmp") + 16


def test_a_failed_atomic_write_reports_the_write_even_when_its_temporary_cannot_be_removed(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(safepath.os, "replace", full)
    monkeypatch.setattr(safepath.os, "unlink", refused)
    with pytest.raises(OSError) as err:
        safepath.write_atomic(str(tmp_path / "state.json"), b"new")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "state.json")


def test_with_filename_keeps_the_words_of_an_error_without_strerror():
    named = safepath.with_filename(OSError("the disk refused"), "/out/a")
    assert named.strerror == "the disk refused" and named.filename == "/out/a"


def test_below_the_root_folder_everything_is_inside():
    assert safepath.outside("/", "/tmp/anything") is None
