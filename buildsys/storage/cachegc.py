"""What a cache holds and how to trim it: `buildsys cache stats` and `buildsys cache gc`.

A cache is a set of entries (one per step key: the action-cache rows of the
local store, or `actions/<key>.json` of a shared cache) and the blobs they name.
Collection removes entries least recently used first, then every blob that no
remaining entry names, until what is left fits the size asked for; entries not
used for `max_age` days go whatever the size.

Local store (out/.buildsys): the caller holds the workspace lock, as every build
does for its whole run, so a build never sees a collection half done. The
entries that the current recipes' steps were last built from are never removed
(the session says which steps are current). What the state records is read and
forgotten through State (`inventory`, `evict`), blobs removed through Store.
A key's last use is the latest of: its action row being written, its
`action_uses` stamp (a run or a restore, and the moment a step moved off it),
and its trace being written.

Shared cache (a folder or any fsspec URL; only find, info, cat and rm are used):
no lock is possible, so the order makes it safe. Entries go first, then blobs
that no entry names, after listing the entries once more; a blob younger than
the grace period is never removed, because a build publishes blobs first and
its entry last. A build restoring an entry that is removed under it finds its
blobs or misses and rebuilds: every blob is verified as it is fetched, so a
half-removed entry is never served. A key's last use is the later of its
entry's write and its `uses/<key>` stamp, both read from the listing's times.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from buildsys.storage.state import State
from buildsys.storage.store import Store

GRACE_MINUTES = 60.0  # a shared blob younger than this may belong to a publish in flight
# An unfinished upload (a temporary name beside the blobs or entries) is removed only after a
# day, whatever the grace period: removing it while it is written would fail that build.
UPLOAD_MAX_S = 86400.0
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Entry:
    """One step key in a cache: the blobs its outputs name and when it was last used."""

    key: str
    blobs: frozenset[str]
    last_use: float | None  # seconds since the epoch; None where the filesystem keeps no times
    size: int = 0  # bytes of the entry itself (a shared cache's action file)
    protected: bool = False  # the current recipes' last build uses it (local store)
    written: float | None = None  # a shared cache's action file: its listed time


@dataclass
class Blob:
    size: int
    written: float | None


@dataclass
class Inventory:
    """Everything a cache holds, read in one pass."""

    where: str
    kind: str  # "local" or "shared"
    entries: dict[str, Entry]
    blobs: dict[str, Blob]
    debris: dict[str, Blob] = field(default_factory=dict)  # shared: unfinished uploads and unknown names

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blobs.values()) + sum(e.size for e in self.entries.values())


@dataclass
class Plan:
    """What a collection removes and keeps."""

    max_size: int | None
    max_age_days: float | None
    evict: list[Entry]
    remove_blobs: list[str]
    remove_debris: list[str]
    removed_bytes: int
    kept_bytes: int
    kept_entries: int
    kept_blobs: int
    protected_entries: int
    protected_bytes: int
    young_blobs: int  # unnamed shared blobs kept because they are younger than the grace period
    young_bytes: int

    @property
    def fits(self) -> bool:
        return self.max_size is None or self.kept_bytes <= self.max_size


# -- reading a cache -------------------------------------------------------------------


def local_inventory(state: State, store: Store, current: set[str] | None) -> Inventory:
    """The local store's entries and blobs.

    `current` is the step ids of the workspace's recipes: their traces' keys are
    protected. None protects every trace (some recipe could not be read, so
    which steps are current is unknown).
    """
    recorded = state.inventory()
    entries: dict[str, Entry] = {}
    blobs_of: dict[str, set[str]] = {}
    used: dict[str, float] = {}

    def seen(key: str, outputs: str, when: float | None) -> None:
        blobs_of.setdefault(key, set()).update(_digests(_loads(outputs)))
        if when is not None:
            used[key] = max(used.get(key, when), when)

    for key, outputs, created in recorded.actions:
        seen(key, outputs, created)
    protected: set[str] = set()
    for step, key, outputs, finished in recorded.traces:
        seen(key, outputs, finished)
        if current is None or step in current:
            protected.add(key)
    for key, when in recorded.uses:
        if key in blobs_of:
            used[key] = max(used.get(key, when), when)
    for key, names in blobs_of.items():
        entries[key] = Entry(key, frozenset(names), used.get(key), 0, key in protected)
    return Inventory(str(store.root.parent), "local", entries, _store_blobs(store))


def _store_blobs(store: Store) -> dict[str, Blob]:
    found: dict[str, Blob] = {}
    try:
        folders = list(os.scandir(store.root))
    except FileNotFoundError:
        return found
    for folder in folders:
        if len(folder.name) != 2 or not folder.is_dir(follow_symlinks=False):
            continue
        with os.scandir(folder.path) as names:
            for f in names:
                if _HEX64.fullmatch(f.name) and f.name[:2] == folder.name and f.is_file(follow_symlinks=False):
                    st = f.stat(follow_symlinks=False)
                    found[f.name] = Blob(st.st_size, st.st_mtime)
    return found


def shared_inventory(cache) -> Inventory:
    """A shared cache's entries, blobs and unfinished uploads, from three listings and the entries' bytes."""
    blobs: dict[str, Blob] = {}
    debris: dict[str, Blob] = {}
    for name, info in cache.listing("blobs").items():
        parts = name.split("/")
        blob = Blob(int(info.get("size") or 0), _when(info))
        if len(parts) == 3 and _HEX64.fullmatch(parts[2]) and parts[1] == parts[2][:2]:
            blobs[parts[2]] = blob
        else:
            debris[name] = blob
    actions: dict[str, tuple[int, float | None]] = {}
    for name, info in cache.listing("actions").items():
        parts = name.split("/")
        key = parts[1][:-5] if len(parts) == 2 and parts[1].endswith(".json") else ""
        if _HEX64.fullmatch(key):
            actions[key] = (int(info.get("size") or 0), _when(info))
        else:
            debris[name] = Blob(int(info.get("size") or 0), _when(info))
    uses = _uses(cache)
    texts = cache.read_files([f"actions/{key}.json" for key in actions])
    entries: dict[str, Entry] = {}
    for key, (size, written) in actions.items():
        text = texts.get(f"actions/{key}.json")
        if text is None:
            continue  # removed since it was listed
        entries[key] = Entry(key, frozenset(_entry_digests(text)), _latest(written, uses.get(key)), size,
                             written=written)
    return Inventory(cache.url, "shared", entries, blobs, debris)


def _uses(cache) -> dict[str, float | None]:
    found = {}
    for name, info in cache.listing("uses").items():
        key = name.rpartition("/")[2]
        if _HEX64.fullmatch(key):
            found[key] = _when(info)
    return found


def _entry_digests(text: bytes) -> set[str]:
    """The blobs a shared action file names; an unreadable one names none (readers treat it as a miss)."""
    try:
        entries = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return set()
    found: set[str] = set()
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            found |= _digests(entry.get("outputs"))
    return found


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _digests(outputs: Any) -> set[str]:
    """The blob digests in an outputs map {output: [[file, digest, size], ...]}; malformed parts are skipped."""
    found: set[str] = set()
    if not isinstance(outputs, dict):
        return found
    for files in outputs.values():
        for item in files if isinstance(files, list) else []:
            if isinstance(item, list) and len(item) >= 2 and isinstance(item[1], str) and _HEX64.fullmatch(item[1]):
                found.add(item[1])
    return found


_TIME_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "time")


def _when(info: dict[str, Any]) -> float | None:
    """A listed file's last write, in seconds since the epoch, from whichever field its filesystem fills."""
    for name in _TIME_FIELDS:
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
            except ValueError:
                continue
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


