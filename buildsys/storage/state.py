"""Build state: the SQLite database under out/.buildsys/ and the workspace lock.

The database holds four things: memoised file digests, the last trace of every
step (what it was built from and what it produced), the action cache (every
key ever built, so returning to an earlier configuration is a hit), and the
resolved-recipe cache that lets a no-op build skip YAML and schema work.

When each action-cache key was last used is kept beside it (`action_uses`) for
`cache gc`. It is written only when a step's trace changes (a run or a restore
stamps the new key and the key the step leaves): a key that is some step's
current trace is in use by definition, so a no-op build writes nothing.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.core.canonical import digest_file
from buildsys.core.reads import Reads

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
CREATE TABLE IF NOT EXISTS action_uses (key TEXT PRIMARY KEY, used REAL NOT NULL);
"""


class _Encoded(str):
    """JSON text read from the database, decoded the first time it is asked for."""


class Trace:
    """What a step was last built from and what it produced.

    A trace read back from the database keeps its JSON columns as text until a
    field is used: a no-op build compares keys and reads outputs and deps, and
    never needs the (large) key document of a step that stays cached.
    """

    __slots__ = ("_deps", "_doc", "_outputs", "_verdict", "key", "seconds", "step")

    # A dict, or the JSON text (_Encoded) it is decoded from when first read.
    def __init__(self, step: str, key: str, doc: dict | str, deps: dict | str, outputs: dict | str,
                 verdict: dict | str | None, seconds: float):
        self.step = step
        self.key = key
        self._doc = doc
        self._deps = deps  # {"files": {path: digest}, "dists": {name: version}}
        self._outputs = outputs  # {output: [[relname, digest, size], ...]}
        self._verdict = verdict
        self.seconds = seconds

    @classmethod
    def _from_row(cls, step: str, key: str, doc: str, deps: str, outputs: str, verdict: str | None,
                  seconds: float) -> Trace:
        return cls(step, key, _Encoded(doc), _Encoded(deps), _Encoded(outputs),
                   _Encoded(verdict) if verdict else None, seconds)

    def _field(self, slot: str) -> Any:
        value = getattr(self, slot)
        if isinstance(value, _Encoded):
            value = {} if value == "{}" else json.loads(value)  # most steps discover nothing
            setattr(self, slot, value)
        return value

    @property
    def doc(self) -> dict:
        return self._field("_doc")

    @property
    def deps(self) -> dict:
        return self._field("_deps")

    @property
    def outputs(self) -> dict:
        return self._field("_outputs")

    @property
    def verdict(self) -> dict | None:
        return self._field("_verdict")

    def _text(self, slot: str) -> str | None:
        """A field as JSON text, without a decode/encode round trip when it was never decoded."""
        value = getattr(self, slot)
        if value is None:
            return None
        return str(value) if isinstance(value, _Encoded) else json.dumps(value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (self.step, self.key, self.doc, self.deps, self.outputs, self.verdict, self.seconds) == (
            other.step, other.key, other.doc, other.deps, other.outputs, other.verdict, other.seconds)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Trace(step={self.step!r}, key={self.key!r}, seconds={self.seconds!r})"


class Traces(Mapping):
    """Every step's last trace, by step id; each row is decoded only when it is looked up."""

    def __init__(self, rows: dict[str, tuple]):
        self._rows = rows
        self._made: dict[str, Trace] = {}

    def __getitem__(self, step: str) -> Trace:
        trace = self._made.get(step)
        if trace is None:
            trace = self._made[step] = Trace._from_row(step, *self._rows[step])
        return trace

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, step: object) -> bool:
        return step in self._rows


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


# A file modified within the last two seconds may change again within the same mtime
# tick of a coarse file system, so its stamp cannot tell that later change: neither the
# digest memo nor the no-op manifest trusts it.
SETTLE_NS = 2_000_000_000


