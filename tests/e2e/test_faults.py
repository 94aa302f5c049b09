"""Faults a build must survive: kill -9 at any moment, Ctrl-C, damaged store entries and state,
concurrent builds, a dead lock holder, inputs that change while a step runs, and repeat builds.

Each test drives the real command on tiny models (tests/fixtures/models as `tm`, and the
hostile modules of tests/fixtures/bad as `tb`) and asserts what a user would see: exit
codes, messages, the bytes under out/ and which steps ran.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FIXTURES, REPO, Result, Workspace, tiny_recipe, worker_pids

BAD_MODULES = REPO / "tests" / "fixtures" / "bad"
TRACEBACK = "Traceback (most recent call last)"
STEPS = ("export", "reference", "simplify", "parity[fp32]", "engine[onnxruntime-fp32]")
# Produced by ONNX Runtime, whose ORT-format writer orders some tables differently from run to
# run (same model, same machine): compared with what the build recorded, not with a clean build.
NOT_BYTE_STABLE = ("engines/onnxruntime-fp32.ort",)


# -- helpers -----------------------------------------------------------------------------------


def recipe(features: int = 4, factory: str = "tm.tiny:tiny", kwargs: str | None = None) -> str:
    text = tiny_recipe().replace("shape: [batch, 4]", f"shape: [batch, {features}]")
    return text.replace("factory: \"tm.tiny:tiny\", kwargs: {features: 4}",
                        f"factory: \"{factory}\", kwargs: {kwargs or '{features: ' + str(features) + '}'}")


def new_workspace(root: Path, recipes: dict[str, str]) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURES, root / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BAD_MODULES, root / "tb", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "recipes").mkdir()
    ws = Workspace(root)
    for name, text in recipes.items():
        ws.write(f"recipes/{name}.yaml", text)
    return ws


def command(ws: Workspace, *args: str) -> list[str]:
    return [sys.executable, "-m", "buildsys", "-C", str(ws.root), *args]


def start(ws: Workspace, *args: str, **kw) -> subprocess.Popen:
    """A build in its own session (so its process group can be signalled), output captured."""
    return subprocess.Popen(command(ws, *args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def wait_no_workers(root: Path, limit: float) -> tuple[int, float]:
    """(workers seen at first, seconds until none was left); kills what is left after `limit`."""
    first = len(worker_pids(root))
    began = time.monotonic()
    while worker_pids(root) and time.monotonic() - began < limit:
        time.sleep(0.1)
    waited = time.monotonic() - began
    for pid in worker_pids(root):  # started by this test's build: do not leave them running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return first, waited


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifacts(out: Path) -> dict[str, str]:
    """Every artifact under out/<recipe>/ (logs left out), by workspace-relative path, with its sha256."""
    found = {}
    if not out.is_dir():
        return found
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in (".buildsys", "reports")):
        for p in sorted(folder.rglob("*")):
            if p.is_file() and "logs" not in p.relative_to(folder).parts and not p.name.endswith(".tmp"):
                found[p.relative_to(out).as_posix()] = sha(p)
    return found


def traces(root: Path) -> dict[str, dict]:
    con = sqlite3.connect(f"file:{root / 'out/.buildsys/state.sqlite'}?mode=ro", uri=True)
    try:
        return {s: json.loads(o) for s, o in con.execute("SELECT step, outputs FROM traces")}
    finally:
        con.close()


def recorded(root: Path) -> dict[str, str]:
    """What the state says every out/ artifact holds: workspace-relative path under out/ -> digest."""
    folders = {"model": "", "reference": "", "result": "parity/", "engine": "engines/"}
    out = {}
    for step, outputs in traces(root).items():
        rec = step.partition(":")[0]
        for name, files in outputs.items():
            for rel, digest, _ in files:
                out[f"{rec}/{folders[name]}{rel}"] = digest
    return out


def bad_blobs(root: Path) -> list[str]:
    store = root / "out/.buildsys/store"
    return [p.name for p in store.rglob("*") if p.is_file() and sha(p) != p.name] if store.is_dir() else []


def scratch_left(root: Path) -> list[str]:
    """What is left in out/.buildsys/tmp, the steps' scratch folders."""
    tmp = root / "out" / ".buildsys" / "tmp"
    return [str(p) for p in tmp.rglob("*")] if tmp.exists() else []


