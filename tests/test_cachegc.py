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


# -- known inventories: what gc decides and what a user reads -------------------------------

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
DAY = 86400.0


def _d(c: str) -> str:
    return c * 64


class FakeState:
    def __init__(self, actions=(), traces=(), uses=()):
        from buildsys.storage.state import Inventory as Recorded

        self.recorded = Recorded(list(actions), list(traces), list(uses))
        self.evicted: list[set[str]] = []

    def inventory(self):
        return self.recorded

    def evict(self, keys):
        self.evicted.append(set(keys))


class FakeStore:
    def __init__(self, root: Path):
        self.root = root
        self.removed: list[str] = []

    def remove(self, digest):
        self.removed.append(digest)


class FakeCache:
    """A shared cache in a dict: name -> (bytes or None when it vanishes before it is read, info)."""

    url = "memory://fake"

    def __init__(self, files):
        self.files = dict(files)
        self.removed: list[list[str]] = []
        self.read: list[list[str]] = []

    def listing(self, folder):
        return {n: info for n, (_, info) in self.files.items() if n.startswith(folder + "/")}

    def read_files(self, names):
        self.read.append(list(names))
        return {n: self.files[n][0] for n in names if n in self.files and self.files[n][0] is not None}

    def remove_files(self, names):
        self.removed.append(list(names))
        for n in names:
            self.files.pop(n, None)


def _outputs(*digests: str) -> dict:
    return {"out": [[f"f{i}", d, 1] for i, d in enumerate(digests)]}


def _action(*digests: str) -> bytes:
    import json

    return json.dumps([{"deps": {}, "outputs": _outputs(*digests), "verdict": None}]).encode()


def _known() -> cachegc.Inventory:
    """Five entries of 10 bytes (one 40 days old, one without times, the rest recent), eight blobs, three debris."""
    E, B = cachegc.Entry, cachegc.Blob
    entries = {
        "k1": E("k1", frozenset([_d("a")]), NOW - 40 * DAY, 10),
        "k2": E("k2", frozenset([_d("b"), _d("c")]), NOW - 3 * DAY, 10),
        "k3": E("k3", frozenset([_d("c")]), NOW - 2 * DAY, 10),
        "k4": E("k4", frozenset([_d("d")]), None, 10),
        "k5": E("k5", frozenset([_d("e")]), NOW - 1 * DAY, 10),
    }
    old = NOW - 10 * DAY
    blobs = {_d("a"): B(100, old), _d("b"): B(200, old), _d("c"): B(300, old), _d("d"): B(400, old),
             _d("e"): B(500, old),
             _d("f"): B(600, NOW - DAY),  # named by no entry, older than the grace period
             _d("9"): B(700, NOW - 60),  # named by no entry, young
             _d("8"): B(50, None)}  # named by no entry, no time: never known to be old
    debris = {"blobs/ab/x.part": B(5, NOW - 2 * DAY), "blobs/cd/y.part": B(7, NOW - 100),
              "actions/junk": B(3, None)}
    return cachegc.Inventory("memory://known", "shared", entries, blobs, debris)


def test_plan_by_age_then_by_size_on_a_known_inventory():
    inv = _known()
    assert inv.size == 2900
    p = cachegc.plan(inv, 1500, 7, NOW, 3600.0)
    # k1 is older than 7 days; then least recently used first (k4 has no time) until 1500 bytes fit;
    # c goes only with k3, the last entry naming it
    assert [e.key for e in p.evict] == ["k1", "k4", "k2", "k3"]
    assert p.remove_blobs == sorted([_d("a"), _d("b"), _d("c"), _d("d"), _d("f")])
    assert p.remove_debris == ["blobs/ab/x.part"]  # a day old; the others are young or have no time
    assert (p.removed_bytes, p.kept_bytes, p.kept_entries, p.kept_blobs) == (1645, 1260, 1, 3)
    assert (p.protected_entries, p.protected_bytes, p.young_blobs, p.young_bytes) == (0, 0, 2, 750)
    assert p.fits and (p.max_size, p.max_age_days) == (1500, 7)
    assert cachegc.plan_json(p, True) == {
        "dry_run": True, "max_size": 1500, "max_age_days": 7, "fits": True,
        "removed": {"entries": 4, "blobs": 5, "other_files": 1, "bytes": 1645,
                    "last_used_from": NOW - 40 * DAY, "last_used_to": NOW - 2 * DAY},
        "kept": {"entries": 1, "blobs": 3, "bytes": 1260, "protected_entries": 0, "protected_bytes": 0,
                 "young_blobs": 2, "young_bytes": 750}}


