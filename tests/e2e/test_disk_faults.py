"""Writes the disk refuses (read-only, full, not permitted) and a clean racing a status end cleanly:
exit 3 with one error naming the path and the cause, nothing corrupted, and the next build after
the fault is gone succeeds with the bytes of a clean build.

The tests run as root, which chmod does not stop: a read-only or full disk is a small tmpfs
mounted over out/ where the sandbox allows mounting, and every fault is also injected as the
OSError (or SQLite error) itself through a sitecustomize on PYTHONPATH, which runs everywhere.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_faults import (
    NOT_BYTE_STABLE,
    artifacts,
    bad_blobs,
    command,
    new_workspace,
    no_traceback,
    recipe,
    recorded,
    scratch_left,
)

# Loaded by `buildsys build` and `clean` (not their workers, not other commands) through PYTHONPATH.
FAULTS = '''\
import errno, os, sys

def _install(fault):
    if fault == "clean-vanishing":  # what a status closing its database does while clean lists the folder
        import pathlib
        iterdir = pathlib.Path.iterdir

        def listed_then_gone(self):
            found = list(iterdir(self))
            if self.name == ".buildsys":
                found += [self / "state.sqlite-wal", self / "state.sqlite-shm", self / "gone"]
            return iter(found)

        pathlib.Path.iterdir = listed_then_gone
        return
    if fault == "sqlite-full":  # every write to the build state fails as SQLite fails on a full disk
        import sqlite3
        connect = sqlite3.connect

        class Full(sqlite3.Connection):
            def _refuse(self, sql):
                if sql.lstrip().upper().startswith(("INSERT", "REPLACE", "UPDATE", "DELETE")):
                    exc = sqlite3.OperationalError("database or disk is full")
                    exc.sqlite_errorcode, exc.sqlite_errorname = 13, "SQLITE_FULL"
                    raise exc

            def execute(self, sql, *args):
                self._refuse(sql)
                return super().execute(sql, *args)

            def executemany(self, sql, *args):
                self._refuse(sql)
                return super().executemany(sql, *args)

        def full(path, *args, **kwargs):
            if str(path).endswith("state.sqlite"):
                kwargs["factory"] = Full
            return connect(path, *args, **kwargs)

        sqlite3.connect = full
        return
    code, call, where = {
        "store-eacces": (errno.EACCES, "replace", "/.buildsys/store/"),
        "out-enospc": (errno.ENOSPC, "link", "/out/a/"),
        "lock-erofs": (errno.EROFS, "open", "/.buildsys/lock"),
    }[fault]
    original = getattr(os, call)

    def refuse(*args, **kwargs):
        target = str(args[1] if call in ("replace", "link") else args[0])
        if where in target:
            raise OSError(code, os.strerror(code), target)
        return original(*args, **kwargs)

    setattr(os, call, refuse)
    if call == "link":  # the copy that replaces a refused link needs the same space
        import buildsys.storage.safepath as safepath
        create = safepath.create_temp

        def no_space(folder, name, suffix, mode=0o600):
            if where in folder + "/":
                raise OSError(code, os.strerror(code), os.path.join(folder, name))
            return create(folder, name, suffix, mode)

        safepath.create_temp = no_space

if ("build" in sys.argv[1:] or "clean" in sys.argv[1:]) and os.environ.get("BUILDSYS_TEST_FAULT"):
    _install(os.environ["BUILDSYS_TEST_FAULT"])
'''


def run(ws, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(ws, *args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def one_error(stderr: str) -> str:
    """The single `error:` line a refused write must print (with at most its hint after it)."""
    no_traceback(stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def assert_consistent_and_recovers(ws, clean_bytes: dict[str, str]) -> None:
    """Nothing corrupt after the fault; the next build succeeds and matches a clean build."""
    assert bad_blobs(ws.root) == []
    r = run(ws, "build")
    no_traceback(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    got = artifacts(ws.root / "out")
    assert {rel: recorded(ws.root).get(rel) for rel in got} == got
    stable = {k: v for k, v in got.items() if not k.endswith(NOT_BYTE_STABLE)}
    assert stable == {k: v for k, v in clean_bytes.items() if not k.endswith(NOT_BYTE_STABLE)}
    assert run(ws, "build").returncode == 0


@pytest.fixture(scope="module")
def clean_bytes(tmp_path_factory) -> dict[str, str]:
    """What a clean build of recipe `a` gives (the bytes every recovery must reproduce)."""
    ws = new_workspace(tmp_path_factory.mktemp("clean") / "ws", {"a": recipe(4)})
    assert run(ws, "build").returncode == 0
    return artifacts(ws.root / "out")


@pytest.fixture
def hooks(tmp_path) -> Path:
    folder = tmp_path / "hooks"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FAULTS)
    return folder


@pytest.mark.parametrize("fault, message", [
    ("sqlite-full", r"cannot write the build state \S+/out/\.buildsys/state\.sqlite: database or disk is full"),
    ("store-eacces", r"cannot use \S+/out/\.buildsys/store/[0-9a-f]{2}/[0-9a-f]{64}: permission denied"),
    ("out-enospc", r"cannot write \S+/out/a/\S+: no space left on device"),
    ("lock-erofs", r"cannot write \S+/out/\.buildsys/lock: read-only file system"),
])
def test_a_refused_write_is_one_error_and_the_next_build_recovers(tmp_path, hooks, clean_bytes, fault, message):
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4)})
    if fault == "sqlite-full":  # a database that exists and cannot grow: the build's records do not fit
        assert run(ws, "build", "--only", "export").returncode == 0
    env = {"PYTHONPATH": str(hooks), "BUILDSYS_TEST_FAULT": fault}
    r = run(ws, "build", env=env)
    assert r.returncode == 3, r.stderr
    line = one_error(r.stderr)
    assert re.fullmatch(f"error: {message}", line), line
    assert_consistent_and_recovers(ws, clean_bytes)


# -- a real read-only or full file system --------------------------------------------------------


def _mount(target: Path, options: str) -> None:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the injected faults above cover it")


@pytest.fixture
def small_out(tmp_path):
    """(workspace, remount): a workspace whose out/ is its own tmpfs; remount(options) changes it."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the injected faults above cover it")
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4)})
    out = ws.root / "out"
    out.mkdir()
    _mount(out, "size=64m")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(out)], check=True)

    try:
        yield ws, remount
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def test_a_read_only_out_folder_is_one_error_for_every_command(small_out, clean_bytes):
    ws, remount = small_out
    assert run(ws, "build").returncode == 0
    ws.write("recipes/a.yaml", recipe(4).replace("atol: 1.0e-4", "atol: 2.0e-4"))
    remount("ro")
    for args in (("build",), ("clean", "--cache"), ("clean", "a")):
        r = run(ws, *args)
        assert r.returncode == 3, (args, r.stderr)
        assert re.fullmatch(r"error: cannot write \S+/out/\S+: read-only file system", one_error(r.stderr))
    r = run(ws, "status")
    no_traceback(r.stdout, r.stderr)
    assert r.returncode in (0, 3), r.stderr
    remount("rw")
    ws.write("recipes/a.yaml", recipe(4))
    assert_consistent_and_recovers(ws, clean_bytes)


