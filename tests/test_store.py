"""The content-addressed store, method by method: temporaries, commits, verification, placement."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from buildsys.storage import safepath
from buildsys.storage.store import Store

DATA = b"model bytes"
DIGEST = hashlib.sha256(DATA).hexdigest()


def committed(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    src = tmp_path / "scratch.bin"
    src.write_bytes(DATA)
    store.put(src, DIGEST)
    return store


def test_a_committed_blob_is_read_only_and_its_scratch_file_is_gone(tmp_path):
    store = committed(tmp_path)
    blob = tmp_path / "store" / DIGEST[:2] / DIGEST
    assert blob.read_bytes() == DATA and not (tmp_path / "scratch.bin").exists()
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    again = tmp_path / "again.bin"
    again.write_bytes(DATA)
    assert store.put(again, DIGEST) == blob and not again.exists()  # already there: the copy is dropped
    assert store.has(DIGEST) and store.verify(DIGEST) and store.size() == len(DATA)


def test_a_download_s_temporary_lies_hidden_beside_its_blob(tmp_path):
    store = Store(tmp_path / "store")
    fd, path = store.temp(DIGEST)
    os.close(fd)
    folder, name = os.path.split(path)
    assert folder == str(tmp_path / "store" / DIGEST[:2])
    assert name.startswith(f".{DIGEST}.") and name.endswith(".part") and len(name) == 1 + 64 + 1 + 16 + 5


def test_a_shard_folder_linked_out_of_the_store_is_refused_by_name(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store" / DIGEST[:2]).symlink_to(tmp_path / "elsewhere")
    for call in (lambda: store.temp(DIGEST), lambda: store.shard(DIGEST)):
        with pytest.raises(safepath.UnsafePath) as err:
            call()
        assert err.value.message == (f"{tmp_path / 'store' / DIGEST[:2]} resolves to {tmp_path / 'elsewhere'}, outside "
                                     f"{tmp_path / 'store'}; buildsys writes and deletes only under the artifact "
                                     "store, never through a symbolic link out of it")
    bad = tmp_path / "elsewhere" / DIGEST
    bad.write_bytes(b"not the data")
    with pytest.raises(safepath.UnsafePath):
        store.verify(DIGEST)  # a damaged blob behind such a link is not deleted through it
    assert bad.exists() and os.listdir(tmp_path / "elsewhere") == [DIGEST]


def test_verification_removes_a_damaged_blob_and_reports_a_missing_one(tmp_path):
    store = committed(tmp_path)
    blob = tmp_path / "store" / DIGEST[:2] / DIGEST
    os.chmod(blob, 0o644)
    blob.write_bytes(b"damaged")
    assert store.verify(DIGEST) is False and not blob.exists() and not store.has(DIGEST)
    assert store.verify(DIGEST) is False


def test_a_damaged_blob_another_build_removed_while_this_one_hashed_it_is_reported_missing(tmp_path, monkeypatch):
    store = committed(tmp_path)
    blob = tmp_path / "store" / DIGEST[:2] / DIGEST
    os.chmod(blob, 0o644)
    blob.write_bytes(b"damaged")
    from buildsys.storage import store as store_module

    def hashed_then_removed_by_another_build(path):
        found = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        os.unlink(path)
        return found

    monkeypatch.setattr(store_module, "digest_file", hashed_then_removed_by_another_build)
    assert store.verify(DIGEST) is False and not blob.exists() and not store.has(DIGEST)


def test_placing_a_blob_links_it_into_new_folders_and_clears_stale_temporaries(tmp_path, monkeypatch):
    store = committed(tmp_path)
    dst = tmp_path / "out" / "r" / "deep" / "model.onnx"
    dst.parent.mkdir(parents=True)
    (dst.parent / ".model.onnx.0123456789abcdef.tmp").write_bytes(b"left by a killed build")
    (dst.parent / ".other.onnx.0123456789abcdef.tmp").write_bytes(b"another file's")
    replaced = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: replaced.append(os.path.basename(a)) or replace(a, b))
    store.materialize(DIGEST, dst)
    assert dst.read_bytes() == DATA and os.path.samefile(dst, tmp_path / "store" / DIGEST[:2] / DIGEST)
    assert sorted(os.listdir(dst.parent)) == [".other.onnx.0123456789abcdef.tmp", "model.onnx"]
    (name,) = replaced
    assert name.startswith(".model.onnx.") and name.endswith(".tmp") and len(name) == len(".model.onnx..tmp") + 16
    store.materialize(DIGEST, dst)  # already that file: nothing to do
    assert replaced == [name]
    nested = tmp_path / "out" / "new" / "folders" / "x.onnx"
    store.materialize(DIGEST, nested)
    assert nested.read_bytes() == DATA


def test_where_links_are_refused_the_blob_is_copied_read_only(tmp_path, monkeypatch):
    store = committed(tmp_path)

    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link", src, dst)

    monkeypatch.setattr(os, "link", no_links)
    dst = tmp_path / "other-disk" / "model.onnx"
    store.materialize(DIGEST, dst)
    assert dst.read_bytes() == DATA and not os.path.samefile(dst, tmp_path / "store" / DIGEST[:2] / DIGEST)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o444 & ~_umask()
    assert os.listdir(dst.parent) == ["model.onnx"]


def test_a_stale_temporary_another_process_cleared_meanwhile_is_no_error(tmp_path, monkeypatch):
    store = committed(tmp_path)
    dst = tmp_path / "out" / "model.onnx"
    dst.parent.mkdir()
    (dst.parent / ".model.onnx.0123456789abcdef.tmp").write_bytes(b"left by a killed build")
    listed = Path.glob

    def cleared_once_listed(self, pattern):
        for found in list(listed(self, pattern)):
            found.unlink()  # the other process is faster
            yield found

    monkeypatch.setattr(Path, "glob", cleared_once_listed)
    store.materialize(DIGEST, dst)
    assert os.listdir(dst.parent) == ["model.onnx"] and dst.read_bytes() == DATA


def test_a_copy_killed_midway_leaves_a_hidden_temporary_the_next_placement_clears(tmp_path, monkeypatch):
    store = committed(tmp_path)
    link = os.link
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    import shutil

    def killed(src, dst, length=0):
        dst.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfileobj", killed)
    dst = tmp_path / "other-disk" / "model.onnx"
    with pytest.raises(KeyboardInterrupt):
        store.materialize(DIGEST, dst)
    (left,) = os.listdir(dst.parent)
    assert left.startswith(".model.onnx.") and left.endswith(".tmp") and len(left) == len(".model.onnx..tmp") + 16
    monkeypatch.setattr(os, "link", link)
    store.materialize(DIGEST, dst)
    assert os.listdir(dst.parent) == ["model.onnx"] and dst.read_bytes() == DATA


def test_a_copy_the_disk_refuses_names_the_artifact_and_leaves_no_temporary(tmp_path, monkeypatch):
    store = committed(tmp_path)
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))

    def full(src, dst, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    import shutil

    monkeypatch.setattr(shutil, "copyfileobj", full)
    dst = tmp_path / "other-disk" / "model.onnx"
    with pytest.raises(OSError) as err:
        store.materialize(DIGEST, dst)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(dst)
    assert os.listdir(dst.parent) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_removing_a_blob_deletes_it_and_one_gone_already_is_no_error(tmp_path):
    store = committed(tmp_path)
    store.remove(DIGEST)
    assert not store.has(DIGEST) and os.listdir(tmp_path / "store" / DIGEST[:2]) == []
    store.remove(DIGEST)  # another `cache gc` removed it first
    assert not store.has(DIGEST)