def stray_temp_files(root: Path) -> list[str]:
    """Temporary files of an atomic write (`.<name>.<pid>.tmp`) left anywhere under out/."""
    return [str(p) for p in (root / "out").rglob("*.tmp")]


def no_traceback(*texts: str) -> None:
    for t in texts:
        assert TRACEBACK not in t, t[-3000:]


def blob_of(root: Path, rel: str) -> Path:
    digest = recorded(root)[rel]
    return root / "out/.buildsys/store" / digest[:2] / digest


# -- kill -9 at random moments ---------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_nothing_corrupt_or_stale(tmp_path: Path):
    """SIGKILL `build -j 2` at uniformly random moments of a build, one to five times in a row from
    an empty out/, then rebuild to completion: every artifact must equal a clean build's bytes and
    what the state recorded, every store entry must hash to its name, no scratch may be left, and a
    further build must run nothing."""
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4), "b": recipe(6)})
    began = time.monotonic()
    r = ws.build("-j", "2")
    duration = time.monotonic() - began
    assert r.code == 0, r.stderr
    clean = artifacts(ws.root / "out")
    assert len(clean) == 10
    stable = {k: v for k, v in clean.items() if not k.endswith(NOT_BYTE_STABLE)}

    rng = random.Random(20250611)
    kills = finished_first = cycles = corrupt = stale = missing = failed_rebuilds = orphans = strays = 0
    problems: list[str] = []
    out = ws.root / "out"
    while kills < 50:
        cycles += 1
        shutil.rmtree(out)
        for _ in range(rng.randint(1, 5)):
            proc = start(ws, "build", "-j", "2")
            try:
                proc.communicate(timeout=rng.uniform(0.0, duration))
                finished_first += 1
                break
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                # Workers live in sessions of their own, so the group kill misses them; they must
                # die with the build all the same (test_killed_build_leaves_no_worker_running).
                # Those still running after a few seconds are counted, then killed here.
                seen, waited = wait_no_workers(ws.root, limit=5)
                orphans += seen if waited >= 5 else 0
                proc.communicate()
                kills += 1
        r = ws.build("-j", "2")
        no_traceback(r.stdout, r.stderr)
        if r.code != 0:
            failed_rebuilds += 1
            problems.append(f"cycle {cycles}: rebuild exited {r.code}: {r.stderr[-800:]}")
            continue
        got = artifacts(out)
        record = recorded(ws.root)
        for rel, digest in stable.items():
            if rel not in got:
                missing += 1
                problems.append(f"cycle {cycles}: {rel} missing")
            elif got[rel] != digest:
                stale += 1
                problems.append(f"cycle {cycles}: {rel} differs from the clean build")
        for rel, digest in got.items():
            if record.get(rel) != digest:
                corrupt += 1
                problems.append(f"cycle {cycles}: {rel} holds {digest[:12]}, the state says {str(record.get(rel))[:12]}")
        if set(got) != set(clean):
            problems.append(f"cycle {cycles}: artifacts {sorted(set(got) ^ set(clean))} differ in presence")
        damaged = bad_blobs(ws.root)
        corrupt += len(damaged)
        problems += [f"cycle {cycles}: store entry {d[:12]} does not hash to its name" for d in damaged]
        problems += [f"cycle {cycles}: scratch left: {p}" for p in scratch_left(ws.root)]
        # counted, not asserted here: test_rerun_that_writes_the_same_bytes_leaves_no_temporary_file
        strays += len(stray_temp_files(ws.root))
        again = ws.build("-j", "2")
        if again.code != 0 or again.ran():
            problems.append(f"cycle {cycles}: the build after the rebuild ran {again.ran()}")
    print(f"\nkill -9 trials: {kills} kills in {cycles} cycles ({finished_first} builds finished before their "
          f"kill); clean build {duration:.1f}s; corrupt artifacts or store entries: {corrupt}; stale artifacts: "
          f"{stale}; missing: {missing}; failed rebuilds: {failed_rebuilds}; workers that outlived the "
          f"build by 5s: {orphans}; stray .tmp files under out/ after the rebuilds: {strays}")
    assert kills >= 50
    assert problems == []
    assert corrupt == stale == missing == failed_rebuilds == orphans == 0


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig, model", [
    (signal.SIGKILL, "tb.slow_forward:net"),
    (signal.SIGHUP, "tb.slow_forward:net"),
    (signal.SIGKILL, "tb.slow_child:net"),
], ids=["SIGKILL", "SIGHUP", "SIGKILL-step-child"])
def test_killed_build_leaves_no_worker_running(tmp_path: Path, sig: signal.Signals, model: str):
    """Workers run in sessions of their own, so a signal to the build's process group misses them:
    a busy worker (and any process its step started) must still die with the build."""
    ws = new_workspace(tmp_path / "ws", {"slow": recipe(4, model, "{seconds: 30}")})
    (ws.root / "slow.flag").write_text("")
    proc = start(ws, "build")
    child = None
    try:
        _wait_for(ws.root / "slow.started", proc, limit=120)
        if model.startswith("tb.slow_child"):
            child = int((ws.root / "slow.child").read_text())
            assert _alive(child)
        assert worker_pids(ws.root), "no worker was running the step"
        os.killpg(proc.pid, sig)
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 5
        while (worker_pids(ws.root) or (child and _alive(child))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker_pids(ws.root) == [], "a worker outlived the killed build"
        assert not (child and _alive(child)), "a process the step started outlived the killed build"
    finally:
        wait_no_workers(ws.root, limit=0)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def _wait_for(marker: Path, proc: subprocess.Popen, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the build ended before the step started: {proc.returncode}\n{err[-3000:]}")
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.05)


# -- Ctrl-C --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd, sig", [("build", signal.SIGINT), ("check", signal.SIGINT), ("build", signal.SIGTERM)],
                         ids=["build-SIGINT", "check-SIGINT", "build-SIGTERM"])