def test_plan_without_limits_removes_only_old_unnamed_blobs_and_old_debris():
    p = cachegc.plan(_known(), None, None, NOW, 3600.0)
    assert p.evict == [] and p.remove_blobs == [_d("f")] and p.remove_debris == ["blobs/ab/x.part"]
    assert (p.removed_bytes, p.kept_bytes, p.kept_entries, p.kept_blobs) == (605, 2300, 5, 7)
    assert p.fits
    nograce = cachegc.plan(_known(), None, None, NOW)  # without a grace period every unnamed blob goes
    assert nograce.remove_blobs == sorted([_d("f"), _d("9"), _d("8")])
    assert (nograce.young_blobs, nograce.young_bytes, nograce.kept_bytes) == (0, 0, 1550)


def test_plan_stops_as_soon_as_the_cache_fits_exactly():
    inv = _known()
    p = cachegc.plan(inv, 2300 - 410, None, NOW, 3600.0)  # k4 (410 bytes) is the first to go
    assert [e.key for e in p.evict] == ["k4"] and p.kept_bytes == 1890 and p.fits
    p = cachegc.plan(inv, 1889, None, NOW, 3600.0)
    assert [e.key for e in p.evict] == ["k4", "k1"] and p.kept_bytes == 1780


def test_plan_age_and_grace_boundaries():
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.Inventory("x", "shared", {
        "edge": E("edge", frozenset([_d("a")]), NOW - 7 * DAY, 1),  # exactly 7 days: not older
        "past": E("past", frozenset([_d("b")]), NOW - 7 * DAY - 1, 1)},
        {_d("a"): B(10, NOW - 3600), _d("b"): B(20, NOW - 3600), _d("c"): B(40, NOW - 3600),
         _d("e"): B(80, NOW - 3599)},
        {"blobs/x.part": B(1, NOW - cachegc.UPLOAD_MAX_S), "blobs/y.part": B(2, NOW - cachegc.UPLOAD_MAX_S + 1)})
    p = cachegc.plan(inv, None, 7, NOW, 3600.0)
    assert [e.key for e in p.evict] == ["past"]
    assert p.remove_blobs == [_d("b"), _d("c")]  # written exactly one grace period ago: old enough
    assert (p.young_blobs, p.young_bytes) == (1, 80)
    assert p.remove_debris == ["blobs/x.part"]
    assert [e.key for e in cachegc.plan(inv, 0, 7, NOW, 3600.0).evict] == ["past", "edge"]  # then by size
    # a grace period longer than a day holds debris too
    assert cachegc.plan(inv, None, None, NOW, cachegc.UPLOAD_MAX_S + 1).remove_debris == []
    assert cachegc.plan(inv, None, None, NOW, cachegc.UPLOAD_MAX_S - 1).remove_debris == ["blobs/x.part"]
    just = cachegc.Inventory("x", "shared", {}, {_d("a"): B(10, NOW - 0.5)})  # written half a second ago
    assert cachegc.plan(just, 0, None, NOW, 1.0).remove_blobs == []
    assert cachegc.plan(just, 0, None, NOW, 0.25).remove_blobs == [_d("a")]


def test_plan_never_removes_what_the_current_build_uses():
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.Inventory("x", "local", {
        "cur": E("cur", frozenset([_d("a"), _d("b")]), NOW - 400 * DAY, 0, True),
        "cur2": E("cur2", frozenset([_d("c")]), None, 0, True),
        "old": E("old", frozenset([_d("b"), _d("d")]), NOW - 400 * DAY)},
        {_d("a"): B(10, None), _d("b"): B(20, None), _d("c"): B(40, None), _d("d"): B(80, None)})
    p = cachegc.plan(inv, 0, 1, NOW)
    assert [e.key for e in p.evict] == ["old"] and p.remove_blobs == [_d("d")]
    assert (p.kept_bytes, p.kept_entries, p.kept_blobs) == (70, 2, 3)
    assert (p.protected_entries, p.protected_bytes) == (2, 70)
    assert not p.fits
    assert cachegc.plan(inv, 70, None, NOW).fits


