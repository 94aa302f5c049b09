"""The shared cache as untrusted input: tampered entries are rejected misses, never paths.

Driven by counting steps (tests/fakes.py) against a cache folder that the tests
tamper with the way anyone with write access to it could.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from buildsys.engine.answer import Finished
from buildsys.recipe.resolve import Graph, StepSpec
from buildsys.runners.workers import InlineRunner
from buildsys.storage import safepath
from buildsys.storage.sharedcache import SharedCache
from buildsys.storage.store import Store
from buildsys.storage.untrusted import Rejected, check_entry
from tests.fakes import build_graph

COUNTING = "tests.fakes:Counting"


def graph() -> Graph:
    a = StepSpec("r:a", "r", "a", COUNTING, {"id": "r:a", "text": "a"}, outputs={"out": "r/a.txt"})
    b = StepSpec("r:b", "r", "b", COUNTING, {"id": "r:b", "text": "b"}, inputs={"x": "r:a#out"},
                 outputs={"out": "r/b.txt"})
    return Graph({s.id: s for s in (a, b)})


def build(root: Path, cache: Path, read_only=False, runner=None, dry_run=False):
    root.mkdir(parents=True, exist_ok=True)
    shared = SharedCache(str(cache), read_only=read_only)
    return build_graph(root, graph(), runner=runner, shared=shared, dry_run=dry_run)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(cache: Path) -> dict[Path, list]:
    return {p: json.loads(p.read_text()) for p in (cache / "actions").glob("*.json")}


def entry_of(cache: Path, output_file: str) -> tuple[Path, list]:
    """The action file whose entry produced `output_file` (a.txt or b.txt)."""
    for path, stored in entries(cache).items():
        if stored[0]["outputs"]["out"][0][0] == output_file:
            return path, stored
    raise AssertionError(f"no entry for {output_file}")


def plant_blob(cache: Path, data: bytes) -> str:
    digest = sha(data)
    p = cache / "blobs" / digest[:2] / digest
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return digest


@pytest.fixture
def cache(tmp_path) -> Path:
    """A shared cache filled by one build in another workspace."""
    c = tmp_path / "cache"
    out, ran = build(tmp_path / "first", c)
    assert ran == ["r:a", "r:b"] and len(entries(c)) == 2
    return c


def test_a_clean_shared_cache_serves_a_fresh_workspace(cache, tmp_path):
    out, ran = build(tmp_path / "second", cache, read_only=True)
    assert ran == [] and {o.reason for o in out.values()} == {"fetched from the shared cache"}
    assert (tmp_path / "second/out/r/b.txt").read_text() == "b|a"


def test_a_file_name_climbing_out_of_out_is_rejected_and_nothing_is_written_there(cache, tmp_path, capsys):
    victim = tmp_path / "outside" / "victim.txt"
    digest = plant_blob(cache, b"pwn\n")
    path, stored = entry_of(cache, "a.txt")
    climb = "../" * (len(tmp_path.parts) + 4) + str(victim).lstrip("/")
    stored[0]["outputs"]["out"].append([climb, digest, 4])
    path.write_text(json.dumps(stored))

    out, ran = build(tmp_path / "second", cache, read_only=True)
    assert not victim.exists() and not victim.parent.exists()
    assert ran == ["r:a"]  # a rejected entry is a miss: the step is built here
    assert out["r:a"].state == "ran"
    assert out["r:a"].reason.startswith("shared cache entry rejected: outputs.out.1: file name ")
    assert "is not a plain file name" in out["r:a"].reason
    err = capsys.readouterr().err
    assert "warning: r:a: shared cache entry rejected" in err and f"(in {cache})" in err
    assert out["r:b"].reason == "fetched from the shared cache"  # same bytes as the producer's: b's key holds


@pytest.mark.parametrize("tamper, expected", [
    (lambda files: files[0].__setitem__(1, "../../../../victim"), "digest '../../../../victim' is not 64"),
    (lambda files: files[0].__setitem__(1, "A" * 64), "is not 64 lowercase hex"),
    (lambda files: files[0].__setitem__(2, -1), "size -1 is not a whole number"),
    (lambda files: files[0].__setitem__(2, "3"), "size '3' is not a whole number"),
    (lambda files: files[0].__setitem__(0, "b.txt"), "the first file must be the declared 'a.txt'"),
    (lambda files: files[0].__setitem__(0, "a"), "the first file must be the declared 'a.txt'"),
    (lambda files: files[0].__setitem__(0, ".a.txt"), "is not a plain file name"),
    (lambda files: files.append(["other.txt", "0" * 64, 1]), "a companion file must be 'a.txt.data'"),
    (lambda files: files.append(list(files[0])), "is listed twice"),
    (lambda files: files.clear(), "expected a non-empty list of files"),
], ids=["digest-path", "digest-case", "size-negative", "size-text", "primary-name", "primary-stem", "hidden-name",
        "companion-name", "twice", "empty"])
def test_malformed_output_fields_are_rejected_misses(cache, tmp_path, tamper, expected):
    path, stored = entry_of(cache, "a.txt")
    tamper(stored[0]["outputs"]["out"])
    path.write_text(json.dumps(stored))
    outside = tmp_path / "victim"
    outside.write_text("keep")

    out, ran = build(tmp_path / "second", cache, read_only=True)
    assert ran == ["r:a"]
    assert out["r:a"].reason.startswith("shared cache entry rejected: ") and expected in out["r:a"].reason
    assert outside.read_text() == "keep"
    assert (tmp_path / "second/out/r/a.txt").read_text() == "a"


@pytest.mark.parametrize("entry, expected", [
    ({"outputs": {"other": []}}, "the step declares ['out'], the entry has ['other']"),
    ({"outputs": {"out": [["a.txt", "0" * 64, 1]]}, "deps": {"files": {"../../etc/passwd": "0" * 64}}},
     "deps.files: '../../etc/passwd' is not a path inside the workspace"),
    ({"outputs": {"out": [["a.txt", "0" * 64, 1]]}, "verdict": "passed"}, "verdict: expected an object"),
    ("not an object", "expected an object, found str"),
])
def test_malformed_entries_name_what_is_wrong(entry, expected):
    with pytest.raises(Rejected, match=expected.replace("[", r"\[").replace("(", r"\(")):
        check_entry({"out": "a.txt"}, entry)


def test_a_damaged_blob_is_rejected_with_its_reason_and_replaced_by_the_good_one(cache, tmp_path, capsys):
    _, stored = entry_of(cache, "a.txt")
    digest = stored[0]["outputs"]["out"][0][1]
    blob = cache / "blobs" / digest[:2] / digest
    os.chmod(blob, 0o644)
    blob.write_bytes(b"b")  # same size as "a": only the digest can tell

    out, ran = build(tmp_path / "second", cache)
    assert ran == ["r:a"]
    assert out["r:a"].reason == f"shared cache entry rejected: blob {digest} does not match its digest"
    assert blob.read_bytes() == b"a"  # the build published the good bytes over the damaged ones

    out, ran = build(tmp_path / "third", cache, read_only=True)
    assert ran == [] and out["r:a"].reason == "fetched from the shared cache"


def test_a_blob_longer_than_recorded_is_read_no_further(cache, tmp_path):
    _, stored = entry_of(cache, "a.txt")
    digest = stored[0]["outputs"]["out"][0][1]
    blob = cache / "blobs" / digest[:2] / digest
    blob.unlink()
    blob.symlink_to("/dev/zero")  # endless: a reader that trusts the blob never returns

    out, ran = build(tmp_path / "second", cache, read_only=True)
    assert ran == ["r:a"]
    assert out["r:a"].reason == f"shared cache entry rejected: blob {digest} does not have its recorded size (1 bytes)"


def test_a_dry_run_rejects_a_blob_of_the_wrong_size_without_reading_it(cache, tmp_path):
    _, stored = entry_of(cache, "a.txt")
    digest = stored[0]["outputs"]["out"][0][1]
    blob = cache / "blobs" / digest[:2] / digest
    os.chmod(blob, 0o644)
    blob.write_bytes(b"longer")
    out, _ = build(tmp_path / "second", cache, read_only=True, dry_run=True)
    assert out["r:a"].state == "would-run"
    assert out["r:a"].reason == f"shared cache entry rejected: blob {digest} does not have its recorded size (1 bytes)"


def test_a_shard_folder_linked_elsewhere_is_not_published_through(tmp_path):
    cache = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    digest = sha(b"a")
    (cache / "blobs").mkdir(parents=True)
    (cache / "blobs" / digest[:2]).symlink_to(elsewhere)
    with pytest.raises(safepath.UnsafePath, match="outside") as err:
        build(tmp_path / "first", cache)
    assert f"buildsys writes and deletes only under the shared cache {cache}, never" in err.value.message
    assert list(elsewhere.iterdir()) == []


class LyingCluster(InlineRunner):
    """Runs steps here but answers as a cluster worker whose answer was tampered with."""

    def wait(self):
        done = super().wait()
        for f in done:
            f.answer.outputs["out"][0][0] = "../../../escaped.txt"
        return [Finished(f.job, dataclasses.replace(f.answer, remote=True, log_text="remote log")) for f in done]


def test_a_cluster_answer_with_a_path_is_a_failed_step(tmp_path):
    out, _ = build(tmp_path / "ws", tmp_path / "cache", runner=LyingCluster())
    assert out["r:a"].state == "failed"
    assert "the cluster worker's answer was rejected: outputs.out.0: file name '../../../escaped.txt'" \
        in out["r:a"].message
    assert not list(tmp_path.rglob("escaped.txt"))


# -- the store refuses what is not a digest ---------------------------------------------------------


@pytest.mark.parametrize("method", ["path", "verify", "put", "temp", "materialize"])
def test_store_methods_refuse_a_malformed_digest(tmp_path, method):
    store = Store(tmp_path / "store")
    victim = tmp_path / "x"
    victim.write_text("keep")
    args = {"path": (), "verify": (), "temp": (), "put": (tmp_path / "x",), "materialize": (tmp_path / "y",)}
    call = getattr(store, method)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        if method == "put":
            call(*args[method], "../x")
        else:
            call("../../x", *args[method])
    assert victim.read_text() == "keep" and not store.has("../../x")


def test_temporary_files_have_unpredictable_names_and_never_follow_a_planted_link(tmp_path, monkeypatch):
    folder = tmp_path / "shard"
    folder.mkdir()
    names = {safepath.temp_name(str(folder), "d", ".part") for _ in range(100)}
    assert len(names) == 100

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    guesses = iter(["guessed", "guessed", "fresh"])
    monkeypatch.setattr(safepath.secrets, "token_hex", lambda n: next(guesses))
    (folder / ".d.guessed.part").symlink_to(victim)  # planted where the first guess lands
    fd, path = safepath.create_temp(str(folder), "d", ".part")
    with open(fd, "wb") as f:
        f.write(b"new")
    assert path.endswith(".d.fresh.part") and victim.read_text() == "keep"


def test_publishing_drops_malformed_entries_of_the_key(cache, tmp_path):
    path, stored = entry_of(cache, "a.txt")
    bad = json.loads(json.dumps(stored[0]))
    bad["outputs"]["out"][0][1] = "../../x"
    bad["deps"] = {"dists": {"some-package": "1.0"}}  # another entry of the same key, kept if it were sound
    path.write_text(json.dumps([bad]))

    out, ran = build(tmp_path / "second", cache)
    assert ran == ["r:a"] and out["r:a"].reason.startswith("shared cache entry rejected: ")
    after = json.loads(path.read_text())
    assert len(after) == 1 and after[0]["outputs"] == stored[0]["outputs"]


def test_a_cache_behind_an_fsspec_url_is_checked_and_repaired_alike(tmp_path):
    import fsspec

    url = f"memory://buildsys-{uuid.uuid4().hex}"  # memory:// lives as long as the process, across sessions
    out, ran = build(tmp_path / "first", url)
    assert ran == ["r:a", "r:b"]
    fs = fsspec.filesystem("memory")
    digest = sha(b"a")
    blob = f"{url}/blobs/{digest[:2]}/{digest}"
    with fs.open(blob, "wb") as f:
        f.write(b"b")
    out, ran = build(tmp_path / "second", url)
    assert ran == ["r:a"] and out["r:a"].reason.endswith("does not match its digest")
    assert fs.cat(blob) == b"a"
    assert not [p for p in fs.find(url) if p.endswith(".part")]
    out, ran = build(tmp_path / "third", url, read_only=True)
    assert ran == []


def _predictable(name: str) -> list[str]:
    """Temporary names a writer could choose without randomness: the pid, or nothing, beside `name`."""
    pid = os.getpid()
    return [f"{name}.{pid}.part", f"{name}.part", f"{name}.{pid}.tmp", f"{name}.tmp", f".{name}.{pid}.part"]


def _plant(folder: Path, name: str, victim: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for planted in _predictable(name):
        (folder / planted).symlink_to(victim)


def test_publishing_never_writes_through_a_link_planted_at_a_predictable_temporary_name(tmp_path):
    """Whoever can write to the cache plants links where a pid-named temporary would go: publish ignores them."""
    learned = tmp_path / "learned"
    build(tmp_path / "first", learned)
    keys = [p.name for p in (learned / "actions").glob("*.json")]
    digests = [p.name for p in (learned / "blobs").glob("*/*")]
    assert len(keys) == 2 and len(digests) == 2

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    cache = tmp_path / "cache"
    for digest in digests:
        _plant(cache / "blobs" / digest[:2], digest, victim)
    for key in keys:
        _plant(cache / "actions", key, victim)
    out, ran = build(tmp_path / "second", cache)
    assert ran == ["r:a", "r:b"] and victim.read_text() == "keep"
    assert all((cache / "blobs" / d[:2] / d).read_bytes() == (learned / "blobs" / d[:2] / d).read_bytes()
               for d in digests)
    assert all(not (cache / "blobs" / d[:2] / d).is_symlink() for d in digests)
    assert {p.name: json.loads(p.read_text()) for p in (cache / "actions").glob("*.json") if not p.is_symlink()} \
        == {p.name: json.loads(p.read_text()) for p in (learned / "actions").glob("*.json")}
    out, ran = build(tmp_path / "third", cache, read_only=True)  # and what it published serves a fresh workspace
    assert ran == [] and (tmp_path / "third/out/r/b.txt").read_text() == "b|a"


def test_fetching_into_the_store_never_writes_through_a_link_planted_at_a_predictable_temporary_name(cache, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    store = tmp_path / "second" / "out" / ".buildsys" / "store"
    digests = [p.name for p in (cache / "blobs").glob("*/*")]
    for digest in digests:
        _plant(store / digest[:2], digest, victim)
    out, ran = build(tmp_path / "second", cache, read_only=True)
    assert ran == [] and {o.reason for o in out.values()} == {"fetched from the shared cache"}
    assert victim.read_text() == "keep"
    assert all(Store(store).verify(d) for d in digests)
    assert (tmp_path / "second/out/r/b.txt").read_text() == "b|a"


# -- one cache, method by method ----------------------------------------------------------------------


def _local(tmp_path: Path, data: bytes) -> tuple[Store, str]:
    """A workspace store already holding `data`'s blob."""
    store = Store(tmp_path / "store")
    src = tmp_path / "scratch"
    src.write_bytes(data)
    digest = sha(data)
    store.put(src, digest)
    return store, digest