def test_interrupt_stops_the_build_at_once_and_records_nothing(tmp_path: Path, cmd: str, sig: signal.Signals):
    """Ctrl-C (or a polite kill) while export runs: exit 130 within seconds, workers stopped, scratch
    removed, and the interrupted step runs again next time."""
    ws = new_workspace(tmp_path / "ws", {"slow": recipe(4, "tb.slow_forward:net", "{seconds: 20}")})
    (ws.root / "slow.flag").write_text("")
    proc = start(ws, cmd)
    try:
        _wait_for(ws.root / "slow.started", proc, limit=120)
        assert (ws.root / "out/.buildsys/tmp/slow__export").is_dir()  # export is running
        sent = time.monotonic()
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        left = worker_pids(ws.root)
        wait_no_workers(ws.root, limit=0)
    no_traceback(out, err)
    assert proc.returncode == 130, err
    assert took < 5, f"took {took:.1f}s to stop"
    assert "interrupted" in err
    assert left == [], "a worker outlived the interrupted build"
    assert scratch_left(ws.root) == []
    assert "slow:export" not in traces(ws.root)
    assert not (ws.root / "out/slow/model.onnx").exists()
    # the interrupted step runs again (quickly now): nothing half-done was recorded
    (ws.root / "slow.flag").unlink()
    r = ws.build()
    assert r.code == 0, r.stderr
    assert r.states()["slow:export"] == "ran"
    assert next(s["reason"] for s in r.json["steps"] if s["id"] == "slow:export") == "no earlier build"


# -- damaged store entries and state -----------------------------------------------------------------

DAMAGE = [
    # (artifact under out/tiny/, where the bytes are damaged, how, the step that must rebuild it)
    ("model.onnx", "store", "truncate", "export"),
    ("model.onnx", "store", "zero", "export"),
    ("model.onnx", "store", "flip", "export"),
    ("model.onnx", "store", "delete", "export"),
    ("model.onnx", "out", "truncate", "export"),
    ("model.onnx", "out", "zero", "export"),
    ("model.onnx", "out", "flip", "export"),
    ("model.sim.onnx", "store", "flip", "simplify"),
    ("reference.npz", "store", "zero", "reference"),
    ("reference.npz", "out", "flip", "reference"),
    ("parity/fp32.json", "store", "truncate", "parity[fp32]"),
    ("engines/onnxruntime-fp32.ort", "out", "flip", "engine[onnxruntime-fp32]"),
]


def _damage(path: Path, how: str) -> None:
    os.chmod(path, 0o644)
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])  # in place: the hard-linked twin sees it too
    elif how == "zero":
        with open(path, "r+b") as f:
            f.truncate(0)
    elif how == "flip":
        i = len(data) // 2
        with open(path, "r+b") as f:
            f.seek(i)
            f.write(bytes([data[i] ^ 0x10]))
    elif how == "delete":
        path.unlink()
    else:
        raise AssertionError(how)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Workspace, dict[str, str]]:
    ws = new_workspace(tmp_path_factory.mktemp("damage") / "ws", {"tiny": recipe(4)})
    r = ws.build()
    assert r.code == 0, r.stderr
    return ws, artifacts(ws.root / "out")


