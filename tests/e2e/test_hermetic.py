"""Steps are hermetic: a recipe built among recipes whose factories change the interpreter
gives the same bytes as the same recipe built alone, in either order, at -j 1 and -j 2, and
through Dask."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Workspace, new_workspace, recipe_yaml, worker_pids

LEAKS = ("dtype", "stub", "seed", "backends", "environ", "patch")
KINDS = ("plain", *LEAKS)


def _recipe(factory: str) -> str:
    return recipe_yaml(f'{{factory: "tm.leaky:{factory}", kwargs: {{features: 4}}}}', rest="simplify: false\n")


# Byte for byte; ORT-format engines are compared by what they compute (their layout varies).
COMPARED = ("model.onnx", "reference.npz")


def _workspace(root: Path, names: dict[str, str]) -> Workspace:
    ws = new_workspace(root)
    for name, kind in names.items():
        ws.write(f"recipes/{name}.yaml", _recipe(kind))
    return ws


def _artifacts(ws: Workspace, name: str) -> dict[str, object]:
    import numpy as np
    import onnxruntime as ort

    out = ws.root / "out" / name
    found: dict[str, object] = {rel: (out / rel).read_bytes() for rel in COMPARED}
    session = ort.InferenceSession(str(out / "engines/onnxruntime-fp32.ort"), providers=["CPUExecutionProvider"])
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(6, 4)
    found["engine(x)"] = session.run(None, {"x": x})[0].tobytes()
    parity = json.loads((out / "parity/fp32.json").read_text())
    found["parity"] = [(r["point"], r["outputs"]) for r in parity["results"]]
    return found


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> dict[str, dict[str, object]]:
    """Each recipe built by itself, in a build of its own."""
    ws = _workspace(tmp_path_factory.mktemp("alone"), {k: k for k in KINDS})
    found = {}
    for kind in KINDS:
        r = ws.build(kind)
        assert r.code == 0, r.stderr
        found[kind] = _artifacts(ws, kind)
    return found


def _check_mixed(ws: Workspace, names: dict[str, str], alone: dict[str, dict[str, object]], *args: str) -> None:
    r = ws.build("-k", *args)
    assert r.code == 0, r.stderr
    states = r.states()
    # every recipe's model code ran in this build; steps downstream of byte-identical models
    # (three factories build the same network) may be restored from the action cache
    assert all(states[f"{name}:{step}"] == "ran" for name in names for step in ("export", "reference"))
    assert set(states.values()) <= {"ran", "cached"}
    for name, kind in names.items():
        got = _artifacts(ws, name)
        for what, expected in alone[kind].items():
            assert got[what] == expected, f"{name} ({kind}): {what} differs from a build of the recipe alone"


def test_leaky_recipes_first_one_worker(alone, tmp_path):
    # sorted step order runs the leaky factories before the plain one, all in one worker
    names = {f"a_{k}": k for k in LEAKS} | {"p_plain": "plain"}
    _check_mixed(_workspace(tmp_path, names), names, alone, "-j", "1")


def test_plain_recipe_first_two_workers(alone, tmp_path):
    names = {"a_plain": "plain"} | {f"z_{k}": k for k in LEAKS}
    _check_mixed(_workspace(tmp_path, names), names, alone, "-j", "2")


@pytest.mark.slow
def test_through_dask(alone, cluster, tmp_path, tmp_path_factory):
    names = {f"a_{k}": k for k in LEAKS} | {"p_plain": "plain"}
    _check_mixed(_workspace(tmp_path, names), names, alone, "-j", "2", "--executor", "dask",
                 "--scheduler", cluster, "--cache", str(tmp_path_factory.mktemp("meeting-point")))


# Each leak, reaching the plain model: a child forked as a worker forks one for a step runs a
# leaky factory, then the plain one, and answers what the plain model computes.
REACHES = """
import json, os, sys
from pathlib import Path

import torch

from buildsys.steps.modelload import load_model
from buildsys.runners.worker import fresh_generators

ws, kinds = Path(sys.argv[1]), sys.argv[2:]
x = torch.linspace(-2, 2, 24).reshape(6, 4)


def output(kind):
    model, _ = load_model({"model": {"factory": f"tm.leaky:{kind}", "kwargs": {"features": 4}}}, ws, {})
    with torch.no_grad():
        return model(x.to(model.fc1.weight.dtype)).double().flatten().tolist()


found = {}
for kind in kinds:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        fresh_generators()
        if kind != "none":
            output(kind)
        os.write(w, json.dumps(output("plain")).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as answer:
        found[kind] = json.loads(answer.read())
    os.waitpid(pid, 0)
print(json.dumps(found))
"""


def test_every_leak_changes_the_plain_model_when_it_reaches_it(tmp_path):
    """So the builds above fail if any leak crosses from one step to the next: these tests can fail."""
    import subprocess
    import sys

    ws = new_workspace(tmp_path)
    proc = subprocess.run([sys.executable, "-c", REACHES, str(ws.root), "none", *LEAKS],
                          capture_output=True, text=True, timeout=300, cwd=ws.root, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    clean = found.pop("none")
    assert len(found) == len(LEAKS)
    assert not [kind for kind, got in found.items() if got == clean], "leaks that leave the plain model as it was"


def test_a_step_that_crashes_fails_alone_and_the_worker_serves_the_next(tmp_path):
    # one worker: the plain recipe's steps run in children of the same template after the crash
    names = {"a_crash": "crash", "b_plain": "plain"}
    ws = _workspace(tmp_path, names)
    r = ws.build("-k", "-j", "1")
    assert r.code == 3
    states = r.states()
    assert states["a_crash:export"] == "failed"
    assert {s for sid, s in states.items() if sid.startswith("b_plain:")} == {"ran"}
    failed = next(s for s in r.json["steps"] if s["id"] == "a_crash:export")
    assert "killed by signal SIGABRT" in failed["message"]
    assert "log: out/a_crash/logs/export.log" in failed["message"]
    assert worker_pids(ws.root) == []


def test_what_cpu_steps_write_does_not_depend_on_the_gpu_the_build_is_shown(tmp_path):
    """Their keys hold no GPU: a build told of a GPU (CUDA_VISIBLE_DEVICES) finds every CPU step cached,
    and built from nothing it writes the same bytes (a GPU machine and a CPU one share a cache)."""
    from tests.e2e.conftest import tiny_recipe

    shown = {"CUDA_VISIBLE_DEVICES": "0"}
    built = {}
    for name, env in (("hidden", {}), ("shown", shown)):
        ws = new_workspace(tmp_path / name)
        ws.write("recipes/tiny.yaml", tiny_recipe(exporter="dynamo"))
        r = ws.run("build", "--json", env=env)
        assert r.code == 0 and "tiny:export" in r.ran(), r.stdout + r.stderr
        built[name] = {f: (ws.root / "out/tiny" / f).read_bytes() for f in COMPARED}
    assert built["shown"] == built["hidden"]
    again = ws.run("build", "--json", env={})  # the other way round: keys built with the GPU shown
    assert again.code == 0 and set(again.states().values()) == {"cached"}, again.stdout