def test_a_blob_the_local_store_holds_is_not_read_from_the_cache_unless_the_entry_lies_about_its_size(tmp_path):
    shared = SharedCache(str(tmp_path / "cache"))
    store, digest = _local(tmp_path, b"model")  # the cache holds only the external data's blob
    data = plant_blob(tmp_path / "cache", b"weights")
    assert shared.fetch({"out": [["m.onnx", digest, 5], ["m.onnx.data", data, 7]]}, store) is True
    assert store.verify(data)
    with pytest.raises(Rejected) as err:
        shared.fetch({"out": [["m.onnx", digest, 6]]}, store)
    assert str(err.value) == f"blob {digest} does not have its recorded size (6 bytes)"
    assert store.verify(digest)


def _sound(text: str) -> dict:
    return {"deps": {"dists": {"pkg": text}}, "outputs": {"out": [["a.txt", sha(text.encode()), len(text)]]},
            "verdict": None}


def test_publishing_puts_the_new_entry_first_keeps_sound_ones_of_other_deps_and_drops_the_rest(tmp_path):
    shared = SharedCache(str(tmp_path / "cache"))
    store, _ = _local(tmp_path, b"new")
    key = sha(b"step key")
    older, other = _sound("older"), _sound("other")
    (tmp_path / "cache" / "actions").mkdir(parents=True)
    new = _sound("new")
    replaced = {**_sound("replaced"), "deps": new["deps"]}  # an earlier result for the same deps
    (tmp_path / "cache" / "actions" / f"{key}.json").write_text(json.dumps([older, "not an entry", replaced, other]))
    shared.publish(key, new["deps"], new["outputs"], None, store)
    assert shared.actions(key) == [new, older, other]