# -- deciding ------------------------------------------------------------------------------


def plan(inv: Inventory, max_size: int | None, max_age_days: float | None, now: float,
         grace_s: float = 0.0) -> Plan:
    """Least recently used entries out until the rest fits; every blob no remaining entry names goes too.

    A blob younger than `grace_s` is kept even when nothing names it (a publish in flight).
    """
    refs = Counter(d for e in inv.entries.values() for d in e.blobs)
    protected = {d for e in inv.entries.values() if e.protected for d in e.blobs}

    def collectable(digest: str) -> bool:
        blob = inv.blobs.get(digest)
        if blob is None or refs[digest]:  # a protected entry is never dropped: its blobs stay named
            return False
        return grace_s <= 0 or (blob.written is not None and blob.written <= now - grace_s)

    remove = {d for d in inv.blobs if collectable(d)}
    size = inv.size - sum(inv.blobs[d].size for d in remove)
    evict: list[Entry] = []

    def drop(entry: Entry) -> None:
        nonlocal size
        evict.append(entry)
        size -= entry.size
        for d in entry.blobs:
            refs[d] -= 1
            if d not in remove and collectable(d):
                remove.add(d)
                size -= inv.blobs[d].size

    # an entry whose filesystem keeps no times counts as the least recently used, but not as old
    queue = sorted((e for e in inv.entries.values() if not e.protected),
                   key=lambda e: (e.last_use if e.last_use is not None else float("-inf"), e.key))
    if max_age_days is not None:
        cutoff = now - max_age_days * 86400
        expired = [e for e in queue if e.last_use is not None and e.last_use < cutoff]
        for e in expired:
            drop(e)
        queue = [e for e in queue if not (e.last_use is not None and e.last_use < cutoff)]
    if max_size is not None:
        for e in queue:
            if size <= max_size:
                break
            drop(e)
    debris = [n for n, b in inv.debris.items() if _old(b.written, now, max(grace_s, UPLOAD_MAX_S))]
    gone = {e.key for e in evict}
    young = [d for d, b in inv.blobs.items() if d not in remove and not refs[d]]
    return Plan(
        max_size=max_size, max_age_days=max_age_days, evict=evict, remove_blobs=sorted(remove),
        remove_debris=debris,
        removed_bytes=inv.size - size + sum(inv.debris[n].size for n in debris),
        kept_bytes=size, kept_entries=len(inv.entries) - len(gone), kept_blobs=len(inv.blobs) - len(remove),
        protected_entries=sum(e.protected for e in inv.entries.values()),
        protected_bytes=sum(inv.blobs[d].size for d in protected if d in inv.blobs),
        young_blobs=len(young), young_bytes=sum(inv.blobs[d].size for d in young))