def test_local_inventory_reads_rows_traces_stamps_and_the_store(tmp_path):
    import json

    root = tmp_path / "meta" / "store"
    for digest, size, mtime in ((_d("a"), 3, 1000.0), (_d("b"), 4, 2000.0)):
        (root / digest[:2]).mkdir(parents=True, exist_ok=True)
        (root / digest[:2] / digest).write_bytes(b"x" * size)
        os.utime(root / digest[:2] / digest, (mtime, mtime))
    (root / "aa" / _d("b")).write_bytes(b"misfiled")  # under another digest's folder
    (root / "aa" / "notes").write_bytes(b"?")
    (root / "abc").mkdir()
    (root / "abc" / _d("a")).write_bytes(b"?")
    (root / "cc").write_bytes(b"a file, not a folder")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / _d("d")).write_bytes(b"outside")
    (root / "dd").symlink_to(tmp_path / "elsewhere")
    (root / "ee").mkdir()
    many = [f"{i:02x}" + "0" * 62 for i in range(16, 48)]  # whatever order the folder lists them in
    for digest in many:
        (root / digest[:2]).mkdir()
        (root / digest[:2] / digest).write_bytes(b"y" * 9)
        os.utime(root / digest[:2] / digest, (3000.0, 3000.0))
        (root / digest[:2] / "x").write_bytes(b"not a blob")
        (root / f"{digest[:2]}z").mkdir()
    (root / "ee" / _d("e")).symlink_to(tmp_path / "elsewhere" / _d("d"))
    out = lambda *ds: json.dumps(_outputs(*ds))  # noqa: E731
    state = FakeState(
        actions=[("k1", out(_d("a")), 100.0), ("k2", out(_d("b")), 200.0), ("k3", "", 50.0),
                 ("k5", "not json", 60.0)],
        traces=[("r:a", "k1", out(_d("a")), 150.0), ("r:b", "k2", out(_d("b")), 180.0),
                ("gone:x", "k4", out(_d("c")), 120.0), ("r:z", "k6", out(_d("e")), None)],
        uses=[("k1", 300.0), ("k2", 150.0), ("k6", 400.0), ("k9", 999.0)])
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.local_inventory(state, Store(root), {"r:a", "r:c"})
    assert inv == cachegc.Inventory(str(tmp_path / "meta"), "local", {
        "k1": E("k1", frozenset([_d("a")]), 300.0, 0, True),
        "k2": E("k2", frozenset([_d("b")]), 200.0, 0, False),
        "k3": E("k3", frozenset(), 50.0, 0, False),
        "k5": E("k5", frozenset(), 60.0, 0, False),
        "k4": E("k4", frozenset([_d("c")]), 120.0, 0, False),
        "k6": E("k6", frozenset([_d("e")]), 400.0, 0, False),
    }, {**{d: B(9, 3000.0) for d in many}, _d("a"): B(3, 1000.0), _d("b"): B(4, 2000.0)})
    everything = cachegc.local_inventory(state, Store(root), None)  # current recipes unknown
    assert {k for k, e in everything.entries.items() if e.protected} == {"k1", "k2", "k4", "k6"}
    assert cachegc.local_inventory(FakeState(), Store(tmp_path / "none"), set()).blobs == {}
    assert cachegc.current_digests(state, {"r:b", "gone:x"}) == {_d("b"), _d("c")}
    assert cachegc.current_digests(state, None) == {_d("a"), _d("b"), _d("c"), _d("e")}
    assert cachegc.reachable(inv, {_d("a"), _d("b"), _d("c")}) == (2, 7)