def test_a_full_disk_while_fetching_names_the_store_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    from buildsys.storage import sharedcache

    shared = SharedCache(str(tmp_path / "cache"))
    digest = plant_blob(tmp_path / "cache", b"model")
    store = Store(tmp_path / "store")

    class Full:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sharedcache, "open", Full, raising=False)
    with pytest.raises(OSError) as err:
        shared.fetch({"out": [["m.onnx", digest, 5]]}, store)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(store.path(digest))
    assert os.listdir(tmp_path / "store" / digest[:2]) == []


def test_a_blob_gone_from_the_cache_is_a_plain_miss_that_leaves_no_temporary_in_the_store(tmp_path):
    shared = SharedCache(str(tmp_path / "cache"))
    store = Store(tmp_path / "store")
    digest = sha(b"model")
    assert shared.fetch({"out": [["m.onnx", digest, 5]]}, store) is False
    assert not store.has(digest) and os.listdir(tmp_path / "store" / digest[:2]) == []


def test_a_blob_fetched_from_the_cache_is_not_read_again_to_publish_it(tmp_path, monkeypatch):
    shared = SharedCache(str(tmp_path / "cache"))
    digest = plant_blob(tmp_path / "cache", b"model")
    store = Store(tmp_path / "store")
    outputs = {"out": [["m.onnx", digest, 5]]}
    assert shared.fetch(outputs, store)
    opened = []
    fs_open = shared.fs.open
    monkeypatch.setattr(shared.fs, "open", lambda path, *a, **k: opened.append(path) or fs_open(path, *a, **k))
    shared.publish(sha(b"another step with the same output"), {}, outputs, None, store)
    assert not [p for p in opened if "/blobs/" in p] and shared.uploads == 0


