"""What every measured command runs with: the buildsys executable, the environment, the frozen code.

The code measured is a snapshot of the working tree's buildsys/ and schemas/
(benchmarks/.work/snapshot-<digest>/, first on PYTHONPATH): people edit the tree
while benchmarks run, and any edit of a buildsys source invalidates the stat
manifest, so measuring the live tree would mix fast and full paths and two
versions of the code.

Bytecode: Python caches compiled modules by default, but some sandboxes and CI
images set PYTHONDONTWRITEBYTECODE=1, and buildsys (an editable install that pip
never byte-compiles) would then be compiled from source on every command. Unless
told to keep the environment, the harness drops that variable and caches bytecode
under benchmarks/.work/pycache (PYTHONPYCACHEPREFIX), so nothing is written beside
the sources.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.timing import Proc, Sample, must, timed
from benchmarks.workspace import REPO, WORK, age


@dataclass(frozen=True)
class Harness:
    env: dict[str, str]  # the environment of every command measured
    no_bytecode_env: dict[str, str]  # the same without a bytecode cache, for the floor line
    buildsys: str  # the `buildsys` script of the running venv
    # The interpreter the `buildsys` script runs under: the stat manifest records it, so
    # profiling runs must use the same path or they would miss the fast path.
    buildsys_python: str
    # The stand-in steps of make and DVC: the real interpreter (not a pyenv shim), run without site.
    cheap_python: str
    venv_bin: Path
    what: str  # one line naming the code measured

    def timed(self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
              ) -> tuple[Sample, Proc]:
        return timed(argv, env or self.env, cwd)

    def must(self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
             what: str = "") -> tuple[Sample, Proc]:
        return must(argv, env or self.env, cwd, what)

    def warm_up(self) -> None:
        """Fill the bytecode cache for what the commands and the steps import, outside every timing."""
        subprocess.run([self.buildsys_python, "-c", "import buildsys.cli, buildsys.engine.workspace, buildsys.recipe.validate, "
                        "jsonschema, yaml, numpy, onnx, onnxruntime, onnxsim, torch"],
                       env=self.env, capture_output=True, cwd=WORK)
        subprocess.run([self.buildsys, "--help"], env=self.env, capture_output=True)


def open_harness(keep_env: bool, live: bool) -> Harness:
    """The harness of this venv; unless `live`, the code measured is frozen in a snapshot."""
    WORK.mkdir(parents=True, exist_ok=True)
    venv_bin = Path(sys.executable).parent
    buildsys = venv_bin / "buildsys"
    env = bytecode_env(keep_env)
    if live:
        what = "code measured: the installed working tree, live"
    else:
        target, what = snapshot()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH", "")]))
    no_bytecode = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    no_bytecode["PYTHONDONTWRITEBYTECODE"] = "1"
    return Harness(
        env=env, no_bytecode_env=no_bytecode, buildsys=str(buildsys),
        buildsys_python=(buildsys.read_text().splitlines()[0][2:].strip() if buildsys.is_file() else sys.executable),
        cheap_python=os.path.realpath(sys.executable), venv_bin=venv_bin, what=what)


def bytecode_env(keep: bool) -> dict[str, str]:
    """The process's environment; unless `keep`, with bytecode cached under benchmarks/.work/pycache."""
    env = dict(os.environ)
    if not keep:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(WORK / "pycache")
    return env


def snapshot() -> tuple[Path, str]:
    """Copy buildsys/ and schemas/ to benchmarks/.work/snapshot-<digest>/; return it and a line naming it."""
    h = hashlib.sha256()
    files = []
    for top in ("buildsys", "schemas"):
        for f in sorted((REPO / top).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                files.append(f)
                h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    digest = h.hexdigest()[:12]
    target = WORK / f"snapshot-{digest}"
    if not target.is_dir():
        tmp = WORK / f".snapshot-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for f in files:
            dst = tmp / f.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        age(tmp)  # as if checked out a while ago: the stat manifest trusts only files 2 s old
        os.replace(tmp, target)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "buildsys", "schemas"],
                           capture_output=True, text=True)
    changed = len(dirty.stdout.splitlines())
    return target, (f"code measured: the working tree's buildsys/ and schemas/ as of {time.strftime('%H:%M:%S')} "
                    f"(HEAD {rev.stdout.strip() or '?'}{f' + {changed} changed files' if changed else ''}), "
                    f"frozen in {target.relative_to(REPO)}")
