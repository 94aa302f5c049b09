"""Build-system overhead: buildsys beside GNU make and DVC on the same synthetic pipeline.

    make bench-build                                          # = .venv/bin/python benchmarks/bench_build.py
    .venv/bin/python benchmarks/bench_build.py --recipes 20 100 500 --runs 7 --with-dvc
    .venv/bin/python benchmarks/bench_build.py --recipes 500 --reuse --profile   # where the time goes
    .venv/bin/python benchmarks/bench_build.py --samples      # the sample recipes of recipes/ instead

What is measured. For each recipe count N the script generates N synthetic recipes
of a tiny Linear model (tests/fixtures/models/tiny.py, `exporter: torchscript`),
five steps each: export, reference, simplify, parity[fp32], engine[onnxruntime-fp32].
buildsys runs them for real. The same pipeline is then expressed for GNU make
(a generated Makefile) and for DVC (a generated dvc.yaml), with a cheap command
standing in for each step (tools/step.py: it hashes its inputs into its output,
so outputs are deterministic and a re-run that changes nothing writes the same
bytes) and the same files and dependencies:

    export     <- the model/inputs/outputs/dims/export fields, bm/tiny.py
    reference  <- the model/inputs/outputs/dims/parity fields, bm/tiny.py
    simplify   <- model.onnx, the simplify field
    parity     <- model.sim.onnx, reference.npz, the tolerances/outputs fields
    engine     <- model.sim.onnx, reference.npz, targets; gated on parity

Field-level dependencies: buildsys keys each step on the slice of the recipe it
reads; DVC does the same natively (`params: [{recipes/m.yaml: [tolerances, ...]}]`);
make gets them the usual way, from a per-recipe split rule that writes one slice
file per step only when its content changed (a stamp file gives make its
"restat"), and the parity gate is an order-only prerequisite. So in all three a
tolerance edit re-runs parity only (make also re-runs the one split command),
and the script checks that it does.

Operations, each the median of --runs invocations (--fast-runs where one takes under
a second) in a fresh process, tools
interleaved run by run so that load on the machine hits them alike:

    no-op build          buildsys build   | make             | dvc repro
    status               buildsys status  | make -n          | dvc status
    explain              buildsys explain m0000:parity | make -n --debug=b <parity file> | dvc status m0000-parity
    touch 1 + build      touch recipes/m0001.yaml, then the no-op build (buildsys: the full path)
    touch 1 + status     touch recipes/m0001.yaml, then status
    no-op, no manifest   buildsys only: delete out/.buildsys/noop.json, then build (full path,
                         resolved recipes from the cache): the cost of deciding every step
    tolerance change     edit tolerances.fp32.atol of m0000, then build (only parity re-runs)
    clean build          from an empty out/ (buildsys: real exports etc., -j --jobs; make -j
                         --jobs; dvc repro is serial); buildsys once unless --clean-runs,
                         make and DVC 3 times unless the first took over a minute

buildsys's no-op build and status are answered from the stat manifest
(buildsys/fastpath.py), which a full no-op build records only once every file
it stamps is 2 s old; the script waits for that and checks, before each
series, that the fast path is taken (no `buildsys.build` import) and, after it,
that the manifest was not rewritten. Each cell shows the median wall time and
the spread (half the interquartile range, relative to the median); the JSON
written to benchmarks/.work/results.json also holds every sample, the CPU time
(user+sys of the child processes, which load on a shared machine distorts less
than wall time) and the load average around each series.

DVC is measured with --with-dvc. It lives in its own virtual environment so that
it never touches the project's: the script creates it on demand as

    python3 -m venv benchmarks/.work/dvc-venv
    benchmarks/.work/dvc-venv/bin/pip install dvc

(benchmarks/.work/ is git-ignored) and skips DVC, saying why, when that fails.
Set BENCH_DVC=/path/to/dvc to use another installation. DVC workspaces are
initialised with `dvc init --no-scm` and run with DVC_NO_ANALYTICS=1.

The code measured is a snapshot of the working tree's buildsys/ and schemas/
taken when the script starts (benchmarks/.work/snapshot-<digest>/, first on
PYTHONPATH), because people edit the tree while benchmarks run and any edit of
buildsys invalidates the stat manifest; --live measures the tree as it is.

DVC runs about 1.5 s per stage, serially, so its clean build is measured only up
to --dvc-clean-max recipes (100); above that its workspace is built by running
each stage's command directly and `dvc commit -f`, and the other operations are
measured as usual (3 runs when a run takes longer than --slow seconds).

Bytecode: Python caches compiled modules by default, but this kind of sandbox sets
PYTHONDONTWRITEBYTECODE=1, and buildsys (an editable install that pip never
byte-compiles) would then be compiled from source on every command. The script
measures the default behaviour: it drops that variable and lets Python cache
bytecode under benchmarks/.work/pycache (PYTHONPYCACHEPREFIX, so nothing is
written beside the sources); --keep-env measures the environment as it is. The
floor line shows `buildsys --version` both ways.

Workspaces live under benchmarks/.work/n<N>/<tool>/. --reuse keeps those that
were built before (the 500-recipe clean build of buildsys takes many minutes)
and reports the clean-build time recorded when they were made.

--profile profiles buildsys at the largest N: importtime and cProfile of the
fast-path no-op build and status, and cProfile of the full path (one recipe
touched, the manifest deleted, explain). Profiles are kept under
benchmarks/.work/profile-<N>/ (open them with `python -m pstats` or snakeviz).
"""
from __future__ import annotations