class _Counted:
    """A file of the cache whose reads are counted."""

    def __init__(self, f, counts: list[int]):
        self.f, self.counts = f, counts

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def read(self, n=-1):
        data = self.f.read(n)
        self.counts.append(len(data))
        return data


def test_a_blob_that_starts_with_the_right_bytes_but_goes_on_is_rejected_one_byte_past_its_size(tmp_path, monkeypatch):
    shared = SharedCache(str(tmp_path / "cache"))
    counts: list[int] = []
    fs_open = shared.fs.open
    monkeypatch.setattr(shared.fs, "open", lambda path, *a, **k: _Counted(fs_open(path, *a, **k), counts))
    model = b"m" * (1 << 20)  # a whole number of the chunks blobs are read in
    digest = sha(model)
    blob = tmp_path / "cache" / "blobs" / digest[:2] / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(model + b"and a payload appended after it")
    store = Store(tmp_path / "store")
    with pytest.raises(Rejected) as err:
        shared.fetch({"out": [["m.onnx", digest, len(model)]]}, store)
    assert str(err.value) == f"blob {digest} does not have its recorded size ({len(model)} bytes)"
    assert sum(counts) == len(model) + 1  # read no further than it takes to know
    assert not store.has(digest) and os.listdir(tmp_path / "store" / digest[:2]) == []