def test_shared_inventory_sorts_entries_blobs_and_debris():
    a, b, k1, k2, k3, k4 = _d("a"), _d("b"), _d("1"), _d("2"), _d("3"), _d("4")
    cache = FakeCache({
        f"blobs/aa/{a}": (b"aaa", {"size": 3, "mtime": 10.0}),
        f"blobs/bb/{b}": (b"bbbb", {"size": 4, "mtime": 20.0}),
        f"blobs/bb/{a}": (b"?", {"size": 1, "mtime": 30.0}),  # misfiled
        f"blobs/{a}": (b"?", {"size": 2, "mtime": 40.0}),  # no folder
        f"blobs/aa/{a}.tmp1": (b"?", {"size": None, "mtime": 50.0}),  # an upload in progress
        f"actions/{k4}.json": (None, {"size": 400, "mtime": 4000.0}),  # removed before it is read
        f"actions/{k1}.json": (_action(a), {"size": 100, "mtime": 1000.0}),
        f"actions/{k2}.json": (_action(a, b), {"size": 200, "mtime": 2000.0}),
        f"actions/{k3}.json": (b"\xff not text", {"size": None, "mtime": 3000.0}),
        "actions/junk.txt": (b"?", {"size": None}),
        f"actions/{_d('5')}.yaml": (b"?", {"size": 8, "mtime": 80.0}),
        f"actions/x/{k1}.json": (b"?", {"size": 6, "mtime": 60.0}),
        f"actions/{k1}": (b"?", {"size": 7, "mtime": 70.0}),
        f"uses/{k1}": (b"", {"size": 0, "mtime": 500.0}),  # older than its entry's write
        f"uses/{k2}": (b"", {"size": 0, "mtime": 2500.0}),
        "uses/junk": (b"", {"size": 0, "mtime": 9000.0}),
    })
    E, B = cachegc.Entry, cachegc.Blob
    assert cachegc.shared_inventory(cache) == cachegc.Inventory("memory://fake", "shared", {
        k1: E(k1, frozenset([a]), 1000.0, 100, written=1000.0),
        k2: E(k2, frozenset([a, b]), 2500.0, 200, written=2000.0),
        k3: E(k3, frozenset(), 3000.0, 0, written=3000.0),
    }, {a: B(3, 10.0), b: B(4, 20.0)}, {
        f"blobs/bb/{a}": B(1, 30.0), f"blobs/{a}": B(2, 40.0), f"blobs/aa/{a}.tmp1": B(0, 50.0),
        "actions/junk.txt": B(0, None), f"actions/x/{k1}.json": B(6, 60.0), f"actions/{k1}": B(7, 70.0),
        f"actions/{_d('5')}.yaml": B(8, 80.0)})


def test_digests_of_malformed_entries_and_outputs():
    a = _d("a")
    assert cachegc._entry_digests(b"\xff") == set()
    assert cachegc._entry_digests(b"{not json") == set()
    assert cachegc._entry_digests(b"3") == set() and cachegc._entry_digests(b"null") == set()
    assert cachegc._entry_digests(_action(a)[:-1] + b", " + _action(_d("b"))[1:]) == {a, _d("b")}
    assert cachegc._entry_digests(b'{"outputs": {"o": [["f", "' + a.encode() + b'"]]}}') == set()  # not a list
    assert cachegc._entry_digests(b'[1, {"deps": {}}, {"outputs": {"o": [["f", "' + a.encode() + b'"]]}}]') == {a}
    assert cachegc._digests(None) == set() and cachegc._digests([["f", a]]) == set()
    assert cachegc._digests({"o": "f", "n": 3, "p": [["f"], "x", ["f", 3], ["f", a.upper()], ["f", a[:-1]],
                                             ["f", a], ["g", _d("b"), 9, "more"]]}) == {a, _d("b")}
    assert cachegc._loads(None) is None and cachegc._loads("") is None and cachegc._loads("[1") is None
    assert cachegc._loads("[1]") == [1]