import argparse
import cProfile  # noqa: F401  (checked here so --profile fails early when missing)
import json
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work"
VENV_BIN = Path(sys.executable).parent
BUILDSYS = str(VENV_BIN / "buildsys")
# The interpreter the `buildsys` script runs under: the stat manifest records it, so
# profiling runs must use the same path or they would miss the fast path.
BUILDSYS_PYTHON = (Path(BUILDSYS).read_text().splitlines()[0][2:].strip()
                   if Path(BUILDSYS).is_file() else sys.executable)
# The stand-in steps of make and DVC: the real interpreter (not a pyenv shim), no site.
CHEAP_PYTHON = os.path.realpath(sys.executable)
DVC_VENV = WORK / "dvc-venv"
PYCACHE = WORK / "pycache"
# The environment of every command measured; see bytecode_env().
ENV: dict[str, str] = dict(os.environ)

RECIPE = """\
version: 1
model: {{factory: "bm.tiny:tiny", kwargs: {{features: {features}}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, {features}]}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
export: {{opset: 18, exporter: torchscript}}
tolerances: {{fp32: {{atol: {atol}, rtol: 1.0e-3}}}}
"""
ATOL = "1.0e-4"
STEPS = ("export", "reference", "simplify", "parity", "engine")
LAYOUT = 2  # bump when the generated workspaces change: --reuse then rebuilds them

# One stand-in step: hash the inputs into the output, atomically. `--parity` writes
# the verdict only, so a re-run with other tolerances produces the same bytes.
STEP_PY = '''\
import hashlib, os, sys
args = sys.argv[1:]
parity = args[0] == "--parity"
if parity:
    args = args[1:]
out, inputs = args[0], args[1:]
h = hashlib.sha256()
for p in inputs:
    with open(p, "rb") as f:
        h.update(f.read())
data = b'{"passed": true}\\n' if parity else (h.hexdigest() + "\\n").encode()
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out + ".tmp", "wb") as f:
    f.write(data)
os.replace(out + ".tmp", out)
'''

# make's field-level dependencies: one slice file per step, rewritten only when it changed.
SPLIT_PY = '''\
import json, os, sys
SLICES = {"export": ("model", "inputs", "outputs", "dims", "export"),
          "reference": ("model", "inputs", "outputs", "dims", "parity"),
          "simplify": ("simplify",), "parity": ("tolerances", "outputs"), "engine": ("targets",)}
recipe, folder = sys.argv[1:3]
fields = {}
with open(recipe) as f:
    for line in f:  # the synthetic recipes hold one top-level field per line
        if line[:1].isalpha() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
os.makedirs(folder, exist_ok=True)
for name, keys in SLICES.items():
    text = json.dumps({k: fields.get(k) for k in keys}, sort_keys=True) + "\\n"
    path = os.path.join(folder, name + ".json")
    try:
        with open(path) as f:
            if f.read() == text:
                continue
    except OSError:
        pass
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
'''


def name(i: int) -> str:
    return f"m{i:04d}"


# -- running and timing ------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    cpu: float


@dataclass
class Proc:
    code: int
    stdout: str
    stderr: str


def bytecode_env(keep: bool) -> dict[str, str]:
    """Python's default: bytecode is cached. Some CI images and sandboxes set
    PYTHONDONTWRITEBYTECODE=1, and then every run of buildsys (an editable install,
    never byte-compiled by pip) compiles its modules from source again. Unless
    `keep`, the benchmark drops that variable and caches bytecode under
    benchmarks/.work/pycache (PYTHONPYCACHEPREFIX), so that nothing is written
    beside the sources."""
    env = dict(os.environ)
    if not keep:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def snapshot() -> str:
    """Freeze the code under test: copy buildsys/ and schemas/ to benchmarks/.work/snapshot-<digest>/
    and put that first on PYTHONPATH of every command measured.

    Other people edit the working tree while the benchmark runs; every edit of a
    buildsys source invalidates the stat manifest (it stamps buildsys's own files),
    so measuring the live tree would mix fast and full paths and two versions of
    the code. Returns a line naming what is measured.
    """
    import hashlib

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
    ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), ENV.get("PYTHONPATH", "")]))
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "buildsys", "schemas"],
                           capture_output=True, text=True)
    changed = len(dirty.stdout.splitlines())
    return (f"code measured: the working tree's buildsys/ and schemas/ as of {time.strftime('%H:%M:%S')} "
            f"(HEAD {rev.stdout.strip() or '?'}{f' + {changed} changed files' if changed else ''}), "
            f"frozen in {target.relative_to(REPO)}")