def _files(cache: Path, count: int) -> list[str]:
    (cache / "uses").mkdir(parents=True)
    names = [f"uses/{sha(str(i).encode())}" for i in range(count)]
    for name in names:
        (cache / name).touch()
    return names


def test_removing_files_goes_on_past_one_removed_meanwhile(tmp_path):
    shared = SharedCache(str(tmp_path / "cache"))
    names = _files(tmp_path / "cache", 5)
    os.unlink(tmp_path / "cache" / names[2])  # another `cache gc` was faster
    shared.remove_files(names)
    assert os.listdir(tmp_path / "cache" / "uses") == []


def test_an_object_store_deletes_in_requests_of_at_most_1000_keys_each_key_asked_once(monkeypatch):
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    shared = SharedCache(f"memory://buildsys-{uuid.uuid4().hex}")
    memory = shared.fs
    names = [f"uses/{sha(str(i).encode())}" for i in range(1001)]
    for name in names:
        memory.pipe_file(f"{shared.root}/{name}", b"")
    memory.rm_file(f"{shared.root}/{names[500]}")  # gone meanwhile: its request fails, its keys go one by one
    requests = []

    def delete_objects(paths, *args, **kwargs):  # a bulk delete that refuses a list naming a missing key
        assert not {p for r in requests for p in r} & set(paths), "a key asked for twice"
        requests.append(list(paths))
        gone = [p for p in paths if not memory.exists(p)]
        if gone:  # the request fails as a whole
            raise FileNotFoundError(gone[0])
        for p in paths:
            memory.rm_file(p)

    shared.fs = AsyncFileSystemWrapper(memory)  # an asynchronous filesystem, as s3:// or gs:// are
    monkeypatch.setattr(shared.fs, "rm", delete_objects)
    shared.remove_files(names)
    assert memory.find(shared.root) == []
    assert [len(r) for r in requests] == [1000, 1]
    assert [p for r in requests for p in r] == [f"{shared.root}/{n}" for n in names]