# -- removing ------------------------------------------------------------------------------


def apply_local(plan_: Plan, state: State, store: Store) -> None:
    """Remove the planned entries (rows, stamps, traces of steps no recipe has), then their blobs.

    The caller holds the workspace lock.
    """
    state.evict({e.key for e in plan_.evict})  # a current step's key is protected, never evicted
    for digest in plan_.remove_blobs:
        store.remove(digest)


def apply_shared(plan_: Plan, inv: Inventory, cache, now: float, grace_s: float) -> Plan:
    """Remove the planned entries, then the blobs that no entry names, listed once more in between.

    Entries written since the first listing (a build publishing meanwhile) keep
    the blobs they name. Returns the plan as carried out.
    """
    gone = {e.key for e in plan_.evict}
    cache.remove_files([f"actions/{k}.json" for k in sorted(gone)])
    uses = _uses(cache)
    stale_uses = [k for k in uses if k in gone or (k not in inv.entries and _old(uses[k], now, grace_s))]
    cache.remove_files([f"uses/{k}" for k in stale_uses])
    # An entry unchanged since the first listing names no planned blob (the plan kept what it names);
    # one written since may name any: those are read again.
    fresh = []
    for name, info in cache.listing("actions").items():
        key = name.rpartition("/")[2][:-5]
        before = inv.entries.get(key)
        if before is None or key in gone or _when(info) != before.written:
            fresh.append(name)
    named: set[str] = set()
    for text in cache.read_files(fresh).values():
        named |= _entry_digests(text)
    blobs = [d for d in plan_.remove_blobs if d not in named]
    cache.remove_files([f"blobs/{d[:2]}/{d}" for d in blobs])
    cache.remove_files(plan_.remove_debris)
    spared = [d for d in plan_.remove_blobs if d in named]
    if spared:
        plan_.remove_blobs = blobs
        freed = sum(inv.blobs[d].size for d in spared)
        plan_.removed_bytes -= freed
        plan_.kept_bytes += freed
        plan_.kept_blobs += len(spared)
    return plan_


def _old(when: float | None, now: float, grace_s: float) -> bool:
    return when is not None and when <= now - grace_s


# -- what a user sees ----------------------------------------------------------------------


def reachable(inv: Inventory, digests: set[str]) -> tuple[int, int]:
    """(blobs, bytes) of `digests` that the cache holds."""
    held = [inv.blobs[d] for d in digests if d in inv.blobs]
    return len(held), sum(b.size for b in held)


def current_digests(state: State, current: set[str] | None) -> set[str]:
    """The blobs the last build of the current recipes' steps produced."""
    found: set[str] = set()
    for step, _, outputs, _ in state.inventory().traces:
        if current is None or step in current:
            found |= _digests(_loads(outputs))
    return found


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def when_text(t: float | None) -> str:
    if t is None:
        return "none recorded"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def stats_json(inv: Inventory, digests: set[str] | None) -> dict[str, Any]:
    uses = [e.last_use for e in inv.entries.values() if e.last_use is not None]
    reach = reachable(inv, digests) if digests is not None else None
    return {
        "cache": inv.where, "kind": inv.kind, "entries": len(inv.entries), "blobs": len(inv.blobs),
        "bytes": inv.size,
        "reachable": None if reach is None else {"blobs": reach[0], "bytes": reach[1]},
        "oldest_use": min(uses) if uses else None, "newest_use": max(uses) if uses else None,
        "unfinished_uploads": len(inv.debris),
    }