def test_listed_times_first_field_wins_and_unreadable_ones_are_skipped():
    assert cachegc._when({"mtime": 1, "created": 2}) == 1.0
    assert isinstance(cachegc._when({"mtime": 1}), float)
    assert cachegc._when({"mtime": None, "time": 5}) == 5.0
    assert cachegc._when({"updated": "yesterday", "created": 7.5}) == 7.5
    assert cachegc._when({"updated": "2027-01-15T08:00:00", "created": 7.5}) == NOW  # naive: UTC
    assert cachegc._when({"modified": [1], "time": 3}) == 3.0  # not a time: the next field
    assert cachegc._when({}) is None
    assert cachegc._when({"updated": "2027-01-15T10:00:00+02:00"}) == NOW  # a zone of its own
    assert cachegc._latest(None, None) is None and cachegc._latest(None, 2.0) == 2.0
    assert cachegc._latest(3.0, None, 1.0) == 3.0


def test_sizes_counts_and_times_as_a_user_reads_them():
    assert [cachegc.human(n) for n in (0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**3, 2 * 1024**4, 1024**5, -2048)] \
        == ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB", "2.0 TiB", "1024.0 TiB", "-2.0 KiB"]
    assert cachegc.human(1024**2 - 1) == "1024.0 KiB"
    assert [cachegc._count(n, "entry", "entries") for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]
    assert [cachegc._count(n, "blob") for n in (0, 1, 2)] == ["0 blobs", "1 blob", "2 blobs"]
    assert cachegc.when_text(None) == "none recorded"
    assert cachegc.when_text(NOW + 59) == "2027-01-15 08:00 UTC"


def test_times_read_in_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert cachegc.when_text(NOW) == "2027-01-15 08:00 UTC"
        from datetime import datetime

        assert cachegc._when({"created": datetime(2027, 1, 15, 8, 0)}) == NOW  # a naive listed time is UTC
    finally:
        monkeypatch.undo()
        time.tzset()


def test_stats_of_a_known_local_store_and_how_they_read():
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.Inventory("/w/out/.buildsys", "local", {
        "k1": E("k1", frozenset([_d("a")]), NOW - DAY),
        "k2": E("k2", frozenset([_d("b")]), None),
        "k3": E("k3", frozenset([_d("b")]), NOW)},
        {_d("a"): B(1024, None), _d("b"): B(2048, None), _d("c"): B(1, None)})
    s = cachegc.stats_json(inv, {_d("a"), _d("z")})
    assert s == {"cache": "/w/out/.buildsys", "kind": "local", "entries": 3, "blobs": 3, "bytes": 3073,
                 "reachable": {"blobs": 1, "bytes": 1024}, "oldest_use": NOW - DAY, "newest_use": NOW,
                 "unfinished_uploads": 0}
    assert cachegc.render_stats(s) == (
        "local store /w/out/.buildsys\n"
        "  entries      3\n"
        "  blobs        3\n"
        "  total size   3.0 KiB\n"
        "  reachable    1.0 KiB in 1 blob, from the current recipes' last build\n"
        "  oldest use   2027-01-14 08:00 UTC\n"
        "  newest use   2027-01-15 08:00 UTC")
    s = cachegc.stats_json(inv, {_d("a"), _d("b")})
    assert "  reachable    3.0 KiB in 2 blobs, from the current recipes' last build\n" in cachegc.render_stats(s)


def test_stats_of_a_known_shared_cache_and_how_they_read():
    B = cachegc.Blob
    inv = cachegc.Inventory("memory://c", "shared", {}, {_d("a"): B(10, None)},
                            {"blobs/x.part": B(5, None), "actions/y": B(6, None)})
    s = cachegc.stats_json(inv, None)
    assert s == {"cache": "memory://c", "kind": "shared", "entries": 0, "blobs": 1, "bytes": 10, "reachable": None,
                 "oldest_use": None, "newest_use": None, "unfinished_uploads": 2}
    assert cachegc.render_stats(s) == (
        "shared cache memory://c\n"
        "  entries      0\n"
        "  blobs        1\n"
        "  total size   10 B\n"
        "  reachable    unknown: no build state in this workspace\n"
        "  oldest use   none recorded\n"
        "  newest use   none recorded\n"
        "  unfinished uploads or unknown files: 2")