def test_a_step_key_or_digest_that_is_not_one_is_refused_before_it_becomes_a_path(tmp_path):
    shared = SharedCache(str(tmp_path / "cache"))
    store, digest = _local(tmp_path, b"model")
    with pytest.raises(ValueError, match=r"^not a step key: '\.\./k'$"):
        shared.publish("../k", {}, {"out": [["m.onnx", digest, 5]]}, None, store)
    with pytest.raises(ValueError, match=r"^not a sha256 digest: '\.\./d'$"):
        shared.has_blobs({"out": [["m.onnx", "../d", 5]]})
    assert shared.actions("../k") == []
    assert not (tmp_path / "cache" / "actions").exists()


def test_an_action_file_is_read_up_to_its_limit_and_one_byte_more(monkeypatch):
    from buildsys.storage.sharedcache import MAX_ACTION_BYTES

    shared = SharedCache(f"memory://buildsys-{uuid.uuid4().hex}")
    key = sha(b"key")
    entry = [_sound("a")]
    text = json.dumps(entry).encode()
    shared.fs.pipe_file(f"{shared.root}/actions/{key}.json", text + b" " * (MAX_ACTION_BYTES - len(text)))
    assert shared.actions(key) == entry  # exactly at the limit: read
    shared.fs.pipe_file(f"{shared.root}/actions/{key}.json", text + b" " * (MAX_ACTION_BYTES + 1000 - len(text)))
    counts: list[int] = []
    fs_open = shared.fs.open
    monkeypatch.setattr(shared.fs, "open", lambda path, *a, **k: _Counted(fs_open(path, *a, **k), counts))
    assert shared.actions(key) == [] and sum(counts) == MAX_ACTION_BYTES + 1  # over it: a miss, read no further
    shared.fs.pipe_file(f"{shared.root}/actions/{key}.json", json.dumps({"not": "a list"}).encode())
    assert shared.actions(key) == []


