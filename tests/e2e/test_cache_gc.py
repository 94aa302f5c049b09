"""`buildsys cache stats`, `cache gc` and `build --cache-max-size` on a real tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.e2e.conftest import tiny_recipe


def _stats(workspace, *args) -> dict:
    r = workspace.run("cache", "stats", "--json", *args)
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def test_stats_and_gc_keep_the_current_build_and_drop_an_old_configuration(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert len(workspace.build().ran()) == 5
    workspace.write("recipes/tiny.yaml", tiny_recipe(atol="1.0e-3"))
    assert workspace.build().ran() == ["tiny:parity[fp32]"]

    s = _stats(workspace)
    assert s["kind"] == "local" and s["entries"] == 6 and s["blobs"] >= 5
    assert 0 < s["reachable"]["bytes"] < s["bytes"]
    text = workspace.run("cache", "stats")
    assert "entries      6" in text.stdout and "reachable" in text.stdout

    dry = workspace.run("cache", "gc", "--max-size", "0", "--dry-run")
    assert dry.code == 0 and "would remove 1 entry" in dry.stdout
    assert _stats(workspace)["entries"] == 6

    r = workspace.run("cache", "gc", "--max-size", "0")
    assert r.code == 0, r.stderr
    assert "removed 1 entry and 1 blob" in r.stdout
    assert "of which 5 entries" in r.stdout and "current recipes' last build" in r.stdout
    assert "over the limit" in r.stdout
    after = _stats(workspace)
    assert after["entries"] == 5 and after["bytes"] == after["reachable"]["bytes"]

    again = workspace.build()
    assert again.code == 0 and again.ran() == []  # the current build is whole
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    back = workspace.build()
    assert back.ran() == ["tiny:parity[fp32]"]  # its old entry was collected: it runs, not restored


def test_gc_usage_errors(workspace):
    r = workspace.run("cache", "gc")
    assert r.code == 2 and "--max-size SIZE or --max-age DAYS" in r.stderr
    r = workspace.run("cache", "gc", "--max-size", "lots")
    assert r.code == 2 and "expected a size like 10GiB" in r.stderr
    r = workspace.run("cache", "stats", "--cache", str(workspace.root / "nowhere"))
    assert r.code == 2 and "no such folder" in r.stderr


def test_build_with_cache_max_size_trims_after_the_build(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0
    workspace.write("recipes/tiny.yaml", tiny_recipe(atol="1.0e-3"))
    r = workspace.build("--cache-max-size", "0")
    assert r.code == 0 and r.ran() == ["tiny:parity[fp32]"]
    assert "removed 1 entry" in r.stderr
    assert _stats(workspace)["entries"] == 5
    r = workspace.build("--cache-max-size", "10GiB")
    assert r.code == 0 and r.ran() == [] and "removed 0 entries" in r.stderr


def test_gc_beside_a_running_build_on_the_local_store_and_a_shared_cache(workspace, tmp_path_factory):
    cache = tmp_path_factory.mktemp("shared")
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build("--cache", str(cache)).code == 0
    workspace.write("recipes/tiny.yaml", tiny_recipe(opset=17))  # export and everything after it re-run
    cmd = [sys.executable, "-m", "buildsys", "-C", str(workspace.root), "build", "--json", "--cache", str(cache)]
    builder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    lock = workspace.root / "out/.buildsys/lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip() == str(builder.pid)):
        time.sleep(0.05)
    # the local store: gc waits for the build's lock, then collects what the build left behind
    local = subprocess.Popen([*cmd[:5], "cache", "gc", "--max-size", "0"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    shared_runs = 0
    while builder.poll() is None:  # the shared cache, with no grace, while the build publishes to it
        r = workspace.run("cache", "gc", "--cache", str(cache), "--max-size", "0", "--grace", "0")
        assert r.code == 0, r.stderr
        shared_runs += 1
    out, err = builder.communicate()
    assert builder.returncode == 0, err
    states = {s["id"]: s["state"] for s in json.loads(out)["steps"]}
    assert states["tiny:export"] == "ran" and set(states.values()) <= {"ran", "cached"}
    assert shared_runs >= 1
    local_out, local_err = local.communicate(timeout=120)
    assert local.returncode == 0, local_err
    assert "waiting for the build already running" in local_err
    old = sum(1 for v in states.values() if v == "ran")
    assert f"removed {old} entries" in local_out  # the opset-18 entries, once opset 17 was recorded
    r = workspace.build()
    assert r.code == 0 and r.ran() == []
    assert os.path.exists(workspace.root / "out/tiny/model.onnx")


def test_gc_imports_no_heavy_library_and_leaves_the_no_op_fast(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe(atol="1.0e-3"))
    assert workspace.build().code == 0
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().ran() == ["tiny:parity[fp32]"]
    past = time.time() - 60
    for p in workspace.root.rglob("*"):
        os.utime(p, (past, past), follow_symlinks=False)
    assert workspace.build().ran() == []  # records the stat manifest
    heavy = {"torch", "onnx", "onnxruntime", "onnxsim"}
    for args in (("cache", "stats"), ("cache", "gc", "--max-size", "0")):
        r = workspace.run(*args, env={"_pyflags": ["-X", "importtime"]})
        assert r.code == 0, r.stderr
        imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines()
                    if "import time:" in line}
        assert not imported & heavy, args
    assert "removed 1 entry" in r.stdout
    fast = workspace.run("build", "--json", env={"_pyflags": ["-X", "importtime"]})
    assert fast.code == 0 and fast.ran() == []
    assert "buildsys.engine.workspace" not in fast.stderr  # still answered from the stat manifest