def _consistent(ws: Workspace, clean: dict[str, str]) -> None:
    got = artifacts(ws.root / "out")
    record = recorded(ws.root)
    assert set(got) == set(clean)
    for rel, digest in got.items():
        assert record[rel] == digest, rel
        if not rel.endswith(NOT_BYTE_STABLE):
            assert digest == clean[rel], rel
        # out/ holds a hard link to the store entry, which hashes to its name
        assert (ws.root / "out" / rel).stat().st_ino == blob_of(ws.root, rel).stat().st_ino, rel
    assert bad_blobs(ws.root) == []


@pytest.mark.parametrize("rel, where, how, owner", DAMAGE, ids=[f"{d[2]}-{d[1]}-{d[0]}" for d in DAMAGE])
def test_damaged_artifact_is_detected_and_rebuilt(built, rel: str, where: str, how: str, owner: str):
    ws, clean = built
    target = blob_of(ws.root, f"tiny/{rel}") if where == "store" else ws.root / "out/tiny" / rel
    _damage(target, how)
    r = ws.build()
    no_traceback(r.stdout, r.stderr)
    assert r.code == 0, r.stderr
    step = next(s for s in r.json["steps"] if s["id"] == f"tiny:{owner}")
    assert step["state"] == "ran", (step, r.states())
    assert step["reason"] in ("a stored artifact was damaged or missing", "outputs missing from the store"), step
    _consistent(ws, clean)
    assert ws.build().ran() == []


def test_out_file_replaced_by_other_bytes_is_restored_from_the_store(built):
    """An editor that writes a new file (new inode) leaves the store entry whole: restored, nothing runs."""
    ws, clean = built
    path = ws.root / "out/tiny/model.onnx"
    path.unlink()
    path.write_bytes(b"not a model")
    r = ws.build()
    assert r.code == 0 and r.ran() == [], r.stderr
    _consistent(ws, clean)


def test_out_file_deleted_is_restored_from_the_store(built):
    ws, clean = built
    (ws.root / "out/tiny/reference.npz").unlink()
    r = ws.build()
    assert r.code == 0 and r.ran() == [], r.stderr
    _consistent(ws, clean)


def test_damaged_entry_of_an_earlier_configuration_is_not_restored(built):
    """Going back to a configuration built before restores it from the action cache, unless the
    entry's bytes are damaged: then the step runs again."""
    ws, clean = built
    text = (ws.root / "recipes/tiny.yaml").read_text()
    old = recorded(ws.root)["tiny/parity/fp32.json"]
    ws.write("recipes/tiny.yaml", text.replace("atol: 1.0e-4", "atol: 2.0e-4"))
    assert ws.build().ran() == ["tiny:parity[fp32]"]
    _damage(ws.root / "out/.buildsys/store" / old[:2] / old, "flip")
    ws.write("recipes/tiny.yaml", text)
    r = ws.build()
    assert r.code == 0, r.stderr
    assert r.ran() == ["tiny:parity[fp32]"], r.states()
    _consistent(ws, clean)


