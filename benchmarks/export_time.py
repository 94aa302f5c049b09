"""Seconds of the export step, before and after exporting under no_grad: model x exporter x ratio.

    .venv/bin/python benchmarks/export_time.py                      # the default models, both exporters
    .venv/bin/python benchmarks/export_time.py --models bert vit --exporters dynamo --runs 5
    .venv/bin/python benchmarks/export_time.py --before <commit>    # compare with another commit

"before" is the buildsys package of `--before` (default: the parent of the oldest commit
that put `no_grad` into buildsys/steps/export.py, found with `git log -S`), extracted
with `git archive` into a temporary folder; "after" is this checkout's. Both run the
same recipes and models (tests/fixtures/real_models.py: `transformers` architectures
from tiny configs with seeded random weights, and the repo's samples).

Each run is a fresh Python process that first exports a tiny model with the same
exporter (as a worker's template is warmed), then runs the export step of the model
under test (buildsys.steps.base.run_job: load, export, checks) and reports its CPU
seconds (the process's, all threads) and its wall seconds. "before s", "after s" and
the ratio are CPU seconds, which a busy machine disturbs far less than the wall clock
(with the default one torch thread they are the export's time on an idle machine);
the wall columns follow. Runs alternate before/after so that a change in the
machine's load touches both; each cell is the median of `--runs`. An export the before code refused (its
TorchScript path refused any trace with a tracer warning, after exporting) is timed
to the refusal and marked: its ratio is then an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("bert", "t5_encoder", "vit", "resnet", "transformer", "efficientnet_lite0")
WARM = """\
version: 1
model: {{factory: "tm.tiny:tiny", kwargs: {{features: 4}}}}
inputs: [{{name: x, dtype: float32, shape: [batch, 4]}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 2, max: 4}}}}
export: {{opset: 18, exporter: {exporter}}}
simplify: false
"""


def child(root: Path, names: list[str], threads: int) -> None:
    """Run each named recipe's export step in this process; print the last one's answer as JSON."""
    import buildsys
    from buildsys.recipe import loading
    from buildsys.recipe.resolve import resolve

    try:
        from buildsys.engine.stepjob import run_job
    except ImportError:  # the code before the engine package
        from buildsys.steps.base import run_job

    recipes, problems = loading.load(root, None, names)
    graph = resolve(recipes, root)
    if problems:
        raise SystemExit(f"recipe problems: {[p.render() for p in problems]}")
    for name in names:
        spec = graph.steps[f"{name}:export"]
        scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root / "scratch"))
        job = {"id": spec.id, "kind_path": spec.kind_path, "params": spec.params, "workspace": str(root),
               "scratch": str(scratch), "inputs": {}, "artifacts": {}, "log": str(scratch / "export.log"),
               "files": {k: str(root / v) for k, v in spec.files.items()},
               "outputs": {k: Path(v).name for k, v in spec.outputs.items()}, "threads": threads}
        started, cpu = time.perf_counter(), time.process_time()
        answer = run_job(job)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"ok": answer["ok"], "seconds": seconds, "cpu": cpu, "error": (answer.get("error") or "")[:300],
                      "buildsys": str(Path(buildsys.__file__).parent)}))


def before_commit() -> str:
    found = subprocess.run(["git", "log", "--format=%H", "-S", "no_grad", "--", "buildsys/steps/export.py"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not found:
        raise SystemExit("no commit put no_grad into buildsys/steps/export.py; give --before")
    return found[-1] + "^"


def extract(commit: str, into: Path) -> Path:
    """`commit`'s buildsys package and schemas under `into` (git archive: the checkout is not touched)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "buildsys", "schemas"], cwd=REPO,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(checkout: Path, root: Path, exporter: str, name: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), str(threads),
                           f"warm-{exporter}", name], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "seconds": float("nan"), "cpu": float("nan"), "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    answer = json.loads(lines[-1])
    if Path(answer["buildsys"]) != checkout / "buildsys":
        raise SystemExit(f"ran {answer['buildsys']}, not {checkout / 'buildsys'}")
    return answer


def cell(answers: list[dict], key: str) -> tuple[str, float | None, str]:
    """(seconds as shown, median seconds or None, what happened when not exported)."""
    secs = [a[key] for a in answers if a[key] == a[key]]
    median = statistics.median(secs) if secs else None
    failed = [a for a in answers if not a["ok"]]
    if not failed:
        return f"{median:.2f}", median, ""
    why = failed[0]["error"]
    refused = "tracer could not follow" in why
    shown = "—" if median is None else f"{median:.2f}"
    return shown, median, ("refused: tracer warning" if refused else f"failed: {why[:80]}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[4:], int(sys.argv[3]))
        return 0
    sys.path.insert(0, str(REPO))
    from tests.fixtures.real_models import EXPORTERS, MODELS, workspace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS)
    ap.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    ap.add_argument("--before", help="commit to compare with (default: the one before export ran under no_grad)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell; the median is shown (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the export step (default 1)")
    args = ap.parse_args()
    commit = args.before or before_commit()
    rev = subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="export-time-"))
    before = extract(commit, tmp / "before")
    root = tmp / "ws"
    workspace(root)
    (root / "scratch").mkdir()
    for exporter in args.exporters:
        (root / "recipes" / f"warm-{exporter}.yaml").write_text(WARM.format(exporter=exporter))
    print(f"before: {commit} ({rev}); after: {REPO}; {args.runs} runs each, median; threads {args.threads}",
          file=sys.stderr)
    rows = [("model", "exporter", "before s", "after s", "ratio", "wall before", "wall after", "note")]
    for model in args.models:
        for exporter in args.exporters:
            name = f"{model}-{exporter}"
            answers: dict[str, list[dict]] = {"before": [], "after": []}
            for _ in range(args.runs):
                for label, checkout in (("before", before), ("after", REPO)):
                    answers[label].append(measure(checkout, root, exporter, name, args.threads))
            b_text, b, b_why = cell(answers["before"], "cpu")
            a_text, a, a_why = cell(answers["after"], "cpu")
            ratio = f"{a / b:.2f}" if a is not None and b and not a_why and not b_why.startswith("failed") else "—"
            note = "; ".join(x for x in (b_why and f"before {b_why}", a_why and f"after {a_why}") if x)
            if b_why.startswith("refused") and ratio != "—":
                note += " (timed to the refusal: the ratio is an upper bound)"
            rows.append((model, exporter, b_text, a_text, ratio, cell(answers["before"], "seconds")[0],
                         cell(answers["after"], "seconds")[0], note))
            print(f"  {name} cpu/wall s: before {[(round(x['cpu'], 2), round(x['seconds'], 2)) for x in answers['before']]}, "
                  f"after {[(round(x['cpu'], 2), round(x['seconds'], 2)) for x in answers['after']]}",
                  file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if r is rows[0]:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return 0


if __name__ == "__main__":
    sys.exit(main())
