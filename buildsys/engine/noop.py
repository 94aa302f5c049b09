"""The no-op answer: "nothing to do" from stats alone, derived from what the build read.

A build that leaves everything up to date records what it printed together with
the stamp (size, mtime, inode, link count) of every path its decisions read, and
the environment its step keys read. The next identical command stats those paths;
if nothing moved, it prints the recorded answer without resolving a single recipe
(ninja's manifest check works the same way). Anything that differs falls back to
the full path, which records again.

There is one dependency model, the rebuilder's; this module only remembers what
it read, through a `Reads` collector (buildsys/core/reads.py) the build fills as it goes:
- `State.digest` and `State.remember` note every file whose content a key or a
  trace was compared with: the files steps name (checkpoints, data), the project
  sources the traces list, the artifacts under out/;
- `loading.load` notes the recipes folder, every recipe's sources (`extends`
  bases included) and the schema;
- `resolve` notes every folder an `npy` glob can reach and each images folder;
- `record_build` adds the store blob of each artifact, whose presence the
  rebuilder checks, and `record` the folders on the way down to every workspace
  file (a new module beside the model's source, a new sub-folder of data).
The environment is what the keys read, asked of the same modules
(`keys.no_op_environment`, beside the key's own `keys.step_environment`): the
installed distributions, the processor and the GPU's driver files, with the
interpreter.

buildsys's own code is keyed by the source files that decide the graph and the
keys (`KEY_SOURCES`): the package version, the recipe reader and its defaults,
the resolver, the key document (engine/keys.py), the digests, the tool and device
queries, the state's layout and every step module (a step's VERSION, TOOLS and
DEVICE). A VERSION bump, a new package version or a changed schema therefore
misses, and so does any other edit of those files (the full path then finds
every key unchanged and records again). An edit anywhere else (the command line,
the scheduler, the workers, the reports) changes no key and no graph, so the
recorded answer stands, as a step's key stands when its code changes without a
VERSION bump. Whoever moves key-making code to another module adds that module
here; tests/test_noop.py checks the list against the code. A change to what the
answer looks like bumps this module's VERSION.

Stamps are grouped by folder, and each signature's answer is a file of its own
(`noop.json` for a plain command), so recording one rewrites only it. A store
blob that an artifact under out/ is a hard link of is not stamped on its own:
the two names share one inode, so the artifact's stamp already moves when the
blob's bytes do, and its link count drops when the blob is deleted or replaced.

`check` imports only the standard library, `keys`, `reads` and `toolchain`.
"""
from __future__ import annotations

import json
import os

from buildsys.core.reads import Reads
from buildsys.engine.keys import no_op_environment

MANIFEST = "noop.json"
VERSION = 3
# Paths relative to the buildsys package; a folder stands for its .py files.
KEY_SOURCES = ("__init__.py", "core/canonical.py", "core/datafiles.py", "core/gpu.py", "core/kinds.py", "engine/keys.py",
               "storage/state.py", "core/toolchain.py", "recipe", "steps")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def signature(recipes: list[str], only: list[str] | None, require_all: bool) -> str:
    """What distinguishes one command's answer from another's: its recipe selectors, --only, --require-all."""
    return json.dumps([sorted(recipes), sorted(only or []), require_all])


_PLAIN = signature([], None, False)  # `buildsys build` / `status` with no arguments


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def _stamp(st) -> list[int] | None:
    return None if st is None else [st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink]


def key_sources() -> list[str]:
    """buildsys's source files that decide the graph and the keys (see the module docstring), and their folders."""
    found = []
    for rel in KEY_SOURCES:
        path = os.path.join(_PACKAGE, rel)
        found.append(path)  # a folder too: a module added or removed moves its stamp
        if os.path.isdir(path):
            found.extend(os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".py"))
    return found


def _folders_above(meta: str, paths: set[str]) -> set[str]:
    """Every folder from the workspace root down to each workspace file outside out/.

    A file added anywhere on the way (a new sub-folder of calibration images that
    a recursive glob would find, a module beside the model's source) changes one
    of these folders' stamps.
    """
    out = os.path.dirname(os.path.abspath(meta))
    root = os.path.dirname(out)
    found: set[str] = set()
    for path in sorted(paths):  # in one order every run; a path outside the root has no folder the walk takes
        if path == out or path.startswith(out + os.sep):
            continue
        folder = os.path.dirname(path)
        while folder not in found and (folder == root or folder.startswith(root + os.sep)):
            found.add(folder)
            folder = os.path.dirname(folder)
    return found


def _path(meta: str, sig: str) -> str:
    """One manifest file per command signature; the plain command's is noop.json."""
    if sig == _PLAIN:
        return os.path.join(meta, MANIFEST)
    # A file name, not a key: the entry inside names its signature and is checked against
    # it. FNV-1a, so that no hashing module is imported on the fast path.
    h = 0xCBF29CE484222325
    for byte in sig.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(meta, f"noop-{h:016x}.json")