def render_stats(s: dict[str, Any]) -> str:
    what = "local store" if s["kind"] == "local" else "shared cache"
    lines = [f"{what} {s['cache']}",
             f"  entries      {s['entries']}",
             f"  blobs        {s['blobs']}",
             f"  total size   {human(s['bytes'])}"]
    reach = s["reachable"]
    lines.append("  reachable    " + ("unknown: no build state in this workspace" if reach is None else
                                      f"{human(reach['bytes'])} in {_count(reach['blobs'], 'blob')}, "
                                      "from the current recipes' last build"))
    lines.append(f"  oldest use   {when_text(s['oldest_use'])}")
    lines.append(f"  newest use   {when_text(s['newest_use'])}")
    if s["unfinished_uploads"]:
        lines.append(f"  unfinished uploads or unknown files: {s['unfinished_uploads']}")
    return "\n".join(lines)


def plan_json(p: Plan, dry_run: bool) -> dict[str, Any]:
    uses = [e.last_use for e in p.evict if e.last_use is not None]
    return {
        "dry_run": dry_run, "max_size": p.max_size, "max_age_days": p.max_age_days, "fits": p.fits,
        "removed": {"entries": len(p.evict), "blobs": len(p.remove_blobs), "other_files": len(p.remove_debris),
                    "bytes": p.removed_bytes, "last_used_from": min(uses) if uses else None,
                    "last_used_to": max(uses) if uses else None},
        "kept": {"entries": p.kept_entries, "blobs": p.kept_blobs, "bytes": p.kept_bytes,
                 "protected_entries": p.protected_entries, "protected_bytes": p.protected_bytes,
                 "young_blobs": p.young_blobs, "young_bytes": p.young_bytes},
    }


def render_plan(d: dict[str, Any], where: str) -> str:
    r, k = d["removed"], d["kept"]
    verb = "would remove" if d["dry_run"] else "removed"
    line = f"{verb} {_count(r['entries'], 'entry', 'entries')} and {_count(r['blobs'], 'blob')}, {human(r['bytes'])}"
    if r["entries"] and r["last_used_from"] is not None:
        line += f" (last used {when_text(r['last_used_from'])} to {when_text(r['last_used_to'])})"
    if r["other_files"]:
        line += f", and {r['other_files']} unfinished uploads"
    lines = [f"{where}: {line}",
             f"kept {_count(k['entries'], 'entry', 'entries')} and {_count(k['blobs'], 'blob')}, {human(k['bytes'])}"
             + (f" (limit {human(d['max_size'])})" if d["max_size"] is not None else "")]
    if k["protected_entries"]:
        lines.append(f"  of which {_count(k['protected_entries'], 'entry', 'entries')}, {human(k['protected_bytes'])}: "
                     "the current recipes' last build, never removed")
    if k["young_blobs"]:
        lines.append(f"  of which {_count(k['young_blobs'], 'blob')}, {human(k['young_bytes'])}, that no entry names: "
                     "younger than the grace period (a build may be publishing them)")
    if not d["fits"]:
        why = [w for w, n in (("the current recipes' last build", k["protected_entries"]),
                              ("blobs younger than the grace period", k["young_blobs"])) if n]
        lines.append(f"warning: the cache still holds {human(k['bytes'])}, over the limit of {human(d['max_size'])}: "
                     f"what is left is {' and '.join(why) or 'in use'}")
    return "\n".join(lines)


# -- whole commands ------------------------------------------------------------------------


def collect_local(state: State, store: Store, current: set[str] | None, max_size: int | None,
                  max_age_days: float | None, dry_run: bool = False) -> dict[str, Any]:
    """Trim the local store; the caller holds the workspace lock. Returns what plan_json says."""
    inv = local_inventory(state, store, current)
    p = plan(inv, max_size, max_age_days, time.time())
    if not dry_run:
        apply_local(p, state, store)
    return plan_json(p, dry_run)


def collect_shared(cache, max_size: int | None, max_age_days: float | None, grace_minutes: float = GRACE_MINUTES,
                   dry_run: bool = False) -> dict[str, Any]:
    """Trim a shared cache, beside builds that may be using it."""
    at = time.time()
    inv = shared_inventory(cache)
    p = plan(inv, max_size, max_age_days, at, grace_minutes * 60)
    if not dry_run:
        p = apply_shared(p, inv, cache, at, grace_minutes * 60)
    return plan_json(p, dry_run)
