"""Build state: the SQLite database under out/.buildsys/ and the workspace lock.

The database holds four things: memoised file digests, the last trace of every
step (what it was built from and what it produced), the action cache (every
key ever built, so returning to an earlier configuration is a hit), and the
resolved-recipe cache that lets a no-op build skip YAML and schema work.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.canonical import digest_file

SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, digest TEXT);
CREATE TABLE IF NOT EXISTS traces (
    step TEXT PRIMARY KEY, key TEXT, doc TEXT, deps TEXT, outputs TEXT, verdict TEXT,
    seconds REAL, finished REAL);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT, deps_id TEXT, deps TEXT, outputs TEXT, verdict TEXT, created REAL,
    PRIMARY KEY (key, deps_id));
CREATE TABLE IF NOT EXISTS failures (
    step TEXT PRIMARY KEY, key TEXT, message TEXT, log TEXT, finished REAL);
CREATE TABLE IF NOT EXISTS recipes (path TEXT PRIMARY KEY, stamp TEXT, recipe TEXT);
"""


@dataclass(frozen=True)
class Trace:
    """What a step was last built from and what it produced."""

    step: str
    key: str
    doc: dict
    deps: dict  # {"files": {path: digest}, "dists": {name: version}}
    outputs: dict  # {output: [[relname, digest, size], ...]}
    verdict: dict | None
    seconds: float


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class State:
    """One workspace's build database. Not shared between threads."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.sqlite"
        self.db = self._open()
        self._files: dict[str, tuple[int, int, int, str]] | None = None
        self._dirty_files: dict[str, tuple[int, int, int, str]] = {}

    def _open(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            db.execute("SELECT count(*) FROM traces").fetchone()
            row = db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"state schema {row and row[0]} is not {SCHEMA_VERSION}")
            return db
        except sqlite3.DatabaseError as exc:
            if self.path.exists() and self.path.stat().st_size > 0 and "is not" not in str(exc):
                bad = self.path.with_suffix(f".sqlite.{int(time.time())}.bad")
                os.replace(self.path, bad)
                for side in ("-wal", "-shm"):
                    Path(str(self.path) + side).unlink(missing_ok=True)
                print(
                    f"warning: build state {self.path} is unreadable ({exc}); set aside as {bad.name}, "
                    "steps will be restored from the store or rebuilt",
                    file=sys.stderr,
                )
            db = self._connect()
            db.executescript(_TABLES)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if not db.execute("SELECT name FROM sqlite_master WHERE name='traces'").fetchone():
            db.executescript(_TABLES)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        return db

    def close(self) -> None:
        self.flush()
        self.db.close()

    # -- file digests, memoised by (path, size, mtime, inode) ------------------

    def _load_files(self) -> dict[str, tuple[int, int, int, str]]:
        if self._files is None:
            self._files = {
                p: (s, m, i, d) for p, s, m, i, d in self.db.execute("SELECT path, size, mtime_ns, ino, digest FROM files")
            }
        return self._files

    def digest(self, path: Path) -> str | None:
        """The content digest of `path`, reading its bytes only when its stat changed.

        Returns None when the file does not exist.
        """
        key = str(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        memo = self._load_files().get(key)
        if memo is not None and memo[:3] == _stamp(st):
            return memo[3]
        value = digest_file(path)
        self.remember(path, value, st)
        return value

    def remember(self, path: Path, digest: str, st: os.stat_result | None = None) -> None:
        """Record a digest the caller already knows (a file it just wrote)."""
        st = st or path.stat()
        # A file modified within the last two seconds may change again within the
        # same mtime tick; do not trust its stamp later.
        if time.time_ns() - st.st_mtime_ns < 2_000_000_000:
            return
        entry = (*_stamp(st), digest)
        self._load_files()[str(path)] = entry
        self._dirty_files[str(path)] = entry

    def flush(self) -> None:
        if self._dirty_files:
            with self.transaction():
                self.db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                    [(p, *v) for p, v in self._dirty_files.items()],
                )
            self._dirty_files.clear()

    def transaction(self):
        return _Transaction(self.db)

    # -- traces and the action cache ------------------------------------------

    def traces(self) -> dict[str, Trace]:
        out = {}
        for step, key, doc, deps, outputs, verdict, seconds in self.db.execute(
            "SELECT step, key, doc, deps, outputs, verdict, seconds FROM traces"
        ):
            out[step] = Trace(
                step, key, json.loads(doc), json.loads(deps), json.loads(outputs),
                json.loads(verdict) if verdict else None, seconds,
            )
        return out

    def record(self, trace: Trace, deps_id: str) -> None:
        """Commit a successful step: its trace and its action-cache entry, atomically."""
        now = time.time()
        verdict = json.dumps(trace.verdict) if trace.verdict is not None else None
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (trace.step, trace.key, json.dumps(trace.doc), json.dumps(trace.deps),
                 json.dumps(trace.outputs), verdict, trace.seconds, now),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO actions VALUES (?, ?, ?, ?, ?, ?)",
                (trace.key, deps_id, json.dumps(trace.deps), json.dumps(trace.outputs), verdict, now),
            )
            self.db.execute("DELETE FROM failures WHERE step = ?", (trace.step,))

    def actions(self, key: str) -> list[tuple[dict, dict, dict | None]]:
        rows = self.db.execute(
            "SELECT deps, outputs, verdict FROM actions WHERE key = ? ORDER BY created DESC", (key,)
        )
        return [(json.loads(d), json.loads(o), json.loads(v) if v else None) for d, o, v in rows]

    def forget_action(self, key: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM actions WHERE key = ?", (key,))

    def forget_traces(self, steps: list[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM traces WHERE step = ?", [(s,) for s in steps])
            self.db.executemany("DELETE FROM failures WHERE step = ?", [(s,) for s in steps])

    def record_failure(self, step: str, key: str, message: str, log: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)", (step, key, message, log, time.time())
            )

    def failures(self) -> dict[str, tuple[str, str, str]]:
        return {s: (k, m, l) for s, k, m, l in self.db.execute("SELECT step, key, message, log FROM failures")}

    # -- resolved recipes -------------------------------------------------------

    def cached_recipes(self) -> dict[str, tuple[Any, str]]:
        return {p: (json.loads(s), r) for p, s, r in self.db.execute("SELECT path, stamp, recipe FROM recipes")}

    def cache_recipe(self, path: str, stamp: Any, recipe_json: str) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO recipes VALUES (?, ?, ?)", (path, json.dumps(stamp), recipe_json))


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def file_stamp(path: Path) -> list[int] | None:
    try:
        return list(_stamp(path.stat()))
    except FileNotFoundError:
        return None


class WorkspaceLock:
    """An exclusive lock on one workspace's out/ for the length of a command.

    flock is released by the kernel when its holder dies, so a lock left by a
    killed build never blocks the next one.
    """

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "lock"
        self.fd: int | None = None

    def __enter__(self) -> "WorkspaceLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            print(f"waiting for the build already running in this workspace (pid {holder}) ...", file=sys.stderr)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
