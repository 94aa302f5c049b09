"""The tools compared on the same synthetic pipeline: buildsys, GNU make and DVC.

buildsys runs the recipes for real. make (a generated Makefile) and DVC (a
generated dvc.yaml) run the same pipeline with a stand-in command for each step
(tools/step.py) and the same files and dependencies:

    export     <- the model/inputs/outputs/dims/export fields, bm/tiny.py
    reference  <- the model/inputs/outputs/dims/parity fields, bm/tiny.py
    simplify   <- model.onnx, the simplify field
    parity     <- model.sim.onnx, reference.npz, the tolerances/outputs fields
    engine     <- model.sim.onnx, reference.npz, targets; gated on parity

Field-level dependencies: buildsys keys each step on the slice of the recipe it
reads; DVC does the same natively (`params: [{recipes/m.yaml: [tolerances, ...]}]`);
make gets them the usual way, from a per-recipe split rule (tools/split.py) that
writes one slice file per step only when its content changed (a stamp file gives
make its "restat"), and the parity gate is an order-only prerequisite.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.harness import Harness
from benchmarks.timing import BenchError, Proc, Sample
from benchmarks.workspace import LAYOUT, STEPS, name, write, write_sources


class Tool:
    """One tool's workspace of n recipes and the commands of every operation measured."""

    name = ""

    def __init__(self, ws: Path, n: int, jobs: int, harness: Harness):
        self.ws, self.n, self.jobs, self.h = ws, n, jobs, harness

    @property
    def marker(self) -> Path:
        return self.ws / ".bench-built.json"

    def built(self) -> bool:
        try:
            return json.loads(self.marker.read_text()).get("layout") == LAYOUT
        except (OSError, ValueError):
            return False

    def mark(self, clean: list[Sample]) -> None:
        self.marker.write_text(json.dumps({"layout": LAYOUT, "clean": [s.__dict__ for s in clean]}))

    def create(self) -> None:
        if self.ws.exists():
            shutil.rmtree(self.ws)
        write_sources(self.ws, self.n)
        self.generate()

    def generate(self) -> None:
        """Write the tool's description of the pipeline into the workspace."""

    def wipe_outputs(self) -> None:
        shutil.rmtree(self.ws / "out", ignore_errors=True)

    def unmeasured_clean_build(self) -> str:
        """Why this workspace's clean build is not measured, or "" when it is."""
        return ""

    def bootstrap(self) -> None:
        """Bring a workspace whose clean build is not measured up to date some cheaper way."""
        raise NotImplementedError

    def clean_build(self) -> Sample:
        raise NotImplementedError

    def settle(self) -> None:
        """Bring the workspace to the up-to-date state every no-op figure starts from."""

    def ran(self, p: Proc) -> list[str]:
        """The steps a command ran, as `recipe:step`, sorted."""
        raise NotImplementedError

    def commands(self) -> dict[str, list[str]]:
        """The command of each operation the tool takes part in."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return self.h.env


class Buildsys(Tool):
    name = "buildsys"

    def cmd(self, *args: str) -> list[str]:
        return [self.h.buildsys, "-C", str(self.ws), *args]

    @property
    def manifest(self) -> Path:
        return self.ws / "out/.buildsys/noop.json"

    def clean_build(self) -> Sample:
        self.wipe_outputs()
        s, p = self.h.must(self.cmd("build", "-j", str(self.jobs)), what="buildsys clean build")
        expected = {f"{name(i)}:{st}" for i in range(self.n) for st in STEPS}
        if set(self.ran(p)) != expected:
            missing = sorted(expected - set(self.ran(p)))
            raise BenchError(f"buildsys clean build ran {len(self.ran(p))} steps, expected {len(expected)}; "
                             f"not run: {missing[:10]}")
        return s

    def fast_path(self, *args: str) -> bool:
        """Whether `buildsys ARGS` is answered from the stat manifest (nothing resolved)."""
        _, p = self.h.must(self.cmd(*args), env={**self.h.env, "PYTHONPROFILEIMPORTTIME": "1"})
        return "buildsys.engine.workspace" not in p.stderr

    def settle(self) -> None:
        for _ in range(5):
            self.h.must(self.cmd("build"), what="buildsys settling build")
            if self.manifest.is_file() and self.fast_path("build") and self.fast_path("status"):
                return
            time.sleep(2.1)  # a file written less than 2 s ago keeps the manifest from being recorded
        raise BenchError(f"buildsys never answered a no-op build from the stat manifest in {self.ws}")

    def ran(self, p: Proc) -> list[str]:
        out = []
        for line in p.stderr.splitlines():
            if line.startswith(("ran ", "FAILED ")):
                sid = line.split()[1]
                out.append(sid.partition("[")[0])
        return sorted(out)

    def commands(self) -> dict[str, list[str]]:
        return {
            "no-op build": self.cmd("build"),
            "status": self.cmd("status"),
            "explain": self.cmd("explain", "m0000:parity"),
            "touch 1 + build": self.cmd("build"),
            "touch 1 + status": self.cmd("status"),
            "no-op, no manifest": self.cmd("build"),
            "tolerance change": self.cmd("build"),
        }


class Make(Tool):
    name = "make"

    def generate(self) -> None:
        lines = [
            "# generated by the build-overhead benchmark (python -m benchmarks): the buildsys pipeline "
            "with stand-in steps",
            "MAKEFLAGS += -r",
            ".SUFFIXES:",
            f"PY := {self.h.cheap_python} -S",
            "STEP := $(PY) tools/step.py",
            "",
            "all: " + " ".join(f"out/{name(i)}/engines/onnxruntime-fp32.ort out/{name(i)}/parity/fp32.json"
                               for i in range(self.n)),
            ".PHONY: all",
            "",
        ]
        for i in range(self.n):
            m = name(i)
            o, p = f"out/{m}", f"out/{m}/.params"
            lines += [
                f"{p}/stamp: recipes/{m}.yaml tools/split.py",
                f"\t@$(PY) tools/split.py $< {p} && touch $@",
                f"{p}/export.json {p}/reference.json {p}/simplify.json {p}/parity.json {p}/engine.json: {p}/stamp ;",
                f"{o}/model.onnx: {p}/export.json bm/tiny.py tools/step.py",
                "\t$(STEP) $@ $^",
                f"{o}/reference.npz: {p}/reference.json bm/tiny.py tools/step.py",
                "\t$(STEP) $@ $^",
                f"{o}/model.sim.onnx: {o}/model.onnx {p}/simplify.json tools/step.py",
                "\t$(STEP) $@ $^",
                f"{o}/parity/fp32.json: {o}/model.sim.onnx {o}/reference.npz {p}/parity.json tools/step.py",
                "\t$(STEP) --parity $@ $^",
                f"{o}/engines/onnxruntime-fp32.ort: {o}/model.sim.onnx {o}/reference.npz {p}/engine.json "
                f"tools/step.py | {o}/parity/fp32.json",
                "\t$(STEP) $@ $^",
                "",
            ]
        write(self.ws / "Makefile", "\n".join(lines))

    def clean_build(self) -> Sample:
        self.wipe_outputs()
        s, p = self.h.must(["make", "-C", str(self.ws), "-j", str(self.jobs)], what="make clean build")
        if len(self.ran(p)) != 5 * self.n:
            raise BenchError(f"make clean build ran {len(self.ran(p))} steps, expected {5 * self.n}")
        return s

    def ran(self, p: Proc) -> list[str]:
        out = []
        for line in p.stdout.splitlines():
            if "tools/step.py" in line and "--debug" not in line:
                words = line.split()
                target = words[words.index("tools/step.py") + 1:]
                target = target[1] if target[0] == "--parity" else target[0]
                m, rest = target.split("/")[1], target.split("/", 2)[2]
                step = {"model.onnx": "export", "reference.npz": "reference", "model.sim.onnx": "simplify",
                        "parity/fp32.json": "parity", "engines/onnxruntime-fp32.ort": "engine"}[rest]
                out.append(f"{m}:{step}")
        return sorted(out)

    def commands(self) -> dict[str, list[str]]:
        make = ["make", "-C", str(self.ws)]
        return {
            "no-op build": make,
            "status": [*make, "-n"],
            "explain": [*make, "-n", "--debug=b", "out/m0000/parity/fp32.json"],
            "touch 1 + build": make,
            "touch 1 + status": [*make, "-n"],
            "tolerance change": make,
        }


class Dvc(Tool):
    """DVC, workspaces initialised with `dvc init --no-scm` and run with DVC_NO_ANALYTICS=1.

    `dvc repro` runs about 1.5 s per stage, serially, so above `clean_max` recipes the
    clean build is not measured: the workspace is built by running each stage's
    command directly and `dvc commit -f`.
    """

    name = "dvc"

    def __init__(self, ws: Path, n: int, jobs: int, harness: Harness, exe: str, clean_max: int):
        super().__init__(ws, n, jobs, harness)
        self.exe, self.clean_max = exe, clean_max

    def env(self) -> dict[str, str]:
        return {**self.h.env, "DVC_NO_ANALYTICS": "1"}

    def generate(self) -> None:
        self.h.must([self.exe, "init", "--no-scm", "-q"], cwd=self.ws, env=self.env(), what="dvc init")
        self.h.must([self.exe, "config", "core.analytics", "false"], cwd=self.ws, env=self.env())
        step = f"{self.h.cheap_python} -S tools/step.py"
        model_fields = ["model", "inputs", "outputs", "dims"]
        stages = {}
        for i in range(self.n):
            m, o = name(i), f"out/{name(i)}"
            recipe = f"recipes/{m}.yaml"
            stages[f"{m}-export"] = {
                "cmd": f"{step} {o}/model.onnx bm/tiny.py tools/step.py",
                "deps": ["bm/tiny.py", "tools/step.py"],
                "params": [{recipe: [*model_fields, "export"]}],
                "outs": [f"{o}/model.onnx"]}
            stages[f"{m}-reference"] = {
                "cmd": f"{step} {o}/reference.npz bm/tiny.py tools/step.py",
                "deps": ["bm/tiny.py", "tools/step.py"],
                "params": [{recipe: model_fields}],  # `parity` is not set in these recipes
                "outs": [f"{o}/reference.npz"]}
            stages[f"{m}-simplify"] = {
                "cmd": f"{step} {o}/model.sim.onnx {o}/model.onnx tools/step.py",
                "deps": [f"{o}/model.onnx", "tools/step.py"],
                "outs": [f"{o}/model.sim.onnx"]}
            stages[f"{m}-parity"] = {
                "cmd": f"{step} --parity {o}/parity/fp32.json {o}/model.sim.onnx {o}/reference.npz tools/step.py",
                "deps": [f"{o}/model.sim.onnx", f"{o}/reference.npz", "tools/step.py"],
                "params": [{recipe: ["tolerances", "outputs"]}],
                "outs": [f"{o}/parity/fp32.json"]}
            stages[f"{m}-engine"] = {
                "cmd": f"{step} {o}/engines/onnxruntime-fp32.ort {o}/model.sim.onnx {o}/reference.npz tools/step.py",
                "deps": [f"{o}/model.sim.onnx", f"{o}/reference.npz", f"{o}/parity/fp32.json", "tools/step.py"],
                "outs": [f"{o}/engines/onnxruntime-fp32.ort"]}
        write(self.ws / "dvc.yaml", json.dumps({"stages": stages}, indent=1) + "\n")  # JSON is YAML

    def wipe_outputs(self) -> None:
        # nothing may come back from DVC's cache or run cache: a clean build runs every stage
        super().wipe_outputs()
        (self.ws / "dvc.lock").unlink(missing_ok=True)
        shutil.rmtree(self.ws / ".dvc/cache", ignore_errors=True)
        shutil.rmtree(self.ws / ".dvc/tmp", ignore_errors=True)

    def unmeasured_clean_build(self) -> str:
        if self.n <= self.clean_max:
            return ""
        return (f"its clean build is not measured above {self.clean_max} recipes (--dvc-clean-max): "
                "running each stage's command and `dvc commit -f` instead")

    def bootstrap(self) -> None:
        """Build the workspace without `dvc repro`: each stage's command, then `dvc commit -f`."""
        self.wipe_outputs()
        stages = json.loads((self.ws / "dvc.yaml").read_text())["stages"]

        def one(i: int) -> None:
            for st in STEPS:
                self.h.must(shlex.split(stages[f"{name(i)}-{st}"]["cmd"]), cwd=self.ws)

        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(one, range(self.n)))
        self.h.must([self.exe, "commit", "-f", "-q"], cwd=self.ws, env=self.env(), what="dvc commit -f")

    def clean_build(self) -> Sample:
        self.wipe_outputs()
        s, p = self.h.must([self.exe, "repro"], cwd=self.ws, env=self.env(), what="dvc repro (clean)")
        if len(self.ran(p)) != 5 * self.n:
            raise BenchError(f"dvc repro ran {len(self.ran(p))} stages, expected {5 * self.n}")
        return s

    def ran(self, p: Proc) -> list[str]:
        return sorted(m.replace("-", ":") for m in re.findall(r"Running stage '([^']+)'", p.stdout))

    def commands(self) -> dict[str, list[str]]:
        return {
            "no-op build": [self.exe, "repro"],
            "status": [self.exe, "status"],
            "explain": [self.exe, "status", "m0000-parity"],
            "touch 1 + build": [self.exe, "repro"],
            "touch 1 + status": [self.exe, "status"],
            "tolerance change": [self.exe, "repro"],
        }


DVC_MISSING = "DVC is not installed: run `make bench-build` (installs the bench extra)"


def find_dvc(exe: str | None, venv_bin: Path) -> tuple[str | None, str]:
    """The dvc executable (`exe`, or the venv's) and "", or None and why DVC is left out.

    DVC is the `bench` extra of pyproject.toml, installed into the venv by `make bench-build`;
    the benchmark never installs anything itself.
    """
    if exe is None:
        found = venv_bin / "dvc"
        if not found.is_file():
            return None, DVC_MISSING
        exe = str(found)
    try:
        subprocess.run([exe, "--version"], check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return None, f"DVC is left out: {exe} does not run ({exc})"
    return exe, ""
