"""Real third-party models through export and fp32 parity: the model x exporter table.

    .venv/bin/python benchmarks/real_models.py                      # every model, both exporters
    .venv/bin/python benchmarks/real_models.py --models bert swin --exporters dynamo
    .venv/bin/python benchmarks/real_models.py --buildsys /work/main  # another checkout's buildsys

Eleven `transformers` architectures (tiny configs, seeded random weights, built
offline) and the repo's transformer and EfficientNet-Lite0 samples, each with
dynamic batch and sequence/image/audio length and parity at min, opt, max and the
seeded shapes (tests/fixtures/real_models.py). One `buildsys build` per run, one
job, simplify off. Columns: export's outcome, parity's, the largest absolute error
over every parity point, and the export step's own seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.real_models import EXPORTERS, MODELS, workspace  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    ap.add_argument("--buildsys", type=Path, default=REPO, help="checkout whose buildsys package runs")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="real-models-"))
    workspace(root)
    wanted = [f"{m}-{e}" for e in args.exporters for m in args.models]
    env = {**os.environ, "PYTHONPATH": str(args.buildsys)}
    proc = subprocess.run([sys.executable, "-m", "buildsys", "-C", str(root), "build", "--json", "-k", *wanted],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    steps = {s["id"]: s for s in json.loads(proc.stdout)["steps"]}
    rows = [("model", "exporter", "result", "max error", "export s")]
    for name in wanted:
        model, _, exporter = name.rpartition("-")
        export, parity = steps.get(f"{name}:export", {}), steps.get(f"{name}:parity[fp32]", {})
        result_file = root / "out" / name / "parity" / "fp32.json"
        worst = "—"
        if parity.get("state") in ("ran", "cached", "cutoff") and result_file.is_file():
            doc = json.loads(result_file.read_text())
            errs = [o.get("max_abs") for r in doc["results"] for o in r["outputs"].values()]
            errs = [e for e in errs if e is not None]
            worst = f"{max(errs):.2g}" if errs else "—"
            result = "pass" if doc["passed"] else "FAIL parity: " + doc["failures"][0][:90]
        elif export.get("state") == "failed":
            text = export.get("message", "").splitlines()[0]
            result = "FAIL export: " + text.split(": ", 2)[-1][:90]
        else:
            result = f"{export.get('state', '?')}/{parity.get('state', '?')}"
        rows.append((model, exporter, result, worst, f"{export.get('seconds', 0.0):.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths + [8])) + " |")
        if r is rows[0]:
            print("|" + "|".join("-" * (w + 2) for w in widths + [8]) + "|")
    for exporter in args.exporters:
        mine = [r for r in rows[1:] if r[1] == exporter]
        print(f"{exporter}: {sum(r[2] == 'pass' for r in mine)}/{len(mine)} pass")
    print(f"workspace: {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
