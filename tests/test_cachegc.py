"""cache stats and cache gc on the local store and on shared caches, driven by counting steps."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from datetime import UTC
from pathlib import Path

import pytest

from buildsys.core.canonical import digest_data
from buildsys.engine.workspace import Workspace
from buildsys.recipe.resolve import with_facts
from buildsys.storage import cachegc
from buildsys.storage.sharedcache import SharedCache, open_cache
from buildsys.storage.state import State, WorkspaceLock
from buildsys.storage.store import Store
from tests.fakes import build_graph
from tests.test_rebuilder import build, chain


def _open(root: Path):
    ws = Workspace(root)
    return State(ws.meta), Store(ws.meta / "store")


def collect(root: Path, max_size=None, max_age=None, current=None):
    state, store = _open(root)
    current = set(chain().steps) if current is None else current
    done = cachegc.collect_local(state, store, current, max_size, max_age)
    state.close()
    return done


def stats(root: Path, current=None) -> dict:
    state, store = _open(root)
    current = set(chain().steps) if current is None else current
    inv = cachegc.local_inventory(state, store, current)
    s = cachegc.stats_json(inv, cachegc.current_digests(state, current))
    state.close()
    return s


@pytest.fixture
def ws(tmp_path):
    return tmp_path


# -- local store ---------------------------------------------------------------------------


def test_last_use_is_stamped_when_a_step_leaves_a_key_and_not_by_a_no_op(ws):
    build(ws, chain(text_c="c1"))
    state, _ = _open(ws)
    old_key = state.traces()["r:c"].key
    state.close()
    before = time.time()
    build(ws, chain(text_c="c2"))
    state, _ = _open(ws)
    uses = dict(state.db.execute("SELECT key, used FROM action_uses"))
    state.close()
    assert uses[old_key] >= before  # in use until the step moved off it
    out, ran = build(ws, chain(text_c="c2"))
    assert ran == []
    state, _ = _open(ws)
    assert dict(state.db.execute("SELECT key, used FROM action_uses")) == uses  # a no-op writes nothing
    state.close()


def test_stats_count_entries_blobs_and_what_the_current_recipes_use(ws):
    build(ws, chain(text_c="c1"))
    build(ws, chain(text_c="c2"))
    s = stats(ws)
    assert s["entries"] == 5  # a, b, d, and c twice
    assert s["blobs"] == 5
    store = Store(Workspace(ws).meta / "store")
    assert s["bytes"] == store.size()
    assert s["reachable"]["blobs"] == 4 and s["reachable"]["bytes"] < s["bytes"]
    assert s["oldest_use"] <= s["newest_use"] <= time.time()


def test_gc_to_zero_keeps_the_current_build_and_drops_the_rest(ws):
    build(ws, chain(text_c="c1"))
    build(ws, chain(text_c="c2"))
    done = collect(ws, max_size=0)
    assert done["removed"]["entries"] == 1 and done["removed"]["blobs"] == 1
    assert done["kept"]["protected_entries"] == 4
    assert not done["fits"]  # the current build alone is over 0 bytes, and is kept
    out, ran = build(ws, chain(text_c="c2"))
    assert ran == []  # nothing the current recipes use was removed
    out, ran = build(ws, chain(text_c="c1"))
    assert ran == ["r:c"]  # its entry was collected: it runs again instead of being restored
    assert (ws / "out/r/c.txt").read_text() == "c1|b|a"


def test_gc_removes_least_recently_used_first_until_the_cache_fits(ws):
    for text in ("c1", "c2", "c3", "c4"):
        build(ws, chain(text_c=text))
    # c1, c2 and c3 are old entries, c1 the least recently used; room for one of them
    s = stats(ws)
    one = len("c3|b|a")
    done = collect(ws, max_size=s["reachable"]["bytes"] + one)
    assert done["removed"]["entries"] == 2 and done["fits"]
    _, ran = build(ws, chain(text_c="c3"))
    assert ran == []  # the most recent old entry is restored
    _, ran = build(ws, chain(text_c="c2"))
    assert ran == ["r:c"]
    _, ran = build(ws, chain(text_c="c1"))
    assert ran == ["r:c"]


def test_gc_goes_by_last_use_not_by_creation(ws):
    """d1 is created first and used longest (the current build kept it until d2); c2 came later, left sooner."""
    for text_c, extra in (("c1", "d1"), ("c2", "d1"), ("c3", "d1"), ("c3", "d2"), ("c4", "d2")):
        build(ws, chain(text_c=text_c, extra=extra))
    # old entries, least recently used first: c1, c2, d1, c3 (created: c1 and d1 first); room for d1 and c3
    s = stats(ws)
    done = collect(ws, max_size=s["reachable"]["bytes"] + len("d1") + len("c3|b|a"))
    assert done["removed"]["entries"] == 2 and done["fits"]
    _, ran = build(ws, chain(text_c="c3", extra="d1"))
    assert ran == []  # both restored: d1, the oldest created, was used until recently
    _, ran = build(ws, chain(text_c="c2", extra="d1"))
    assert ran == ["r:c"]


def test_max_age_removes_entries_unused_for_that_long_even_when_the_cache_fits(ws):
    build(ws, chain(text_c="c1"))
    state, _ = _open(ws)
    c1 = state.traces()["r:c"].key
    state.close()
    build(ws, chain(text_c="c2"))
    build(ws, chain(text_c="c3"))
    state, _ = _open(ws)
    month = time.time() - 30 * 86400  # c1 was last used a month ago
    with state.transaction():
        state.db.execute("UPDATE action_uses SET used = ? WHERE key = ?", (month, c1))
        state.db.execute("UPDATE actions SET created = ? WHERE key = ?", (month, c1))
    state.close()
    done = collect(ws, max_size=10**9, max_age=7)
    assert done["removed"]["entries"] == 1
    _, ran = build(ws, chain(text_c="c2"))
    assert ran == []  # a recent entry stays
    _, ran = build(ws, chain(text_c="c1"))
    assert ran == ["r:c"]


def test_steps_of_removed_recipes_are_not_protected(ws):
    build(ws, chain())
    current = set(chain().steps) - {"s:d"}  # recipe s is gone from the workspace
    done = collect(ws, max_size=0, current=current)
    assert done["removed"]["entries"] == 1
    state, _ = _open(ws)
    assert "s:d" not in state.traces()  # its last build is forgotten with its entry
    state.close()


def test_unknown_current_recipes_protect_every_last_build(ws):
    build(ws, chain())
    state, store = _open(ws)
    done = cachegc.collect_local(state, store, None, 0, None)
    state.close()
    assert done["removed"]["entries"] == 0 and done["kept"]["protected_entries"] == 4


def test_orphan_blobs_are_removed(ws):
    build(ws, chain())
    store = Store(Workspace(ws).meta / "store")
    stray = ws / "stray"
    stray.write_text("left by an interrupted build")
    digest = hashlib.sha256(stray.read_bytes()).hexdigest()
    store.put(stray, digest)
    done = collect(ws, max_size=10**9)
    assert done["removed"] == {**done["removed"], "entries": 0, "blobs": 1}
    assert not store.has(digest)


def test_gc_waits_for_a_running_build_and_the_build_finishes_intact(ws):
    """A build holds the workspace lock for its whole run; gc takes it too, so it runs after."""
    build(ws, chain(text_c="c1"))
    graph = chain(text_c="c2")
    graph.steps["r:c"] = with_facts(dataclasses.replace(graph.steps["r:c"], kind_path="tests.fakes:Timed"))
    graph.steps["r:c"].params["sleep"] = 1.0
    order = []

    def building():
        with WorkspaceLock(Workspace(ws).meta):
            build_graph(ws, graph)
            order.append("build")

    def collecting():
        time.sleep(0.3)
        w = Workspace(ws)
        with WorkspaceLock(w.meta):
            order.append(("gc", collect(ws, max_size=0)))

    threads = [threading.Thread(target=building), threading.Thread(target=collecting)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order[0] == "build"
    assert order[1][1]["removed"]["entries"] == 1  # c1's entry, after c2 was recorded
    assert (ws / "out/r/c.txt").read_text() == "c2|b|a"
    _, ran = build(ws, graph)
    assert ran == []


# -- shared caches -------------------------------------------------------------------------


def _entry(cache: SharedCache, tmp: Path, text: str) -> tuple[str, dict]:
    """Publish one entry holding one blob of `text`; returns its key and outputs."""
    store = Store(tmp / "pub-store")
    src = tmp / f"src-{os.getpid()}-{threading.get_ident()}"
    src.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    store.put(src, digest)
    outputs = {"out": [["f.txt", digest, len(text)]]}
    key = digest_data(["entry", text])
    cache.publish(key, {}, outputs, None, store)
    return key, outputs


@pytest.fixture(params=["folder", "memory"])
def shared(request, tmp_path):
    if request.param == "folder":
        (tmp_path / "cache").mkdir()
        yield open_cache(str(tmp_path / "cache"), False)
        return
    url = f"memory://buildsys-test-{time.time_ns()}"
    yield open_cache(url, False)
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_shared_stats_and_gc_least_recently_used_first(shared, tmp_path):
    keys = []
    for i in range(4):
        keys.append(_entry(shared, tmp_path, f"blob number {i}")[0])
        time.sleep(0.02)
    shared.record_use(keys[0])  # the oldest entry was just hit: now it is the most recent
    s = cachegc.stats_json(cachegc.shared_inventory(shared), None)
    assert s["entries"] == 4 and s["blobs"] == 4
    one = s["bytes"] // 4 + 64
    done = cachegc.collect_shared(shared, 2 * one, None, grace_minutes=0)
    assert done["removed"]["entries"] == 2 and done["removed"]["blobs"] == 2 and done["fits"]
    left = {k for k in keys if shared.actions(k)}
    assert left == {keys[0], keys[3]}
    for k in left:
        store = Store(tmp_path / f"reader-{k[:6]}")
        assert shared.fetch(shared.actions(k)[0]["outputs"], store)
    after = cachegc.stats_json(cachegc.shared_inventory(shared), None)
    assert after["entries"] == 2 and after["blobs"] == 2


def test_shared_blobs_of_a_publish_in_flight_are_never_collected(shared, tmp_path):
    store = Store(tmp_path / "pub")
    src = tmp_path / "artifact"
    src.write_text("being published")
    digest = hashlib.sha256(b"being published").hexdigest()
    store.put(src, digest)
    outputs = {"out": [["a.txt", digest, 15]]}
    shared.publish_blobs(outputs, store)  # blobs first; the action is not written yet
    done = cachegc.collect_shared(shared, 0, None)  # default grace period
    assert done["removed"]["blobs"] == 0 and done["kept"]["young_blobs"] == 1
    shared.publish(digest_data("key"), {}, outputs, None, store)  # the action, last
    assert shared.fetch(outputs, Store(tmp_path / "reader"))
    done = cachegc.collect_shared(shared, 0, None, grace_minutes=0)
    assert done["removed"] == {**done["removed"], "entries": 1, "blobs": 1}
    assert not shared.has_blobs(outputs)


def test_shared_max_age_and_stale_uploads(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    shared = open_cache(str(folder), False)
    old_key, _ = _entry(shared, tmp_path, "old")
    new_key, _ = _entry(shared, tmp_path, "new")
    month = time.time() - 30 * 86400
    os.utime(folder / "actions" / f"{old_key}.json", (month, month))
    stale = folder / "blobs" / "ab" / f"{'ab' * 32}.123.part"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (month, month))
    fresh = folder / "blobs" / "cd" / f"{'cd' * 32}.456.part"
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"y")
    done = cachegc.collect_shared(shared, None, 7)
    assert done["removed"]["entries"] == 1 and done["removed"]["other_files"] == 1
    assert not shared.actions(old_key) and shared.actions(new_key)
    assert not stale.exists() and fresh.exists()  # an upload in progress is left alone


def test_a_hit_from_the_shared_cache_stamps_its_use_unless_read_only(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    first = tmp_path / "first"
    first.mkdir()
    _build_with(first, open_cache(str(cache_dir), False))
    assert not (cache_dir / "uses").exists()  # publishing is not a hit; the entry's own time says when
    reader = tmp_path / "reader"
    reader.mkdir()
    _build_with(reader, open_cache(str(cache_dir), True))
    assert not (cache_dir / "uses").exists()  # read-only writes nothing
    second = tmp_path / "second"
    second.mkdir()
    out = _build_with(second, open_cache(str(cache_dir), False))
    assert {o.reason for o in out.values()} == {"fetched from the shared cache"}
    assert len(list((cache_dir / "uses").iterdir())) == 4


def _build_with(root: Path, shared: SharedCache):
    return build_graph(root, chain(), shared=shared)[0]


def test_gc_beside_publishers_and_readers_never_serves_a_partial_entry(tmp_path):
    """Aggressive collection (size 0, no grace) while entries are published and restored.

    Every restore either gets all of an entry's blobs, verified, or misses; nothing raises.
    """
    folder = tmp_path / "cache"
    folder.mkdir()
    url = str(folder)
    stop = threading.Event()
    errors: list[BaseException] = []
    outcomes = {"hit": 0, "miss": 0, "gc": 0}
    published: list[tuple[str, dict]] = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
        return run

    @guard
    def publisher():
        cache = open_cache(url, False)
        i = 0
        while not stop.is_set():
            published.append(_entry(cache, tmp_path, f"payload {i} " + "z" * (i % 50)))
            i += 1

    @guard
    def reader():
        cache = open_cache(url, False)
        n = 0
        while not stop.is_set():
            for key, _outputs in list(published[-20:]):
                store = Store(tmp_path / f"r{n}")
                n += 1
                entries = cache.actions(key)
                if entries and cache.fetch(entries[0]["outputs"], store):
                    for files in entries[0]["outputs"].values():
                        for _, digest, _ in files:
                            assert store.verify(digest)
                    outcomes["hit"] += 1
                else:
                    outcomes["miss"] += 1

    @guard
    def collector():
        cache = open_cache(url, False)
        while not stop.is_set():
            cachegc.collect_shared(cache, 0, None, grace_minutes=0)
            outcomes["gc"] += 1

    threads = [threading.Thread(target=f) for f in (publisher, reader, collector)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert outcomes["gc"] > 3 and outcomes["hit"] + outcomes["miss"] > 20


def test_gc_with_a_grace_period_beside_publishers_leaves_every_entry_whole(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    url = str(folder)
    stop = threading.Event()
    errors: list[BaseException] = []

    published: list[dict] = []

    def publisher():
        cache = open_cache(url, False)
        i = 0
        try:
            while not stop.is_set():
                published.append(_entry(cache, tmp_path, f"payload {i}")[1])
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def collector():
        cache = open_cache(url, False)
        try:
            while not stop.is_set():
                cachegc.collect_shared(cache, 0, None)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publisher), threading.Thread(target=collector)]
    for t in threads:
        t.start()
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    cache = open_cache(url, False)
    assert len(published) > 10
    assert all(cache.has_blobs(outputs) for outputs in published)  # every blob is younger than the grace
    for action in (folder / "actions").glob("*.json"):
        assert cache.has_blobs(cache.actions(action.name[:-5])[0]["outputs"])


def test_an_entry_published_during_gc_keeps_the_blobs_it_names(shared, tmp_path):
    """The blob is unnamed when gc lists the entries; a build names it before gc removes blobs."""
    store = Store(tmp_path / "pub")
    src = tmp_path / "artifact"
    src.write_text("reused bytes")
    digest = hashlib.sha256(b"reused bytes").hexdigest()
    store.put(src, digest)
    outputs = {"out": [["a.txt", digest, 12]]}
    shared.publish_blobs(outputs, store)  # an orphan blob, left by an earlier collection
    at = time.time()
    inv = cachegc.shared_inventory(shared)
    p = cachegc.plan(inv, 0, None, at, 0.0)
    assert p.remove_blobs == [digest]
    shared.publish(digest_data("a build publishing now"), {}, outputs, None, store)  # the blob exists: not re-sent
    done = cachegc.apply_shared(p, inv, shared, at, 0.0)
    assert done.remove_blobs == [] and done.kept_blobs == 1
    assert shared.has_blobs(outputs)
    assert shared.fetch(shared.actions(digest_data("a build publishing now"))[0]["outputs"],
                        Store(tmp_path / "reader"))


def test_entries_without_times_go_first_for_size_but_never_for_age():
    now = time.time()
    blobs = {f"{i:064x}": cachegc.Blob(100, now - 10 * 86400) for i in range(3)}
    names = sorted(blobs)
    entries = {
        "k-none": cachegc.Entry("k-none", frozenset([names[0]]), None),
        "k-old": cachegc.Entry("k-old", frozenset([names[1]]), now - 30 * 86400),
        "k-new": cachegc.Entry("k-new", frozenset([names[2]]), now - 60),
    }
    inv = cachegc.Inventory("test", "shared", entries, blobs)
    by_age = cachegc.plan(inv, None, 7, now)
    assert [e.key for e in by_age.evict] == ["k-old"]
    by_size = cachegc.plan(inv, 150, None, now)
    assert [e.key for e in by_size.evict] == ["k-none", "k-old"] and by_size.fits


def test_listed_times_are_read_from_whichever_field_a_filesystem_fills():
    from datetime import datetime

    t = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert cachegc._when({"mtime": t.timestamp()}) == t.timestamp()  # local folders
    assert cachegc._when({"LastModified": t}) == t.timestamp()  # s3
    assert cachegc._when({"updated": "2026-11-01T12:00:00Z"}) == t.timestamp()  # gcs
    assert cachegc._when({"created": t.replace(tzinfo=None)}) == t.timestamp()  # memory, naive UTC
    assert cachegc._when({"size": 3}) is None