def warm_up() -> None:
    """Fill the bytecode cache for what the commands and the steps import, outside every timing."""
    subprocess.run([BUILDSYS_PYTHON, "-c", "import buildsys.cli, buildsys.build, buildsys.recipe.validate, jsonschema, "
                    "yaml, numpy, onnx, onnxruntime, onnxsim, torch"], env=ENV, capture_output=True, cwd=WORK)
    subprocess.run([BUILDSYS, "--help"], env=ENV, capture_output=True)


def timed(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[Sample, Proc]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env or ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu), Proc(p.returncode, p.stdout, p.stderr)


def must(argv: list[str], cwd: Path | None = None, env: dict | None = None, what: str = "") -> tuple[Sample, Proc]:
    s, p = timed(argv, cwd, env)
    if p.code != 0:
        raise BenchError(f"{what or ' '.join(argv)} failed (exit {p.code}):\n{(p.stderr or p.stdout)[-3000:]}")
    return s, p


class BenchError(Exception):
    pass


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_sources(ws: Path, n: int) -> None:
    (ws / "recipes").mkdir(parents=True)
    write(ws / "bm/__init__.py", "")
    shutil.copy(REPO / "tests/fixtures/models/tiny.py", ws / "bm/tiny.py")
    write(ws / "tools/step.py", STEP_PY)
    write(ws / "tools/split.py", SPLIT_PY)
    for i in range(n):
        (ws / f"recipes/{name(i)}.yaml").write_text(original_recipe(i))


def original_recipe(i: int, atol: str = ATOL) -> str:
    # every recipe a different model: recipes that resolve to the same steps would share
    # keys, store blobs and DVC cache entries, and the clean build would not build N models
    return RECIPE.format(features=4 + i, atol=atol)


def age(ws: Path, seconds: float = 60.0) -> None:
    """Make every file under `ws` older, as if the build had happened a while ago."""
    past = time.time() - seconds
    for p in ws.rglob("*"):
        os.utime(p, (past, past), follow_symlinks=False)


# -- the tools -----------------------------------------------------------------------