@pytest.mark.parametrize("how", [
    "garbage",
    "truncated",
    "zero-bytes",
])
def test_corrupt_state_database_is_set_aside_and_the_build_goes_on(tmp_path: Path, how: str):
    ws = new_workspace(tmp_path / "ws", {"tiny": recipe(4)})
    assert ws.build().code == 0
    clean = artifacts(ws.root / "out")
    db = ws.root / "out/.buildsys/state.sqlite"
    data = db.read_bytes()
    if how == "garbage":
        db.write_bytes(random.Random(7).randbytes(len(data)))
    elif how == "truncated":
        db.write_bytes(data[: len(data) // 2])
    else:
        db.write_bytes(b"")
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    # a recipe edit: the no-op fast path (which never opens the state) cannot answer
    ws.write("recipes/tiny.yaml", recipe(4).replace("atol: 1.0e-4", "atol: 2.0e-4"))
    r = ws.build()
    no_traceback(r.stdout, r.stderr)
    assert r.code == 0, r.stderr
    if how != "zero-bytes":  # an empty file is a valid, empty SQLite database
        assert "warning: build state" in r.stderr and "set aside as" in r.stderr, r.stderr
        assert list(db.parent.glob("state.sqlite*.bad"))
    got = artifacts(ws.root / "out")
    assert {k: v for k, v in got.items() if "parity" not in k and not k.endswith(NOT_BYTE_STABLE)} == {
        k: v for k, v in clean.items() if "parity" not in k and not k.endswith(NOT_BYTE_STABLE)}
    assert scratch_left(ws.root) == []
    assert ws.build().ran() == []


def test_rerun_that_writes_the_same_bytes_leaves_no_temporary_file(tmp_path: Path):
    """out/<name> is already a hard link to the blob a re-run writes again (early cutoff): rename(2)
    between two links of one inode does nothing, so the temporary link must be removed explicitly."""
    ws = new_workspace(tmp_path / "ws", {"tiny": recipe(4)})
    assert ws.build().code == 0
    src = ws.root / "tm/tiny.py"
    for n in range(2):
        src.write_text(src.read_text() + f"\n# comment {n}: export runs again and writes the same bytes\n")
        r = ws.build()
        assert r.code == 0 and r.ran() == ["tiny:export", "tiny:reference"], r.states()
        assert r.states()["tiny:simplify"] == "cutoff"
        assert stray_temp_files(ws.root) == []
    for rel in recorded(ws.root):
        assert (ws.root / "out" / rel).stat().st_ino == blob_of(ws.root, rel).stat().st_ino, rel
    assert ws.build().ran() == []


# -- locks ---------------------------------------------------------------------------------------------


def test_concurrent_builds_wait_for_each_other(tmp_path: Path):
    """Two builds started together on one workspace: both succeed, one waits and says so, every step
    runs once in all, and the artifacts are a clean build's."""
    trials, failures = 3, []
    reference = None
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4), "b": recipe(6)})
    for trial in range(trials):
        shutil.rmtree(ws.root / "out", ignore_errors=True)
        procs = [start(ws, "build", "--json", "-j", "2") for _ in range(2)]
        outputs = [p.communicate(timeout=600) for p in procs]
        results = [Result(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
        try:
            for r in results:
                no_traceback(r.stdout, r.stderr)
                assert r.code == 0, r.stderr
            waited = [r for r in results if "waiting for the build already running in this workspace (pid" in r.stderr]
            assert len(waited) == 1, [r.stderr for r in results]
            ran = sorted(sum((r.ran() for r in results), []))
            assert ran == sorted(f"{n}:{s}" for n in "ab" for s in STEPS), ran
            assert not list((ws.root / "out/.buildsys").glob("*.bad"))
            got = artifacts(ws.root / "out")
            reference = reference or got
            assert {k: v for k, v in got.items() if not k.endswith(NOT_BYTE_STABLE)} == {
                k: v for k, v in reference.items() if not k.endswith(NOT_BYTE_STABLE)}
            assert bad_blobs(ws.root) == []
            assert worker_pids(ws.root) == []
        except AssertionError as exc:
            failures.append(f"trial {trial}: {exc}")
    print(f"\nconcurrent builds: {trials} trials, {len(failures)} failed")
    assert failures == []


def _hold_lock(lock: Path) -> str:
    """Python code that takes the workspace lock the way buildsys does, says so, and sleeps."""
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)\n"
            "print('held', flush=True)\n"
            "time.sleep(float(sys.argv[1]))\n")
    return code


def test_lock_left_by_a_killed_process_does_not_block(tmp_path: Path):
    ws = new_workspace(tmp_path / "ws", {"tiny": recipe(4)})
    lock = ws.root / "out/.buildsys/lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _hold_lock(lock), "600"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert lock.read_text() == str(holder.pid)  # the dead holder's pid is still written there
    began = time.monotonic()
    r = ws.build()
    assert r.code == 0, r.stderr
    assert "waiting" not in r.stderr
    assert time.monotonic() - began < 120


def test_build_waits_for_a_live_lock_holder_and_names_it(tmp_path: Path):
    ws = new_workspace(tmp_path / "ws", {"tiny": recipe(4)})
    lock = ws.root / "out/.buildsys/lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _hold_lock(lock), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        r = ws.build()
        assert r.code == 0, r.stderr
        assert f"waiting for the build already running in this workspace (pid {holder.pid})" in r.stderr
        assert time.monotonic() - began >= 1.0
        assert set(r.states().values()) == {"ran"}
    finally:
        holder.kill()
        holder.wait()