def check(meta: str, sig: str) -> dict | None:
    """The recorded answer for the command `sig`, when every stamp and the environment still match."""
    try:
        with open(_path(meta, sig), "rb") as f:
            entry = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != VERSION or entry.get("signature") != sig:
        return None
    # Stamps are absolute paths: a copied workspace must not be answered from the original's files.
    if entry.get("meta") != os.path.abspath(meta):
        return None
    stat = os.stat
    try:
        for folder, rows in entry["stamps"].items():
            prefix = folder + os.sep  # every stamped path is absolute (Reads and key_sources make them so)
            for name, *stamp in rows:
                try:
                    st = stat(prefix + name)
                except OSError:
                    if stamp != [None]:
                        return None
                    continue
                if stamp != [st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink]:
                    return None
    except (KeyError, TypeError, ValueError):
        return None
    if entry.get("environment") != json.loads(json.dumps(no_op_environment())):
        return None
    return entry


def record(meta: str, sig: str, reads: Reads, answer: dict) -> bool:
    """Store `answer` for the command `sig`, stamped by `reads`; False when a path is too fresh to trust."""
    import time

    from buildsys.storage.safepath import write_atomic
    from buildsys.storage.state import settled

    now = time.time_ns()
    store = os.path.join(meta, "store") + os.sep
    stats = {}
    for path in reads.paths | _folders_above(meta, reads.paths) | set(key_sources()):
        st = _stat(path)
        if st is not None and not settled(st, now):
            return False  # the next full no-op records it
        stats[path] = st
    linked = {(st.st_dev, st.st_ino) for path, st in stats.items()
              if st is not None and not path.startswith(store)}
    grouped: dict[str, list] = {}
    for path in sorted(stats):
        st = stats[path]
        if st is not None and path.startswith(store) and (st.st_dev, st.st_ino) in linked:
            continue  # covered by the artifact that is a hard link of it (see above)
        folder, name = os.path.split(path)
        stamp = _stamp(st)
        grouped.setdefault(folder, []).append([name, *(stamp if stamp is not None else [None])])
    entry = {"version": VERSION, "signature": sig, "meta": os.path.abspath(meta), "stamps": grouped,
             "environment": no_op_environment(), **answer}
    write_atomic(_path(meta, sig), json.dumps(entry, separators=(",", ":")).encode("utf-8"))
    return True


def replay_build(meta: str, recipes, only, require_all: bool, dry_run: bool, verbose: bool,
                 trims: bool) -> dict | None:
    """The recorded answer of a `build` command ({"steps", "exit"}), or None when it must run.

    A dry run, a verbose listing (it shows cached steps too) and a build that trims
    the cache afterwards are never answered from the record.
    """
    if dry_run or verbose or trims:
        return None
    return check(meta, signature(recipes, only, require_all))


def replay_status(meta: str, recipes) -> list[tuple[str, str, str]] | None:
    """The rows of an all-up-to-date `status`, from the recorded answer of the same selection, or None."""
    entry = check(meta, signature(recipes, None, False))
    if entry is None:
        return None
    from buildsys.core.verdict import Verdict
    from buildsys.engine.status import status_word

    return [(s["id"], *status_word(s["state"], s["reason"], Verdict.from_json(s))) for s in entry["steps"]]


def worth_recording(dry_run: bool, problems: bool, code: int) -> bool:
    """Whether a finished build's answer is one a repeat would give: not a dry run, every recipe read,
    no step failed (a failure is tried again)."""
    from buildsys.core.exitcodes import EXIT_STEP

    return not dry_run and not problems and code != EXIT_STEP


def answer(outcomes) -> list[dict] | None:
    """What a repeat of this build prints for each step, or None when a repeat would do work.

    A step that ran or was restored is up to date the next time; one that was
    unavailable or blocked stays so while nothing it was decided from moves.
    """
    steps = []
    for o in outcomes:
        if o.state in ("ran", "cached", "cutoff"):
            step = {"id": o.step, "state": "cached", "reason": "up to date", "seconds": 0.0}
            if o.verdict is not None:
                step.update(o.verdict.brief().to_json())
            steps.append(step)
        elif o.state in ("unavailable", "skipped"):
            steps.append(o.as_json())
        else:
            return None
    return steps


def record_build(meta: str, sig: str, reads: Reads, outcomes, code: int) -> bool:
    """Record a finished build's answer; False when it is not one a repeat would give, or too fresh."""
    from pathlib import Path

    from buildsys.storage.store import Store

    steps = answer(outcomes)
    if steps is None:
        return False
    store = Store(Path(meta) / "store")
    blobs = Reads(reads.paths)
    for o in outcomes:
        for files in (o.outputs or {}).values() if o.state in ("ran", "cached", "cutoff") else ():
            for _, digest, _ in files:
                blobs.file(store.path(digest))
    return record(meta, sig, blobs, {"steps": steps, "exit": code})


def forget(meta: str) -> None:
    """Invalidate every recorded answer (a build is about to change things)."""
    try:
        names = os.listdir(meta)
    except OSError:
        return
    for name in names:
        if name == MANIFEST or (name.startswith("noop-") and name.endswith(".json")):
            try:
                os.unlink(os.path.join(meta, name))
            except FileNotFoundError:
                pass