def test_a_dry_run_plan_reads_what_would_go_and_why_the_rest_stays():
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.Inventory("x", "shared", {
        "cur": E("cur", frozenset([_d("a")]), NOW, 0, True),
        "k1": E("k1", frozenset([_d("b")]), NOW - 2 * DAY),
        "k2": E("k2", frozenset([_d("c")]), NOW - DAY)},
        {_d("a"): B(4096, NOW), _d("b"): B(1024, NOW - DAY), _d("c"): B(1024, NOW - DAY),
         _d("d"): B(512, NOW - 10)},
        {"blobs/x.part": B(9, NOW - 2 * DAY)})
    d = cachegc.plan_json(cachegc.plan(inv, 1024, None, NOW, 3600.0), True)
    assert cachegc.render_plan(d, "memory://c") == (
        "memory://c: would remove 2 entries and 2 blobs, 2.0 KiB (last used 2027-01-13 08:00 UTC to "
        "2027-01-14 08:00 UTC), and 1 unfinished uploads\n"
        "kept 1 entry and 2 blobs, 4.5 KiB (limit 1.0 KiB)\n"
        "  of which 1 entry, 4.0 KiB: the current recipes' last build, never removed\n"
        "  of which 1 blob, 512 B, that no entry names: younger than the grace period (a build may be publishing them)\n"
        "warning: the cache still holds 4.5 KiB, over the limit of 1.0 KiB: what is left is the current recipes' "
        "last build and blobs younger than the grace period")
    d = cachegc.plan_json(cachegc.plan(inv, 0, None, NOW), False)
    assert cachegc.render_plan(d, "memory://c") == (
        "memory://c: removed 2 entries and 3 blobs, 2.5 KiB (last used 2027-01-13 08:00 UTC to "
        "2027-01-14 08:00 UTC), and 1 unfinished uploads\n"
        "kept 1 entry and 1 blob, 4.0 KiB (limit 0 B)\n"
        "  of which 1 entry, 4.0 KiB: the current recipes' last build, never removed\n"
        "warning: the cache still holds 4.0 KiB, over the limit of 0 B: what is left is the current recipes' "
        "last build")


def test_a_plan_that_removes_nothing_reads_plainly():
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.Inventory("x", "shared", {"k": E("k", frozenset([_d("a")]), None)}, {_d("a"): B(3, None)})
    d = cachegc.plan_json(cachegc.plan(inv, None, None, NOW), False)
    assert cachegc.render_plan(d, "/w") == "/w: removed 0 entries and 0 blobs, 0 B\nkept 1 entry and 1 blob, 3 B"
    d = cachegc.plan_json(cachegc.plan(inv, 0, None, NOW), True)
    assert d["removed"]["last_used_from"] is None and d["removed"]["last_used_to"] is None
    assert cachegc.render_plan(d, "/w") == "/w: would remove 1 entry and 1 blob, 3 B\nkept 0 entries and 0 blobs, 0 B (limit 0 B)"
    d["fits"] = False  # a cache over its limit with nothing protected or young
    assert cachegc.render_plan(d, "/w").endswith("\nwarning: the cache still holds 0 B, over the limit of 0 B: "
                                                 "what is left is in use")


def test_apply_local_forgets_the_planned_entries_then_removes_their_blobs(tmp_path):
    state, store = FakeState(), FakeStore(tmp_path)
    E = cachegc.Entry
    p = cachegc.plan(cachegc.Inventory("x", "local", {"k1": E("k1", frozenset([_d("a")]), 1.0),
                                                      "k2": E("k2", frozenset([_d("b")]), 2.0)},
                                       {_d("a"): cachegc.Blob(5, None), _d("b"): cachegc.Blob(5, None),
                                        _d("c"): cachegc.Blob(5, None)}), 5, None, NOW)
    cachegc.apply_local(p, state, store)
    assert state.evicted == [{"k1"}] and store.removed == [_d("a"), _d("c")]