def test_build_that_waited_behind_clean_cache_records_its_work(tmp_path: Path):
    """A build that waited behind `clean --cache` (which deletes the state database) must record its
    work in the database that exists once it holds the lock, not in the deleted one."""
    ws = new_workspace(tmp_path / "ws", {"tiny": recipe(4)})
    assert ws.build().code == 0
    lock = ws.root / "out/.buildsys/lock"
    holder = subprocess.Popen([sys.executable, "-c", _hold_lock(lock), "600"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = start(ws, "build", "--json")
        first = proc.stderr.readline()  # the build now waits for the lock
        assert "waiting for the build already running" in first, first
        # what `clean --cache` does while it holds the lock
        for child in (ws.root / "out").iterdir():
            if child.name != ".buildsys":
                shutil.rmtree(child)
        for child in (ws.root / "out/.buildsys").iterdir():
            if child.name != "lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    finally:
        holder.kill()
        holder.wait()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(Result(0, out, err).ran()) == len(STEPS)
    r = ws.build()
    assert r.code == 0, r.stderr
    assert r.ran() == [], "the work of the build that waited was not recorded"


# -- inputs that change while a step runs ---------------------------------------------------------------


@pytest.mark.parametrize("when", [
    "during_factory",
    "during_forward",
])
def test_source_edited_while_the_step_runs_is_not_recorded(tmp_path: Path, when: str):
    ws = new_workspace(tmp_path / "ws", {"edits": recipe(4, f"tb.self_editing:{when}", "{}")})
    r = ws.build("-k")
    no_traceback(r.stdout, r.stderr)
    assert "# edited while the step ran" in (ws.root / "tb/self_editing.py").read_text()
    assert r.code == 3, r.stderr
    step = next(s for s in r.json["steps"] if s["id"] == "edits:export")
    assert step["state"] == "failed"
    assert "source tb/self_editing.py changed while the step ran; its result was not recorded" in step["message"]
    assert "hint: run the build again once the files are settled" in step["message"]
    assert "edits:export" not in traces(ws.root)
    r = ws.build()
    assert r.code == 0, r.stderr
    assert "edits:export" in r.ran()


def test_checkpoint_rewritten_while_the_step_runs_is_not_recorded(tmp_path: Path):
    import torch

    from tests.fixtures.models.tiny import Tiny

    ws = new_workspace(tmp_path / "ws", {})
    torch.manual_seed(1)
    torch.save(Tiny(4).state_dict(), ws.root / "w.pt")
    ws.write("tb/rewrites.py", """\
        import os
        import torch
        from tm.tiny import Tiny

        def net():
            if not os.path.exists("rewritten"):
                torch.manual_seed(2)
                torch.save(Tiny(4).state_dict(), "w.pt")
                open("rewritten", "w").close()
            return Tiny(4).eval()
        """)
    ws.write("recipes/ck.yaml", recipe(4, "tb.rewrites:net", "{}").replace("kwargs: {}}", "kwargs: {}, checkpoint: w.pt}"))
    r = ws.build("-k")
    no_traceback(r.stdout, r.stderr)
    assert r.code == 3, r.stderr
    step = next(s for s in r.json["steps"] if s["id"] == "ck:export")
    assert step["state"] == "failed"
    assert "w.pt changed while the step ran; its result was not recorded" in step["message"]
    assert "ck:export" not in traces(ws.root)
    r = ws.build()
    assert r.code == 0 and "ck:export" in r.ran(), r.stderr


# -- determinism ------------------------------------------------------------------------------------------


def test_ten_builds_without_a_change_run_nothing(tmp_path: Path):
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4), "b": recipe(6)})
    assert ws.build("-j", "2").code == 0
    first = artifacts(ws.root / "out")
    ran = []
    for i in range(10):
        # -v skips the stat-manifest fast path: half the builds decide step by step
        r = ws.build(*(["-v"] if i % 2 else []))
        assert r.code == 0, r.stderr
        ran += r.ran()
        assert set(r.states().values()) == {"cached"}
    assert ran == []
    assert artifacts(ws.root / "out") == first