def settled(st: os.stat_result, now_ns: int | None = None) -> bool:
    """Whether `st` is old enough that a later change of the file will move its stamp."""
    return (time.time_ns() if now_ns is None else now_ns) - st.st_mtime_ns >= SETTLE_NS


class _SchemaMismatch(Exception):
    """The state database is readable but was written with another SCHEMA_VERSION."""


_SQLITE_HEADER = b"SQLite format 3\x00"


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> bool:
    """Whether `exc`, raised while opening `path`, means the file is not a usable database.

    Damage is a file that does not start like an SQLite database, one SQLite
    finds corrupt, or one whose tables this version cannot read. A database that
    is busy, locked, read-only or cannot be opened is not damaged: it is never
    set aside. An empty file is a valid empty database.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError:
        return False
    if not header:
        return False
    if header != _SQLITE_HEADER:
        return True
    name = getattr(exc, "sqlite_errorname", "") or ""
    # SQLITE_ERROR on a readable file: "no such table" / "no such column", another layout
    return name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or name == "SQLITE_ERROR"


class State:
    """One workspace's build database. Not shared between threads."""

    def __init__(self, directory: Path, read_only: bool = False):
        """`read_only` (status, explain): nothing is created or written, memoised digests included;
        a workspace never built reads as an empty state."""
        self.directory = directory
        self.path = directory / "state.sqlite"
        self.read_only = read_only
        if read_only:
            self.db = self._open_read_only()
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self.db = self._open()
        self._files: dict[str, tuple[int, int, int, str]] | None = None
        self._dirty_files: dict[str, tuple[int, int, int, str]] = {}
        self.reads = Reads()  # every file digested or remembered: what a no-op answer is stamped by

    def _open(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            db.execute("SELECT count(*) FROM traces").fetchone()
            row = db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise _SchemaMismatch(f"state schema {row and row[0]} is not {SCHEMA_VERSION}")
            return db
        except _SchemaMismatch:
            # A readable database of another version (db is set: _connect() answered): its tables are (re)made below.
            db.close()  # type: ignore[union-attr]
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if not _damaged(self.path, exc):
                raise write_failure(self.path, exc, "open") from None
            bad = self.path.with_suffix(f".sqlite.{int(time.time())}.bad")
            os.replace(self.path, bad)
            for side in ("-wal", "-shm"):
                Path(str(self.path) + side).unlink(missing_ok=True)
            print(
                f"warning: build state {self.path} is unreadable ({exc}); set aside as {bad.name}, "
                "steps will be restored from the store or rebuilt",
                file=sys.stderr,
            )
        try:
            db = self._connect()
            db.executescript(_TABLES)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.OperationalError as exc:
            raise write_failure(self.path, exc) from None
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        if self.path.is_file():
            db = None
            try:
                db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=60)
                row = db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
                db.execute("SELECT count(*) FROM action_uses").fetchone()
                if row is not None and int(row[0]) == SCHEMA_VERSION:
                    return db
            except sqlite3.DatabaseError:
                pass  # unreadable or of another version: what a build would set aside or remake
            if db is not None:
                db.close()
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.executescript(_TABLES)
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if not db.execute("SELECT name FROM sqlite_master WHERE name='traces'").fetchone():
            db.executescript(_TABLES)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif not db.execute("SELECT name FROM sqlite_master WHERE name='action_uses'").fetchone():
            db.executescript(_TABLES)  # a database made before last use was recorded
        return db

    def close(self, flush: bool = True) -> None:
        """Write what is pending and close; `flush=False` after a failure, which a flush would only repeat."""
        try:
            if flush:
                self.flush()
        finally:
            self.db.close()

    # -- file digests, memoised by (path, size, mtime, inode) ------------------

    def _load_files(self) -> dict[str, tuple[int, int, int, str]]:
        if self._files is None:
            self._files = {
                p: (s, m, i, d) for p, s, m, i, d in self.db.execute("SELECT path, size, mtime_ns, ino, digest FROM files")
            }
        return self._files

    def digest(self, path: str | os.PathLike) -> str | None:
        """The content digest of `path`, reading its bytes only when its stat changed.

        Returns None when the file does not exist.
        """
        key = os.fspath(path)
        self.reads.file(key)
        try:
            st = os.stat(key)
        except FileNotFoundError:
            return None
        memo = self._load_files().get(key)
        if memo is not None and memo[:3] == _stamp(st):
            return memo[3]
        value = digest_file(key)
        self.remember(key, value, st)
        return value

    def remember(self, path: str | os.PathLike, digest: str, st: os.stat_result | None = None) -> None:
        """Record a digest the caller already knows (a file it just wrote)."""
        key = os.fspath(path)
        self.reads.file(key)
        st = st or os.stat(key)
        if not settled(st):
            return
        entry = (*_stamp(st), digest)
        self._load_files()[key] = entry
        self._dirty_files[key] = entry

    def flush(self) -> None:
        if self._dirty_files and not self.read_only:
            with self.transaction():
                self.db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                    [(p, *v) for p, v in self._dirty_files.items()],
                )
            self._dirty_files.clear()

    def transaction(self):
        return _Transaction(self.db, self.path)

    # -- traces and the action cache ------------------------------------------

    def traces(self, steps: list[str] | None = None) -> Traces:
        """The last trace of every step (or of `steps`), decoded lazily, one step at a time."""
        query = "SELECT step, key, doc, deps, outputs, verdict, seconds FROM traces"
        rows: Iterable[Any]
        if steps is None:
            rows = self.db.execute(query)
        else:
            wanted = list(dict.fromkeys(steps))
            fetched: list[Any] = []
            for i in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
                chunk = wanted[i:i + 500]
                fetched += self.db.execute(f"{query} WHERE step IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            rows = fetched
        return Traces({step: rest for step, *rest in rows})

    def record(self, trace: Trace, deps_id: str) -> None:
        """Commit a successful step: its trace and its action-cache entry, atomically."""
        now = time.time()
        verdict = trace._text("_verdict")
        deps, outputs = trace._text("_deps"), trace._text("_outputs")
        with self.transaction():
            # the key this step leaves was in use until now; the key it takes is used now
            self.db.execute("INSERT OR REPLACE INTO action_uses SELECT key, ? FROM traces WHERE step = ?",
                            (now, trace.step))
            self.db.execute("INSERT OR REPLACE INTO action_uses VALUES (?, ?)", (trace.key, now))
            self.db.execute(
                "INSERT OR REPLACE INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (trace.step, trace.key, trace._text("_doc"), deps, outputs, verdict, trace.seconds, now),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO actions VALUES (?, ?, ?, ?, ?, ?)",
                (trace.key, deps_id, deps, outputs, verdict, now),
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

    def forget_recipes(self, names: list[str]) -> None:
        """Forget the traces and failures of every step of the recipes `names`."""
        wanted = set(names)
        self.forget_traces([s for (s,) in self.db.execute("SELECT step FROM traces")
                            if s.partition(":")[0] in wanted])

    def record_failure(self, step: str, key: str, message: str, log: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)", (step, key, message, log, time.time())
            )

    def failures(self) -> dict[str, tuple[str, str, str]]:
        return {s: (k, m, lg) for s, k, m, lg in self.db.execute("SELECT step, key, message, log FROM failures")}

    # -- what the cache holds, for `cache stats` and `cache gc` -----------------

    def inventory(self) -> Inventory:
        """Every recorded entry's outputs (JSON text) and when it was made or last used."""
        db = self.db
        return Inventory(actions=list(db.execute("SELECT key, outputs, created FROM actions")),
                         traces=list(db.execute("SELECT step, key, outputs, finished FROM traces")),
                         uses=list(db.execute("SELECT key, used FROM action_uses")))

    def evict(self, keys: set[str]) -> None:
        """Forget the entries `keys`: their actions, their use stamps and the traces that name them.

        The caller holds the workspace lock and removes their blobs afterwards.
        """
        ordered = [(k,) for k in sorted(keys)]
        with self.transaction():
            self.db.executemany("DELETE FROM actions WHERE key = ?", ordered)
            self.db.executemany("DELETE FROM action_uses WHERE key = ?", ordered)
            steps = [(s,) for s, k in self.db.execute("SELECT step, key FROM traces") if k in keys]
            self.db.executemany("DELETE FROM traces WHERE step = ?", steps)
            # stamps of keys that are gone already (an entry found damaged is forgotten by the build)
            self.db.execute("DELETE FROM action_uses WHERE key NOT IN (SELECT key FROM actions) "
                            "AND key NOT IN (SELECT key FROM traces)")

    # -- resolved recipes -------------------------------------------------------

    def cached_recipes(self) -> dict[str, tuple[Any, str]]:
        return {p: (json.loads(s), r) for p, s, r in self.db.execute("SELECT path, stamp, recipe FROM recipes")}

    def cache_recipe(self, path: str, stamp: Any, recipe_json: str) -> None:
        self.cache_recipes([(path, stamp, recipe_json)])

    def cache_recipes(self, entries: list[tuple[str, Any, str]], drop: Sequence[str] = ()) -> None:
        """Store resolved recipes (path, stamp, recipe JSON) and drop others, in one transaction."""
        if (not entries and not drop) or self.read_only:
            return
        with self.transaction():
            self.db.executemany("DELETE FROM recipes WHERE path = ?", [(p,) for p in drop])
            self.db.executemany("INSERT OR REPLACE INTO recipes VALUES (?, ?, ?)",
                                [(p, json.dumps(stamp), text) for p, stamp, text in entries])


@dataclass(frozen=True)
class Inventory:
    """What the state records for the cache; outputs are the JSON text the state stores."""

    actions: list[tuple[str, str, float]]  # key, outputs, created
    traces: list[tuple[str, str, str, float | None]]  # step, key, outputs, finished
    uses: list[tuple[str, float]]  # key, last used


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT; a write the disk refuses is rolled back and reported as a StorageError."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db = db
        self.path = path

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise write_failure(self.path, exc) from None
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.OperationalError as failed:
                exc = failed
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolled back itself (a full disk or I/O error ends the transaction)
        if isinstance(exc, sqlite3.OperationalError):
            raise write_failure(self.path, exc) from None
        return False


def write_failure(path: Path, exc: sqlite3.Error, doing: str = "write"):
    """The StorageError for a write SQLite could not make (read-only, full, I/O error, locked too long)."""
    from buildsys.core.errors import StorageError

    name = getattr(exc, "sqlite_errorname", "") or ""
    hints = {"SQLITE_READONLY": "the folder or its file system is read-only; make it writable and run again",
             "SQLITE_FULL": "the disk is full; free some space (`buildsys clean --cache` empties this workspace's "
                            "store) and run the command again",
             "SQLITE_BUSY": "another program holds the database; let it finish and run again",
             "SQLITE_CANTOPEN": "the folder cannot be written: check its permissions and free space",
             "SQLITE_IOERR": "the disk refused a write: is it full or read-only? Fix it and run again"}
    hint = next((h for key, h in hints.items() if name.startswith(key)),
                "is another program holding it, or is the folder read-only or full?")
    return StorageError(f"cannot {doing} the build state {path}: {exc}", hint=hint)


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

    def __enter__(self) -> WorkspaceLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            print(f"waiting for the build already running in this workspace (pid {holder}) ...", file=sys.stderr)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        except OSError as exc:  # a full disk: the lock is held all the same, but the command cannot go on
            self.__exit__()
            raise type(exc)(exc.errno, exc.strerror, str(self.path)) from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