@pytest.mark.parametrize("size", ["16k", "40k", "64k", "88k"])
def test_a_full_out_folder_is_one_error_and_the_next_build_recovers(small_out, clean_bytes, size):
    ws, remount = small_out
    remount(f"size={size}")
    r = run(ws, "build")
    no_traceback(r.stdout, r.stderr)
    assert r.returncode == 3, r.stderr
    line = one_error(r.stderr)
    assert re.fullmatch(r"error: cannot (write|open) (the build state )?\S+/out/\S+: "
                        r"(no space left on device|database or disk is full|disk I/O error)", line), line
    remount("size=64m")
    assert_consistent_and_recovers(ws, clean_bytes)


# A model whose ONNX file is 2 MiB and whose reference is more, so that a tmpfs of a few MiB holds the
# build state (tens of KiB) and refuses an artifact: the disk fills while a step or the store writes.
LARGE = 65536


def _full_out(ws, size: str) -> Path:
    """Mount a tmpfs of `size` over the workspace's out/ (skipped where mounting is not allowed)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the injected faults above cover it")
    out = ws.root / "out"
    out.mkdir()
    _mount(out, f"size={size}")
    return out


@pytest.fixture
def unmount():
    mounted: list[Path] = []
    yield mounted.append
    for out in mounted:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def _failed_steps(r: subprocess.CompletedProcess) -> dict[str, str]:
    import json

    return {s["id"]: s.get("message", "") for s in json.loads(r.stdout)["steps"] if s["state"] == "failed"}


@pytest.mark.parametrize("size, step", [("1m", "export"), ("3m", "reference")])
def test_a_full_disk_while_a_step_writes_its_artifact_is_that_step_s_error(tmp_path, unmount, size, step):
    """The build state opens and records; the artifact does not fit: the step says so, naming where it wrote."""
    ws = new_workspace(tmp_path / "ws", {"big": recipe(LARGE)})
    out = _full_out(ws, size)
    unmount(out)
    r = run(ws, "build", "--json")
    no_traceback(r.stdout, r.stderr)
    assert r.returncode == 3, r.stderr
    failed = _failed_steps(r)
    assert list(failed) == [f"big:{step}"], failed
    assert re.match(rf"recipes/big\.yaml: cannot write \S+/out/\.buildsys/tmp/big__{step}: no space left on "
                    r"device\n  hint: the disk is full", failed[f"big:{step}"]), failed
    assert "error: cannot write the build state" not in r.stderr  # the failure was recorded: it fitted
    assert not scratch_left(ws.root) and bad_blobs(ws.root) == []
    s = run(ws, "status", "big")
    assert s.returncode in (0, 1) and f"big:{step}" in s.stdout and "failed" in s.stdout, s.stdout + s.stderr
    subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
    r = run(ws, "build")
    assert r.returncode == 0, r.stderr
    got = artifacts(out)
    assert got and {rel: recorded(ws.root).get(rel) for rel in got} == got


def test_a_full_disk_while_the_store_fetches_from_the_shared_cache_names_the_blob(tmp_path, unmount):
    cache = tmp_path / "cache"
    first = new_workspace(tmp_path / "first", {"big": recipe(LARGE)})
    assert run(first, "build", "--cache", str(cache)).returncode == 0
    ws = new_workspace(tmp_path / "ws", {"big": recipe(LARGE)})
    out = _full_out(ws, "1m")
    unmount(out)
    r = run(ws, "build", "--cache", str(cache))
    assert r.returncode == 3, r.stderr
    line = one_error(r.stderr)
    assert re.fullmatch(r"error: cannot write \S+/out/\.buildsys/store/[0-9a-f]{2}/[0-9a-f]{64}: "
                        r"no space left on device", line), line
    assert not [p for p in (out / ".buildsys" / "store").rglob("*") if p.is_file()]  # no partial blob left
    subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
    r = run(ws, "build", "--cache", str(cache), "--json")
    assert r.returncode == 0, r.stderr
    assert artifacts(out) == artifacts(first.root / "out")


# -- clean racing status ------------------------------------------------------------------------


def test_clean_cache_racing_status_ends_cleanly(tmp_path):
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4)})
    assert run(ws, "build").returncode == 0
    deadline = time.monotonic() + 20
    statuses: list[subprocess.Popen] = []
    cleans = 0
    while time.monotonic() < deadline and cleans < 12:
        statuses = [subprocess.Popen(command(ws, "status"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL) for _ in range(2)]
        c = run(ws, "clean", "--cache")
        no_traceback(c.stdout, c.stderr)
        assert c.returncode == 0, c.stderr
        cleans += 1
        for p in statuses:
            out, err = p.communicate(timeout=120)
            no_traceback(out, err)
            assert p.returncode in (0, 3), err
            if p.returncode == 3:
                one_error(err)
    r = run(ws, "build")
    assert r.returncode == 0, r.stderr


def test_clean_cache_goes_on_when_files_it_listed_are_gone(tmp_path, hooks):
    """The deterministic form of the race above: SQLite removed -wal and -shm after clean listed them."""
    ws = new_workspace(tmp_path / "ws", {"a": recipe(4)})
    assert run(ws, "build").returncode == 0
    r = run(ws, "clean", "--cache", env={"PYTHONPATH": str(hooks), "BUILDSYS_TEST_FAULT": "clean-vanishing"})
    no_traceback(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (ws.root / "out/.buildsys").iterdir()) == ["lock"]