def test_parity_reports_of_two_builds_differ_only_in_the_timestamp(tmp_path: Path):
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4), "b": recipe(6)})
    r = ws.run("check", "-j", "2")
    assert r.code == 0, r.stderr
    report = ws.root / "out/reports/parity.json"
    first = json.loads(report.read_text())
    assert ws.run("clean", "--cache").code == 0
    time.sleep(1.1)  # the timestamp has a resolution of one second
    r = ws.run("check", "-j", "2")
    assert r.code == 0, r.stderr
    assert "ran         a:parity[fp32]" in r.stderr  # everything was computed again
    second = json.loads(report.read_text())
    assert first.pop("generated") != second.pop("generated")
    assert first == second


# -- kill -9 at each commit point ------------------------------------------------------------------

# Loaded by the build (not its workers) through PYTHONPATH: SIGKILLs the build the Nth time it
# reaches one commit point, before or after the call, so every point of the commit sequence is hit.
KILLER = '''\
import os, signal, sys

def _install():
    spec = os.environ.get("BUILDSYS_TEST_KILL")
    if not spec:
        return
    module, owner, name, when, nth = spec.split(":")
    import importlib
    target = importlib.import_module(module)
    holder = getattr(target, owner) if owner else target
    original = getattr(holder, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(holder, name, wrapper)

# `python -m buildsys -C DIR build` (a worker, `python -m buildsys.runners.worker`, has no arguments yet)
if "build" in sys.argv[1:]:
    _install()
'''

COMMIT_POINTS = [(m, o, n, when, nth)
                 for m, o, n, nths in [("buildsys.storage.store", "Store", "put", (1, 4)),
                                       ("buildsys.storage.store", "Store", "materialize", (1, 4)),
                                       ("buildsys.storage.state", "State", "record", (1, 5)),
                                       ("buildsys.storage.state", "State", "flush", (1,)),
                                       ("buildsys.engine.noop", "", "record", (1,))]
                 for nth in nths for when in ("before", "after")]


@pytest.mark.slow
@pytest.mark.parametrize("point", COMMIT_POINTS, ids=[":".join(map(str, p[1:])) for p in COMMIT_POINTS])
def test_sigkill_at_each_commit_point_leaves_nothing_corrupt_or_stale(tmp_path: Path, point):
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4)})
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILLER)
    module, owner, name, when, nth = point
    env = {**os.environ, "PYTHONPATH": str(hooks), "BUILDSYS_TEST_KILL": f"{module}:{owner}:{name}:{when}:{nth}"}
    proc = start(ws, "build", env=env)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the build never reached {point}"
    wait_no_workers(ws.root, limit=5)
    r = ws.build()
    no_traceback(r.stdout, r.stderr)
    assert r.code == 0, r.stderr
    got, record = artifacts(ws.root / "out"), recorded(ws.root)
    assert {rel: record.get(rel) for rel in got} == got
    assert bad_blobs(ws.root) == [] and scratch_left(ws.root) == [] and stray_temp_files(ws.root) == []
    shutil.rmtree(ws.root / "out")
    clean = ws.build()
    assert clean.code == 0
    expected = artifacts(ws.root / "out")
    assert {k: v for k, v in got.items() if not k.endswith(NOT_BYTE_STABLE)} == \
        {k: v for k, v in expected.items() if not k.endswith(NOT_BYTE_STABLE)}
    assert ws.build().ran() == []


def test_a_step_over_the_memory_limit_fails_naming_it_and_the_build_goes_on(tmp_path: Path):
    ws = new_workspace(tmp_path / "ws", {"hog": recipe(4, "tb.memory_hog:net", "{}"), "fine": recipe(4)})
    r = ws.build("-k", "--memory-limit", "2GiB")
    no_traceback(r.stdout, r.stderr)
    assert r.code == 3, r.stderr
    step = next(s for s in r.json["steps"] if s["id"] == "hog:export")
    assert step["state"] == "failed"
    assert step["message"].startswith("recipes/hog.yaml: ran out of memory: RuntimeError: "), step
    assert "--memory-limit" in step["message"]
    assert all(s["state"] == "ran" for s in r.json["steps"] if s["id"].startswith("fine:"))
    assert worker_pids(ws.root) == []


def test_memory_limit_must_be_a_size(tmp_path: Path):
    ws = new_workspace(tmp_path / "ws", {"fine": recipe(4)})
    r = ws.run("build", "--memory-limit", "lots")
    assert r.code == 2
    assert "--memory-limit: expected a size like 6GiB or 512MiB, found 'lots'" in r.stderr
