"""Every figure of one recipe count: the operations, each a series of runs, tools interleaved.

Each operation is the median of --runs invocations (--fast-runs where one takes
under a second) in a fresh process, tools interleaved run by run so that load on
the machine hits them alike:

    no-op build          buildsys build   | make             | dvc repro
    status               buildsys status  | make -n          | dvc status
    explain              buildsys explain m0000:parity | make -n --debug=b <parity file> | dvc status m0000-parity
    touch 1 + build      touch recipes/m0001.yaml, then the no-op build (buildsys: the full path)
    touch 1 + status     touch recipes/m0001.yaml, then status
    no-op, no manifest   buildsys only: delete out/.buildsys/noop.json, then build (full path,
                         resolved recipes from the cache): the cost of deciding every step
    tolerance change     edit tolerances.fp32.atol of m0000, then build (only parity re-runs)
    clean build          from an empty out/

Every series checks which steps each tool ran (nothing, or parity of m0000 after the
tolerance edit) and, for buildsys's no-op build and status, that the stat manifest
was not rewritten meanwhile.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Harness
from benchmarks.timing import Cell, Proc, Sample, fmt
from benchmarks.tools import Buildsys, Tool
from benchmarks.workspace import REPO, age, name, original_recipe

OPS = ["no-op build", "status", "explain", "touch 1 + build", "touch 1 + status", "no-op, no manifest",
       "tolerance change", "clean build"]
EXPECTED_RAN = {"no-op build": [], "touch 1 + build": [], "no-op, no manifest": [],
                "tolerance change": ["m0000:parity"]}


class Run:
    """Every figure of one recipe count, tools interleaved."""

    def __init__(self, n: int, tools: list[Tool], harness: Harness, runs: int, slow: float, clean_runs: int,
                 reuse: bool, log: Callable[[str], None], fast_runs: int = 0):
        self.n, self.tools, self.h, self.runs, self.slow, self.fast_runs = n, tools, harness, runs, slow, fast_runs
        self.clean_runs, self.reuse, self.log = clean_runs, reuse, log
        self.cells: dict[tuple[str, str], Cell] = {}
        self.load: dict[str, tuple[float, float]] = {}
        self.problems: list[str] = []
        self.baseline: dict[str, Cell] = {}

    def prepare(self) -> None:
        for t in self.tools:
            cell = Cell()
            unmeasured = t.unmeasured_clean_build()
            if self.reuse and t.built():
                recorded = json.loads(t.marker.read_text())
                cell.samples = [Sample(**s) for s in recorded["clean"]]
                cell.note = "recorded earlier" if cell.samples else "not measured"
                self._restore(t)
            elif unmeasured:
                self.log(f"[{self.n}] {t.name}: creating {t.ws.relative_to(REPO)}; {unmeasured}")
                t.create()
                t0 = time.perf_counter()
                t.bootstrap()
                self.log(f"[{self.n}] {t.name}: bootstrapped in {time.perf_counter() - t0:.0f} s")
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
                self._expect(t, "no-op build", self.h.timed(t.commands()["no-op build"], t.ws, t.env())[1])
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
        probes = {"python -c pass": ([self.h.buildsys_python, "-c", "pass"], None),
                  "buildsys --version": ([self.h.buildsys, "--version"], None),
                  "buildsys --version, no bytecode cache": ([self.h.buildsys, "--version"], self.h.no_bytecode_env)}
        load0 = os.getloadavg()[0]
        k = 0
        while any(k < cap for cap in caps.values()):
            for t in tools:
                if k >= caps[t.name]:
                    continue
                if before is not None:
                    before(t, k)
                s, p = self.h.timed(t.commands()[op], t.ws, t.env())
                self._expect(t, op, p)
                cells[t.name].samples.append(s)
                if k == 0 and s.wall > self.slow and self.runs > 3:
                    caps[t.name] = 3
                    cells[t.name].note = "3 runs"
                elif k == 0 and s.wall < 1.0 and self.fast_runs > self.runs:
                    caps[t.name] = self.fast_runs  # cheap: more runs against the noise of a shared machine
            if op == "no-op build":  # the floor under every figure, measured alongside
                for probe, (argv, env) in probes.items():
                    self.baseline.setdefault(probe, Cell()).samples.append(self.h.timed(argv, env=env)[0])
            k += 1
        if op in ("no-op build", "status") and bs is not None and _stat(bs.manifest) != stamp:
            self.problems.append(f"{self.n} recipes, buildsys {op}: the stat manifest was rewritten during the "
                                 "series, so some runs took the full path")
        self.load[op] = (load0, os.getloadavg()[0])
        for t in tools:
            self.cells[(t.name, op)] = cells[t.name]
            if after is not None:
                after(t)
        self.log(f"[{self.n}] {op}: " + ", ".join(f"{t.name} {fmt(cells[t.name].wall)}" for t in tools)
                 + f"  (load {load0:.1f} → {os.getloadavg()[0]:.1f})")

    def measure(self) -> None:
        self.prepare()
        for t in self.tools:
            if isinstance(t, Buildsys) and not (t.fast_path("build") and t.fast_path("status")):
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
            _, p = self.h.timed(t.commands()["tolerance change"], t.ws, t.env())
            if p.code != 0:
                self.problems.append(f"{self.n} recipes, {t.name}: the build after restoring m0000 failed")
            t.settle()

        self.series("tolerance change", before=edit, after=put_back)


def _stat(p: Path) -> tuple[int, int, int] | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