def test_publishing_keeps_at_most_16_entries_per_key_dropping_the_oldest(tmp_path):
    shared = SharedCache(str(tmp_path / "cache"))
    store, _ = _local(tmp_path, b"new")
    key = sha(b"step key")
    old = [_sound(f"old {i}") for i in range(16)]
    (tmp_path / "cache" / "actions").mkdir(parents=True)
    (tmp_path / "cache" / "actions" / f"{key}.json").write_text(json.dumps(old))
    new = _sound("new")
    shared.publish(key, new["deps"], new["outputs"], None, store)
    assert shared.actions(key) == [new, *old[:15]]


def test_publishing_uploads_only_the_blobs_the_cache_lacks_or_holds_damaged_readable_by_all(tmp_path, monkeypatch):
    shared = SharedCache(str(tmp_path / "cache"))
    store, intact = _local(tmp_path, b"intact")
    _, missing = _local(tmp_path, b"missing")
    _, short = _local(tmp_path, b"damaged to a shorter length")
    _, same_size = _local(tmp_path, b"damaged at its size")
    cache = tmp_path / "cache"
    plant_blob(cache, b"intact")
    inode = (cache / "blobs" / intact[:2] / intact).stat().st_ino
    for digest, bad in ((short, b"short"), (same_size, b"damaged at its SIZE")):
        (cache / "blobs" / digest[:2]).mkdir(parents=True, exist_ok=True)
        (cache / "blobs" / digest[:2] / digest).write_bytes(bad)
    outputs = {"out": [["m.onnx", intact, 6], ["m.onnx.data", missing, 7]],
               "log": [["a.log", short, 27]], "table": [["t.csv", same_size, 19]]}
    shared.publish_blobs(outputs, store)
    assert (cache / "blobs" / intact[:2] / intact).stat().st_ino == inode  # intact: left as it was
    for digest in (missing, short, same_size):
        blob = cache / "blobs" / digest[:2] / digest
        assert blob.read_bytes() == store.path(digest).read_bytes()
        assert stat.S_IMODE(blob.stat().st_mode) == 0o644 & ~_umask()
    assert shared.uploads == 3
    opened = []
    fs_open = shared.fs.open
    monkeypatch.setattr(shared.fs, "open", lambda path, *a, **k: opened.append(path) or fs_open(path, *a, **k))
    shared.publish_blobs(outputs, store)  # what this process wrote is not read back again
    assert opened == [f"{shared.root}/blobs/{intact[:2]}/{intact}"] and shared.uploads == 3


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_upload_the_disk_refuses_names_the_blob_and_leaves_no_temporary(tmp_path, monkeypatch):
    import builtins
    import errno

    from buildsys.storage import sharedcache

    shared = SharedCache(str(tmp_path / "cache"))
    store, digest = _local(tmp_path, b"model")

    def full_disk_open(file, mode="r", *args, **kwargs):
        if mode == "wb":
            os.close(file)
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(sharedcache, "open", full_disk_open, raising=False)
    with pytest.raises(OSError) as err:
        shared.publish_blobs({"out": [["m.onnx", digest, 5]]}, store)
    blob = tmp_path / "cache" / "blobs" / digest[:2] / digest
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(blob)
    assert os.listdir(blob.parent) == []


def test_a_cache_folder_is_made_with_its_parents_and_named_absolute_and_a_url_is_left_to_fsspec(tmp_path, monkeypatch):
    from buildsys.storage.sharedcache import open_cache

    monkeypatch.chdir(tmp_path)
    shared = open_cache("team/caches/cache", read_only=True)
    assert (tmp_path / "team/caches/cache").is_dir() and shared.url == str(tmp_path / "team/caches/cache")
    assert shared.read_only and shared.local
    url = f"memory://buildsys-{uuid.uuid4().hex}"
    shared = open_cache(url, read_only=False)
    assert shared.url == url and not shared.read_only and not shared.local and os.listdir(tmp_path) == ["team"]
    assert open_cache("", read_only=False) is None and open_cache(None, read_only=False) is None