class Tool:
    name = ""
    clean_jobs = 1

    def __init__(self, ws: Path, n: int, jobs: int):
        self.ws, self.n, self.jobs = ws, n, jobs

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
        pass

    def wipe_outputs(self) -> None:
        shutil.rmtree(self.ws / "out", ignore_errors=True)

    def clean_build(self) -> Sample:
        raise NotImplementedError

    def settle(self) -> None:
        """Bring the workspace to the up-to-date state every no-op figure starts from."""

    def ran(self, p: Proc) -> list[str]:
        raise NotImplementedError

    def commands(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def env(self) -> dict | None:
        return None


class Buildsys(Tool):
    name = "buildsys"

    def cmd(self, *args: str) -> list[str]:
        return [BUILDSYS, "-C", str(self.ws), *args]

    @property
    def manifest(self) -> Path:
        return self.ws / "out/.buildsys/noop.json"

    def clean_build(self) -> Sample:
        self.wipe_outputs()
        s, p = must(self.cmd("build", "-j", str(self.jobs)), what="buildsys clean build")
        expected = {f"{name(i)}:{st}" for i in range(self.n) for st in STEPS}
        if set(self.ran(p)) != expected:
            missing = sorted(expected - set(self.ran(p)))
            raise BenchError(f"buildsys clean build ran {len(self.ran(p))} steps, expected {len(expected)}; "
                             f"not run: {missing[:10]}")
        return s

    def fast_path(self, *args: str) -> bool:
        """Whether `buildsys ARGS` is answered from the stat manifest (nothing resolved)."""
        _, p = must(self.cmd(*args), env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"})
        return "buildsys.build" not in p.stderr

    def settle(self) -> None:
        for _ in range(5):
            must(self.cmd("build"), what="buildsys settling build")
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

    @property
    def clean_jobs(self) -> int:  # noqa: D401
        return self.jobs

    def generate(self) -> None:
        lines = [
            "# generated by benchmarks/bench_build.py: the buildsys pipeline with stand-in steps",
            "MAKEFLAGS += -r",
            ".SUFFIXES:",
            f"PY := {CHEAP_PYTHON} -S",
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
        s, p = must(["make", "-C", str(self.ws), "-j", str(self.jobs)], what="make clean build")
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
    name = "dvc"
    exe = ""
    clean_max = 100

    def env(self) -> dict:
        return {**ENV, "DVC_NO_ANALYTICS": "1"}

    def generate(self) -> None:
        must([self.exe, "init", "--no-scm", "-q"], cwd=self.ws, env=self.env(), what="dvc init")
        must([self.exe, "config", "core.analytics", "false"], cwd=self.ws, env=self.env())
        step = f"{CHEAP_PYTHON} -S tools/step.py"
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

    def bootstrap(self) -> None:
        """Build the workspace without `dvc repro`: each stage's command, then `dvc commit -f`."""
        import shlex
        from concurrent.futures import ThreadPoolExecutor

        self.wipe_outputs()
        stages = json.loads((self.ws / "dvc.yaml").read_text())["stages"]

        def one(i: int) -> None:
            for st in STEPS:
                must(shlex.split(stages[f"{name(i)}-{st}"]["cmd"]), cwd=self.ws)

        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(one, range(self.n)))
        must([self.exe, "commit", "-f", "-q"], cwd=self.ws, env=self.env(), what="dvc commit -f")

    def clean_build(self) -> Sample:
        self.wipe_outputs()
        s, p = must([self.exe, "repro"], cwd=self.ws, env=self.env(), what="dvc repro (clean)")
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


def ensure_dvc() -> str | None:
    """The dvc executable, installing it into benchmarks/.work/dvc-venv when needed; None if impossible."""
    if os.environ.get("BENCH_DVC"):
        return os.environ["BENCH_DVC"]
    exe = DVC_VENV / "bin" / "dvc"
    if not exe.exists():
        print(f"installing DVC into {DVC_VENV.relative_to(REPO)} (once) ...", file=sys.stderr)
        try:
            if not (DVC_VENV / "bin/python").exists():
                subprocess.run([CHEAP_PYTHON, "-m", "venv", str(DVC_VENV)], check=True, capture_output=True)
            subprocess.run([str(DVC_VENV / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", "dvc"],
                           check=True, capture_output=True, text=True, timeout=1800)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            print(f"skipping DVC: it could not be installed into {DVC_VENV}: {str(detail).strip()[-500:]}",
                  file=sys.stderr)
            return None
    try:
        subprocess.run([str(exe), "--version"], check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"skipping DVC: {exe} does not run ({exc})", file=sys.stderr)
        return None
    return str(exe)


# -- one recipe count -------------------------------------------------------------------------


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def spread(self) -> float:
        walls = [s.wall for s in self.samples]
        if len(walls) < 4:
            return (max(walls) - min(walls)) / 2 / self.wall if walls else 0.0
        q = statistics.quantiles(walls, n=4)
        return (q[2] - q[0]) / 2 / self.wall


OPS = ["no-op build", "status", "explain", "touch 1 + build", "touch 1 + status", "no-op, no manifest",
       "tolerance change", "clean build"]
EXPECTED_RAN = {"no-op build": [], "touch 1 + build": [], "no-op, no manifest": [],
                "tolerance change": ["m0000:parity"]}


class Run:
    """Every figure of one recipe count, tools interleaved."""

    def __init__(self, n: int, tools: list[Tool], runs: int, slow: float, clean_runs: int, reuse: bool, log,
                 fast_runs: int = 0):
        self.n, self.tools, self.runs, self.slow, self.fast_runs = n, tools, runs, slow, fast_runs
        self.clean_runs, self.reuse, self.log = clean_runs, reuse, log
        self.cells: dict[tuple[str, str], Cell] = {}
        self.load: dict[str, tuple[float, float]] = {}
        self.problems: list[str] = []
        self.baseline: dict[str, Cell] = {}

    def prepare(self) -> None:
        for t in self.tools:
            cell = Cell()
            if self.reuse and t.built():
                recorded = json.loads(t.marker.read_text())
                cell.samples = [Sample(**s) for s in recorded["clean"]]
                cell.note = "recorded earlier" if cell.samples else "not measured"
                self._restore(t)
            elif isinstance(t, Dvc) and self.n > t.clean_max:
                self.log(f"[{self.n}] dvc: creating {t.ws.relative_to(REPO)}; its clean build is not measured "
                         f"above {t.clean_max} recipes (--dvc-clean-max): running each stage's command and "
                         "`dvc commit -f` instead")
                t.create()
                t0 = time.perf_counter()
                t.bootstrap()
                self.log(f"[{self.n}] dvc: bootstrapped in {time.perf_counter() - t0:.0f} s")
                cell.note = "not measured"
                t.mark([])
            else:
                self.log(f"[{self.n}] {t.name}: creating {t.ws.relative_to(REPO)} and building it from scratch")
                t.create()
                runs = self.clean_runs if t.name == "buildsys" else max(self.clean_runs, 3)
                for _ in range(runs):
                    cell.samples.append(t.clean_build())
                    self.log(f"[{self.n}] {t.name}: clean build {cell.samples[-1].wall:.1f} s")
                    if cell.samples[0].wall > 60:  # one slow clean build says enough
                        break
                t.mark(cell.samples)
            self.cells[(t.name, "clean build")] = cell
        # Every tool starts from a workspace built a while ago (buildsys: manifest recorded).
        for t in self.tools:
            age(t.ws)
        for t in self.tools:
            if not isinstance(t, Buildsys):  # aged, but still up to date
                self._expect(t, "no-op build", timed(t.commands()["no-op build"], t.ws, t.env())[1])
            t.settle()

    def _restore(self, t: Tool) -> None:
        """Put back what an interrupted earlier run may have left edited."""
        for i in (0, 1):
            p = t.ws / f"recipes/{name(i)}.yaml"
            if p.read_text() != original_recipe(i):
                p.write_text(original_recipe(i))

    def _expect(self, t: Tool, op: str, p: Proc) -> None:
        if p.code != 0:
            self.problems.append(f"{self.n} recipes, {t.name} {op}: exit {p.code}: {(p.stderr or p.stdout)[-500:]}")
            return
        if op in EXPECTED_RAN:
            ran = t.ran(p)
            if ran != EXPECTED_RAN[op]:
                self.problems.append(f"{self.n} recipes, {t.name} {op}: ran {ran[:6]}{'...' if len(ran) > 6 else ''}"
                                     f" ({len(ran)} steps), expected {EXPECTED_RAN[op]}")

    def series(self, op: str, before: Callable[[Tool, int], None] | None = None,
               after: Callable[[Tool], None] | None = None) -> None:
        tools = [t for t in self.tools if op in t.commands()]
        cells = {t.name: Cell() for t in tools}
        caps = {t.name: self.runs for t in tools}
        bs = next((t for t in tools if isinstance(t, Buildsys)), None)
        stamp = _stat(bs.manifest) if bs is not None else None
        probes = {"python -c pass": ([BUILDSYS_PYTHON, "-c", "pass"], None),
                  "buildsys --version": ([BUILDSYS, "--version"], None),
                  "buildsys --version, no bytecode cache": ([BUILDSYS, "--version"],
                                                            {**{k: v for k, v in os.environ.items()
                                                                if k != "PYTHONPYCACHEPREFIX"},
                                                             "PYTHONDONTWRITEBYTECODE": "1"})}
        load0 = os.getloadavg()[0]
        k = 0
        while any(k < cap for cap in caps.values()):
            for t in tools:
                if k >= caps[t.name]:
                    continue
                if before is not None:
                    before(t, k)
                s, p = timed(t.commands()[op], t.ws, t.env())
                self._expect(t, op, p)
                cells[t.name].samples.append(s)
                if k == 0 and s.wall > self.slow and self.runs > 3:
                    caps[t.name] = 3
                    cells[t.name].note = "3 runs"
                elif k == 0 and s.wall < 1.0 and self.fast_runs > self.runs:
                    caps[t.name] = self.fast_runs  # cheap: more runs against the noise of a shared machine
            if op == "no-op build":  # the floor under every figure, measured alongside
                for probe, (argv, env) in probes.items():
                    self.baseline.setdefault(probe, Cell()).samples.append(timed(argv, env=env)[0])
            k += 1
        if op in ("no-op build", "status") and bs is not None and _stat(bs.manifest) != stamp:
            self.problems.append(f"{self.n} recipes, buildsys {op}: the stat manifest was rewritten during the "
                                 "series, so some runs took the full path")
        self.load[op] = (load0, os.getloadavg()[0])
        for t in tools:
            self.cells[(t.name, op)] = cells[t.name]
            if after is not None:
                after(t)
        self.log(f"[{self.n}] {op}: " + ", ".join(f"{t.name} {_fmt(cells[t.name].wall)}" for t in tools)
                 + f"  (load {load0:.1f} → {os.getloadavg()[0]:.1f})")

    def measure(self) -> None:
        self.prepare()
        fast = [t for t in self.tools if isinstance(t, Buildsys)]
        for t in fast:
            if not (t.fast_path("build") and t.fast_path("status")):
                self.problems.append(f"{self.n} recipes: buildsys does not take the fast path after settling")
        self.series("no-op build")
        self.series("status")
        self.series("explain")

        def touch(t: Tool, k: int) -> None:
            os.utime(t.ws / "recipes/m0001.yaml")

        self.series("touch 1 + build", before=touch, after=lambda t: t.settle())
        self.series("touch 1 + status", before=touch, after=lambda t: t.settle())

        def drop_manifest(t: Tool, k: int) -> None:
            assert isinstance(t, Buildsys)
            t.manifest.unlink(missing_ok=True)

        self.series("no-op, no manifest", before=drop_manifest, after=lambda t: t.settle())

        def edit(t: Tool, k: int) -> None:
            # a value never used before: an earlier one would be a cache hit (buildsys, DVC's run cache)
            atol = f"{1.0e-4 * (1 + (time.time_ns() // 1000 % 999_983 + 1) / 1e6):.9e}"
            (t.ws / "recipes/m0000.yaml").write_text(original_recipe(0, atol=atol))

        def put_back(t: Tool) -> None:
            (t.ws / "recipes/m0000.yaml").write_text(original_recipe(0))
            _, p = timed(t.commands()["tolerance change"], t.ws, t.env())
            if p.code != 0:
                self.problems.append(f"{self.n} recipes, {t.name}: the build after restoring m0000 failed")
            t.settle()

        self.series("tolerance change", before=edit, after=put_back)


def _stat(p: Path):
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _fmt(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


# -- reporting -----------------------------------------------------------------------------------


def report(runs: list[Run], tool_names: list[str], args) -> str:
    out = []
    out.append(f"median wall time of {args.runs} runs, {args.fast_runs} where a run takes under 1 s "
               f"(± half the interquartile range); CPU = user+sys of the "
               f"child processes; clean builds with -j {args.jobs} (DVC is serial)")
    out.append("")
    header = "| operation | recipes | " + " | ".join(tool_names) + " |"
    out += [header, "|---|---:|" + "---:|" * len(tool_names)]
    for op in OPS:
        for r in runs:
            cells = []
            for tn in tool_names:
                c = r.cells.get((tn, op))
                if c is None or not c.samples:
                    cells.append(f"({c.note})" if c is not None and c.note else "—")
                    continue
                text = f"{_fmt(c.wall)} ±{c.spread * 100:.0f}%"
                if c.note:
                    text += f" ({c.note})"
                cells.append(text)
            if any(x != "—" for x in cells):
                out.append(f"| {op} | {r.n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("CPU time, median (user+sys), same runs:")
    out.append("")
    out += ["| operation | recipes | " + " | ".join(tool_names) + " |", "|---|---:|" + "---:|" * len(tool_names)]
    for op in OPS:
        for r in runs:
            cells = [(_fmt(r.cells[(tn, op)].cpu) if (tn, op) in r.cells and r.cells[(tn, op)].samples else "—")
                     for tn in tool_names]
            if any(x != "—" for x in cells):
                out.append(f"| {op} | {r.n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("floor (same runs as the no-op series): " + "; ".join(
        f"{r.n} recipes: " + ", ".join(f"{k} {_fmt(c.wall)}" for k, c in r.baseline.items()) for r in runs))
    out.append("load average (1 min) before → after each series: " + "; ".join(
        f"{r.n}: " + ", ".join(f"{op} {a:.1f}→{b:.1f}" for op, (a, b) in r.load.items()) for r in runs))
    out.append("")
    if len(runs) >= 2:
        out.append("cost per recipe (least-squares slope of the median over the recipe counts; "
                   "segments show whether it stays linear):")
        out.append("")
        out += ["| tool | operation | slope | intercept | " + " | ".join(
            f"{a.n}→{b.n}" for a, b in zip(runs, runs[1:])) + " |", "|---|---|---:|---:|" + "---:|" * (len(runs) - 1)]
        for tn in tool_names:
            for op in ("no-op build", "status", "touch 1 + build", "no-op, no manifest"):
                pts = [(r.n, r.cells[(tn, op)].wall) for r in runs if (tn, op) in r.cells]
                if len(pts) < 2:
                    continue
                slope, icpt = _fit(pts)
                segs = [f"{(b[1] - a[1]) / (b[0] - a[0]) * 1000:.2f} ms" for a, b in zip(pts, pts[1:])]
                out.append(f"| {tn} | {op} | {slope * 1000:.2f} ms | {_fmt(icpt)} | " + " | ".join(segs) + " |")
        out.append("")
    targets = []
    for r in runs:
        c = r.cells.get(("buildsys", "no-op build"))
        if c is None:
            continue
        limit = 0.100 if r.n <= 20 else 0.400 if r.n >= 500 else None
        if limit is not None:
            targets.append(f"no-op build at {r.n} recipes {_fmt(c.wall)} "
                           f"{'≤' if c.wall <= limit else '>'} target {_fmt(limit)}")
        s = r.cells.get(("buildsys", "status"))
        if s is not None:
            ratio = s.wall / c.wall
            targets.append(f"status/no-op at {r.n} recipes {ratio:.2f}× ({'within' if ratio <= 1.5 else 'beyond'} 1.5×)")
    if targets:
        out.append("targets: " + "; ".join(targets))
    problems = [p for r in runs for p in r.problems]
    if problems:
        out.append("")
        out.append("PROBLEMS:")
        out += [f"  - {p}" for p in problems]
    return "\n".join(out)


def _fit(pts: list[tuple[int, float]]) -> tuple[float, float]:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def save(runs: list[Run], args) -> Path:
    data = {"argv": sys.argv, "jobs": args.jobs, "runs": args.runs, "cpus": os.cpu_count(),
            "results": [{"recipes": r.n, "load": r.load, "problems": r.problems,
                         "baseline": {k: [s.__dict__ for s in c.samples] for k, c in r.baseline.items()},
                         "cells": [{"tool": t, "op": op, "note": c.note, "median_wall": c.wall, "median_cpu": c.cpu,
                                    "samples": [s.__dict__ for s in c.samples]}
                                   for (t, op), c in r.cells.items() if c.samples]} for r in runs]}
    path = WORK / "results.json"
    write(path, json.dumps(data, indent=1))
    return path


# -- profiling ------------------------------------------------------------------------------------


def profile(n: int, jobs: int, reuse: bool, top: int, log) -> str:
    t = Buildsys(WORK / f"n{n}" / "buildsys", n, jobs)
    if not (reuse and t.built()):
        log(f"[profile] building {n} recipes from scratch")
        t.create()
        t.mark([t.clean_build()])
        age(t.ws)
    t.settle()
    folder = WORK / f"profile-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    out = [f"profiles of buildsys at {n} recipes (kept in {folder.relative_to(REPO)})", ""]

    # import time of the fast path: most of what a fast no-op costs
    _, p = must(t.cmd("build"), env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"})
    rows = []
    for line in p.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4)))
    total = sum(r[0] for r in rows)
    out.append(f"fast-path no-op build, -X importtime: {len(rows)} modules, {total / 1000:.0f} ms of imports; "
               "heaviest (self / cumulative, ms):")
    for self_us, cum_us, _, mod in sorted(rows, reverse=True)[:top]:
        out.append(f"    {self_us / 1000:7.1f} {cum_us / 1000:7.1f}  {mod}")
    top_level = sorted((r for r in rows if r[2] == 1), key=lambda r: -r[1])[:8]
    out.append("  top-level imports by cumulative time: " + ", ".join(f"{r[3]} {r[1] / 1000:.0f} ms" for r in top_level))
    out.append("")

    def run_profiled(label: str, args: list[str], before: Callable[[], None] | None = None) -> None:
        if before is not None:
            before()
        path = folder / (re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + ".prof")
        # cwd: `-m` puts the current directory first on sys.path, and the repository root
        # would shadow the snapshot on PYTHONPATH
        s, _ = must([BUILDSYS_PYTHON, "-m", "cProfile", "-o", str(path), "-m", "buildsys", "-C", str(t.ws), *args],
                    cwd=t.ws, what=label)
        st = pstats.Stats(str(path))
        out.append(f"{label}: {_fmt(s.wall)} under cProfile ({st.total_tt * 1000:.0f} ms profiled)")
        out.append(_top(st, "tottime", top))
        out.append(_top(st, "cumulative", top, skip_imports=True))
        out.append("")

    run_profiled("fast path: no-op build", ["build"])
    run_profiled("fast path: status", ["status"])
    run_profiled("full path: no-op build after touching one recipe", ["build"],
                 before=lambda: os.utime(t.ws / "recipes/m0001.yaml"))
    t.settle()
    run_profiled("full path: no-op build without a manifest (recipes from the cache)", ["build"],
                 before=lambda: t.manifest.unlink(missing_ok=True))
    t.settle()
    run_profiled("full path: status after touching one recipe", ["status"],
                 before=lambda: os.utime(t.ws / "recipes/m0001.yaml"))
    t.settle()
    run_profiled("explain m0000:parity", ["explain", "m0000:parity"])
    return "\n".join(out)


def _short(filename: str) -> str:
    filename = re.sub(r".*/benchmarks/\.work/snapshot-[0-9a-f]+/", "", filename)
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return filename


def _top(st: pstats.Stats, key: str, top: int, skip_imports: bool = False) -> str:
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _) in st.stats.items():
        if skip_imports and ("<frozen importlib" in filename or func in ("<module>", "exec")):
            continue
        where = f"{_short(filename)}:{line}:{func}" if line else func
        rows.append((tt if key == "tottime" else ct, tt, ct, nc, where))
    rows.sort(reverse=True)
    lines = [f"  by {'own time' if key == 'tottime' else 'cumulative time (imports left out)'}:"
             "      own    cum    calls"]
    for _, tt, ct, nc, where in rows[:top]:
        lines.append(f"    {tt * 1000:8.1f} {ct * 1000:8.1f} {nc:8d}  {where}")
    return "\n".join(lines)


# -- the sample recipes -------------------------------------------------------------------------------


def bench_samples(runs: int) -> str:
    ws = WORK / "samples"
    ws.mkdir(parents=True, exist_ok=True)
    for d in ("recipes", "models", "data", "weights"):  # what the recipes name: factories, calibration data
        shutil.rmtree(ws / d, ignore_errors=True)
        if (REPO / d).is_dir():
            shutil.copytree(REPO / d, ws / d, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = lambda *a: [BUILDSYS, "-C", str(ws), *a]  # noqa: E731
    n = len(list((ws / "recipes").glob("[!_]*.yaml")))
    first = must(cmd("build"))[0]
    age(ws)
    must(cmd("build"))
    rows = {"build (first, or from cache)": Cell([first])}
    for op, argv in (("no-op build", cmd("build")), ("status", cmd("status"))):
        rows[op] = Cell([must(argv)[0] for _ in range(runs)])
    recipe = ws / "recipes/resnet18.yaml"
    original = recipe.read_text()
    assert "tolerances:" not in original, "edit the benchmark: resnet18.yaml sets its own tolerances"
    samples = []
    try:
        for k in range(runs):
            recipe.write_text(original + f"\ntolerances:\n  fp32: {{atol: {1.0e-3 * (1 + k):.1e}, rtol: 1.0e-3}}\n")
            samples.append(must(cmd("build", "resnet18"))[0])
    finally:
        recipe.write_text(original)
    rows["resnet18 tolerance change"] = Cell(samples)
    lines = [f"{n} sample recipes, medians of {runs} runs", "", "| operation | wall | CPU |", "|---|---:|---:|"]
    lines += [f"| {op} | {_fmt(c.wall)} | {_fmt(c.cpu)} |" for op, c in rows.items()]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", type=int, nargs="+", default=[20], metavar="N", help="recipe counts (default 20)")
    ap.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="jobs of the clean builds")
    ap.add_argument("--clean-runs", type=int, default=1,
                    help="clean builds of buildsys per count (make and DVC: 3 unless the first takes over a minute)")
    ap.add_argument("--fast-runs", type=int, default=15, metavar="R",
                    help="runs for a tool whose first run of a series takes under a second (default 15)")
    ap.add_argument("--slow", type=float, default=15.0, metavar="S",
                    help="a tool whose first run of a series takes longer gets 3 runs (default 15 s)")
    ap.add_argument("--tools", nargs="+", default=["buildsys", "make"], choices=["buildsys", "make", "dvc"])
    ap.add_argument("--with-dvc", action="store_true", help="also DVC (installed on demand, see above)")
    ap.add_argument("--reuse", action="store_true", help="keep workspaces built by an earlier run")
    ap.add_argument("--profile", action="store_true", help="profile buildsys at the largest count instead")
    ap.add_argument("--top", type=int, default=15, help="rows per profile table")
    ap.add_argument("--samples", action="store_true", help="measure the sample recipes instead")
    ap.add_argument("--live", action="store_true",
                    help="measure the installed working tree as it is, not a snapshot taken at the start")
    ap.add_argument("--dvc-clean-max", type=int, default=100, metavar="N",
                    help="above N recipes DVC's clean build is not measured (it runs ~1.5 s per stage, serially); "
                         "the workspace is built by running each stage's command and `dvc commit -f` (default 100)")
    ap.add_argument("--keep-env", action="store_true",
                    help="measure with the environment as it is (by default PYTHONDONTWRITEBYTECODE is dropped "
                         "and bytecode cached under benchmarks/.work/pycache)")
    args = ap.parse_args()
    ENV.clear()
    ENV.update(bytecode_env(args.keep_env))

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    try:
        what = "code measured: the installed working tree, live" if args.live else snapshot()
        log(what)
        warm_up()
        if args.samples:
            print(bench_samples(args.runs))
            return 0
        if args.profile:
            print(profile(max(args.recipes), args.jobs, args.reuse, args.top, log))
            return 0
        names = list(dict.fromkeys(args.tools + (["dvc"] if args.with_dvc else [])))
        if "make" in names and shutil.which("make") is None:
            print("skipping make: no `make` on PATH", file=sys.stderr)
            names.remove("make")
        if "dvc" in names:
            Dvc.exe = ensure_dvc() or ""
            Dvc.clean_max = args.dvc_clean_max
            if not Dvc.exe:
                names.remove("dvc")
        classes = {"buildsys": Buildsys, "make": Make, "dvc": Dvc}
        runs = []
        for n in sorted(args.recipes):
            tools = [classes[tn](WORK / f"n{n}" / tn, n, args.jobs) for tn in names]
            r = Run(n, tools, args.runs, args.slow, args.clean_runs, args.reuse, log, args.fast_runs)
            r.measure()
            runs.append(r)
            save(runs, args)
        print(what)
        print(report(runs, names, args))
        print(f"\nevery sample: {save(runs, args).relative_to(REPO)}")
        return 1 if any(r.problems for r in runs) else 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
