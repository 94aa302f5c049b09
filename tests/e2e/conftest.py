"""A temporary workspace with tiny models, and a helper that runs the real command."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "models"

def recipe_yaml(model: str, *, features: int = 4, data: bool = True, output: str = "scores",
                batch: tuple[int, int, int] = (1, 4, 8), export: str = "{opset: 18, exporter: torchscript}",
                rest: str = "") -> str:
    """A recipe of one float32 input x [batch, features] and one output: the skeleton every e2e recipe shares.

    `model` is the YAML of the model field, `export` of the export field; `rest` is
    YAML appended as it is (tolerances, targets, calibration...).
    """
    lines = ["version: 1", f"model: {model}", "inputs:", "  - name: x", "    dtype: float32",
             f"    shape: [batch, {features}]"]
    if data:
        lines.append("    data: {kind: normal, mean: 0.0, std: 1.0}")
    lines += ["outputs:", f"  - name: {output}", "dims:", f"  batch: {{min: {batch[0]}, opt: {batch[1]}, max: {batch[2]}}}",
              f"export: {export}"]
    return "\n".join(lines) + "\n" + rest


def tiny_recipe(opset: int = 18, exporter: str = "torchscript", atol: str = "1.0e-4") -> str:
    return recipe_yaml('{factory: "tm.tiny:tiny", kwargs: {features: 4}}', export=f"{{opset: {opset}, exporter: {exporter}}}",
                       rest=f"tolerances:\n  fp32: {{atol: {atol}, rtol: 1.0e-3}}\n")


def worker_pids(root: Path) -> list[int]:
    """buildsys worker processes whose working folder is this workspace (workers run there)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if b"buildsys.runners.worker" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            if os.readlink(f"/proc/{entry}/cwd") == str(root):
                found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    def states(self) -> dict[str, str]:
        return {s["id"]: s["state"] for s in self.json["steps"]}

    def ran(self) -> list[str]:
        return sorted(s["id"] for s in self.json["steps"] if s["state"] == "ran")


class Workspace:
    def __init__(self, root: Path):
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def run(self, *args: str, env: dict | None = None, timeout: float = 600) -> Result:
        cmd = [sys.executable, *(env or {}).pop("_pyflags", []), "-m", "buildsys", "-C", str(self.root), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def build(self, *args: str) -> Result:
        return self.run("build", "--json", *args)


def new_workspace(root: Path) -> Workspace:
    """A workspace at `root` holding the tiny test models as the package `tm` and no recipe yet."""
    ws = Workspace(root)
    shutil.copytree(FIXTURES, root / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "recipes").mkdir()
    return ws


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return new_workspace(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path_factory):
    """A Dask scheduler and two one-thread workers on 127.0.0.1; yields the scheduler's address."""
    pytest.importorskip("distributed", reason="Dask is an optional extra: pip install '.[cluster]'")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    logs = tmp_path_factory.mktemp("dask-logs")
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)]
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    for i in range(2):
        procs.append(subprocess.Popen(
            [str(bin_dir / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
             "--memory-limit", "4GiB", "--name", f"w{i}"],
            stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"}))
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=120)
    yield address
    for p in procs:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
