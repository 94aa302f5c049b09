"""`make mutation`: mutation testing of the modules that guard trust, and the score of each.

mutmut (the `mutation` extra; configured under [tool.mutmut] in pyproject.toml)
changes one thing at a time in these modules (a comparison, a constant, a removed
call) and runs the fast unit tests that cover the changed function; a mutant that
no test notices is a behaviour that can be deleted with every test green.
steps/engine_tensorrt.py and core/gpu.py are mutated only in their error mapping: the functions
that turn CUDA and TensorRT failures into step errors.

    python tests/mutation.py                 every module, then the table
    python tests/mutation.py storage/safepath.py   some modules
    python tests/mutation.py --report        the table of what was last run, running nothing
    python tests/mutation.py --survivors     ... and each surviving mutant's diff

The score is killed / checked (a timeout or a crash counts as killed; a mutant no
test runs counts as survived). Goal: 90 % per module. Not part of `make test`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_M = "ǁ"  # how mutmut names a method: module.xǁClassǁmethod__mutmut_N
MODULES: dict[str, tuple[str, ...]] = {
    "storage/untrusted.py": ("buildsys.storage.untrusted.*",),
    "storage/safepath.py": ("buildsys.storage.safepath.*",),
    "storage/sharedcache.py": ("buildsys.storage.sharedcache.*",),
    "storage/store.py": ("buildsys.storage.store.*",),
    "storage/cachegc.py": ("buildsys.storage.cachegc.*",),
    "engine/noop.py": ("buildsys.engine.noop.*",),
    "steps/diverge.py": ("buildsys.steps.diverge.*",),
    "core/numerics.py": ("buildsys.core.numerics.*",),
    "steps/engine_tensorrt.py": (f"buildsys.steps.engine_tensorrt.x{_M}TensorRTEngine{_M}run__mutmut_*",
                                 f"buildsys.steps.engine_tensorrt.x{_M}TensorRTEngine{_M}_build__mutmut_*",
                                 f"buildsys.steps.engine_tensorrt.x{_M}TensorRTEngine{_M}_parity__mutmut_*",
                                 "buildsys.steps.engine_tensorrt.x_import_tensorrt__mutmut_*"),
    "core/gpu.py": ("buildsys.core.gpu.x_failure__mutmut_*", "buildsys.core.gpu.x_failure_cause__mutmut_*"),
}
KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9}  # failed, pytest's internal error, timeouts, crashes
GOAL = 0.90


def results() -> dict[str, int | None]:
    """Every mutant's exit code, as mutmut recorded it (None: not run)."""
    found: dict[str, int | None] = {}
    for meta in (ROOT / "mutants").rglob("*.meta"):
        found.update(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def table(chosen: list[str], codes: dict[str, int | None], survivors: bool) -> bool:
    ok = True
    print(f"{'module':28} {'mutants':>8} {'killed':>7} {'survived':>9} {'score':>7}")
    for module in chosen:
        mine = {k: v for k, v in codes.items() if any(fnmatchcase(k, p) for p in MODULES[module])}
        run = {k: v for k, v in mine.items() if v is not None}
        killed = [k for k, v in run.items() if v in KILLED]
        survived = sorted(k for k in run if k not in killed)
        score = len(killed) / len(run) if run else None
        ok &= score is not None and score >= GOAL
        shown = f"{score:.1%}" if score is not None else "not run"
        print(f"{module:28} {len(run):>8} {len(killed):>7} {len(survived):>9} {shown:>7}"
              + (f"   ({len(mine) - len(run)} not run)" if len(mine) > len(run) else ""))
        if survivors:
            for name in survived:
                print(f"    survived: {name}" + (f" (exit {run[name]})" if run[name] != 0 else ""))
                diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=ROOT,
                                      capture_output=True, text=True).stdout
                print("\n".join("      " + line for line in diff.splitlines()[-12:]))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", choices=[[], *MODULES], metavar="MODULE",
                    help=f"modules to mutate (default: all): {', '.join(MODULES)}")
    ap.add_argument("--report", action="store_true", help="print the scores of the last run; run nothing")
    ap.add_argument("--survivors", action="store_true", help="list each surviving mutant with its diff")
    ap.add_argument("--max-children", type=int, default=2, help="mutants run at once (default 2)")
    args = ap.parse_args(argv)
    chosen = args.modules or list(MODULES)
    if not args.report:
        patterns = [p for m in chosen for p in MODULES[m]]
        proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children),
                               *patterns], cwd=ROOT)
        if proc.returncode != 0:
            print(f"error: mutmut exited with {proc.returncode}", file=sys.stderr)
            return proc.returncode
    return 0 if table(chosen, results(), args.survivors) else 1


if __name__ == "__main__":
    sys.exit(main())