def _shared_files(now: float) -> dict:
    """Three entries (k1 old, k2 and k3 recent), one orphan blob, stamps of a gone key and of unknown keys."""
    a, b, c, o = _d("a"), _d("b"), _d("c"), _d("f")
    k1, k2, k3 = _d("1"), _d("2"), _d("3")
    blob = lambda d: (f"blobs/{d[:2]}/{d}", (b"x" * 10, {"size": 10, "mtime": now - DAY}))  # noqa: E731
    return dict([blob(a), blob(b), blob(c), blob(o),
                 (f"actions/{k1}.json", (_action(a), {"size": 100, "mtime": now - 30 * DAY})),
                 (f"actions/{k2}.json", (_action(b), {"size": 100, "mtime": now - 2 * DAY})),
                 (f"actions/{k3}.json", (_action(c), {"size": 100, "mtime": now - DAY})),
                 (f"uses/{k1}", (b"", {"size": 0, "mtime": now - 20 * DAY})),
                 (f"uses/{_d('7')}", (b"", {"size": 0, "mtime": now - 2 * 3600})),  # of no entry, old
                 (f"uses/{_d('8')}", (b"", {"size": 0, "mtime": now - 60})),  # of no entry, young
                 ("blobs/ab/stale.part", (b"", {"size": 1, "mtime": now - 2 * DAY}))])


def test_apply_shared_removes_entries_stamps_blobs_and_debris_in_that_order():
    cache = FakeCache(_shared_files(NOW))
    inv = cachegc.shared_inventory(cache)
    p = cachegc.plan(inv, None, 7, NOW, 3600.0)
    assert [e.key for e in p.evict] == [_d("1")] and p.remove_blobs == [_d("a"), _d("f")]
    done = cachegc.apply_shared(p, inv, cache, NOW, 3600.0)
    assert done is p and done.remove_blobs == [_d("a"), _d("f")] and done.removed_bytes == 121
    assert cache.removed == [[f"actions/{_d('1')}.json"], [f"uses/{_d('1')}", f"uses/{_d('7')}"],
                             [f"blobs/aa/{_d('a')}", f"blobs/ff/{_d('f')}"], ["blobs/ab/stale.part"]]


def test_apply_shared_spares_blobs_named_by_entries_written_since_the_listing():
    cache = FakeCache(_shared_files(NOW))
    inv = cachegc.shared_inventory(cache)
    p = cachegc.plan(inv, 0, None, NOW, 3600.0)
    assert [e.key for e in p.evict] == [_d("1"), _d("2"), _d("3")]
    assert p.remove_blobs == [_d("a"), _d("b"), _d("c"), _d("f")]
    # meanwhile builds published k4, naming a, and k5, naming the orphan f
    cache.files[f"actions/{_d('4')}.json"] = (_action(_d("a")), {"size": 100, "mtime": NOW})
    cache.files[f"actions/{_d('5')}.json"] = (_action(_d("f")), {"size": 100, "mtime": NOW})
    before = dict(cache.files)
    done = cachegc.apply_shared(p, inv, cache, NOW, 3600.0)
    assert done.remove_blobs == [_d("b"), _d("c")]  # a and f are named again
    assert (done.removed_bytes, done.kept_bytes, done.kept_blobs) == (321, 20, 2)
    assert cache.removed[0] == [f"actions/{_d(k)}.json" for k in "123"]
    # only what was written since the listing is read
    assert sorted(cache.read[-1]) == [f"actions/{_d('4')}.json", f"actions/{_d('5')}.json"]
    assert set(before) - set(cache.files) == {f"actions/{_d(k)}.json" for k in "123"} | {
        f"uses/{_d('1')}", f"uses/{_d('7')}", "blobs/ab/stale.part"} | {
        f"blobs/{d[:2]}/{d}" for d in (_d("b"), _d("c"))}


def test_apply_shared_keeps_what_an_entry_rewritten_meanwhile_names():
    cache = FakeCache(_shared_files(NOW))
    inv = cachegc.shared_inventory(cache)
    p = cachegc.plan(inv, None, 7, NOW, 3600.0)  # k1 goes, a and the orphan f with it
    cache.files[f"actions/{_d('2')}.json"] = (_action(_d("b"), _d("f")), {"size": 100, "mtime": NOW})
    done = cachegc.apply_shared(p, inv, cache, NOW, 3600.0)
    assert cache.read[-1] == [f"actions/{_d('2')}.json"]  # k3 is unchanged: what it names is known
    assert done.remove_blobs == [_d("a")] and done.kept_blobs == 3
    assert (done.removed_bytes, done.kept_bytes) == (111, 230)
    assert f"blobs/ff/{_d('f')}" in cache.files and f"blobs/aa/{_d('a')}" not in cache.files


def test_collect_shared_dry_run_removes_nothing_and_the_grace_period_is_in_minutes():
    t0 = time.time()
    files = {f"blobs/aa/{_d('a')}": (b"x", {"size": 1, "mtime": t0 - 59.5 * 60}),
             f"blobs/bb/{_d('b')}": (b"x", {"size": 2, "mtime": t0 - 60 * 60 - 5})}
    cache = FakeCache(files)
    d = cachegc.collect_shared(cache, 0, None, dry_run=True)  # default grace: an hour
    assert d["dry_run"] and d["removed"]["blobs"] == 1 and d["kept"]["young_blobs"] == 1 and cache.removed == []
    d = cachegc.collect_shared(cache, 0, None, grace_minutes=59)
    assert not d["dry_run"] and d["removed"]["blobs"] == 2 and cache.files == {}


def test_collect_local_dry_run_removes_nothing(tmp_path):
    import json

    state = FakeState(actions=[("k1", json.dumps(_outputs(_d("a"))), time.time() - 3 * DAY)])
    (tmp_path / "aa").mkdir()
    (tmp_path / "aa" / _d("a")).write_bytes(b"12345")
    store = FakeStore(tmp_path)
    d = cachegc.collect_local(state, store, set(), None, 2, dry_run=True)
    assert d["dry_run"] and d["removed"]["entries"] == 1 and d["removed"]["bytes"] == 5
    assert state.evicted == [] and store.removed == []
    d = cachegc.collect_local(state, store, set(), 0, None)
    assert not d["dry_run"] and state.evicted == [{"k1"}] and store.removed == [_d("a")]


def test_several_protected_entries_read_in_the_plural():
    E, B = cachegc.Entry, cachegc.Blob
    inv = cachegc.Inventory("x", "local", {
        "c1": E("c1", frozenset([_d("a")]), NOW, 0, True), "c2": E("c2", frozenset([_d("b")]), NOW, 0, True)},
        {_d("a"): B(1024, None), _d("b"): B(1024, None)})
    d = cachegc.plan_json(cachegc.plan(inv, 4096, None, NOW), False)
    assert cachegc.render_plan(d, "/w") == (
        "/w: removed 0 entries and 0 blobs, 0 B\n"
        "kept 2 entries and 2 blobs, 2.0 KiB (limit 4.0 KiB)\n"
        "  of which 2 entries, 2.0 KiB: the current recipes' last build, never removed")


def test_collect_shared_forgets_use_stamps_of_unknown_keys_older_than_the_grace_period():
    t0 = time.time()
    young, old, gone = _d("7"), _d("8"), _d("1")
    cache = FakeCache({f"uses/{young}": (b"", {"size": 0, "mtime": t0 - 59.5 * 60}),
                       f"uses/{old}": (b"", {"size": 0, "mtime": t0 - 60 * 60 - 5}),
                       f"actions/{gone}.json": (_action(), {"size": 3, "mtime": t0 - 10}),
                       f"uses/{gone}": (b"", {"size": 0, "mtime": t0 - 5})})
    d = cachegc.collect_shared(cache, None, None)  # the entry is kept: its stamp too
    assert d["removed"]["entries"] == 0 and set(cache.files) == {f"uses/{young}", f"actions/{gone}.json",
                                                                 f"uses/{gone}"}
    cachegc.collect_shared(cache, 0, None, grace_minutes=0.5)  # the entry goes, and every stamp with it
    assert cache.files == {}


def test_a_use_stamp_is_known_by_its_last_name_whatever_path_the_listing_gives():
    class Listed:
        def listing(self, folder):
            assert folder == "uses"
            return {f"uses/{_d('1')}": {"mtime": 1.0}, f"bucket/cache/uses/{_d('2')}": {"mtime": 2.0},
                    "uses/notes": {"mtime": 3.0}, f"uses/{_d('3')}": {}}

    assert cachegc._uses(Listed()) == {_d("1"): 1.0, _d("2"): 2.0, _d("3"): None}
