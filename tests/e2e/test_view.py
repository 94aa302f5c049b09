"""`buildsys view`: a built artifact served by Netron on loopback."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

from tests.e2e.conftest import tiny_recipe


def _serve(workspace, *args):
    proc = subprocess.Popen([sys.executable, "-m", "buildsys", "-C", str(workspace.root), "view", *args,
                             "--no-browser", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, env={**os.environ, "BROWSER": "false"})
    return proc, proc.stdout.readline()


def test_view_serves_the_simplified_model_on_loopback_and_any_artifact_by_name(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0
    proc, line = _serve(workspace, "tiny")
    try:
        m = re.fullmatch(r"serving out/tiny/model\.sim\.onnx at (http://127\.0\.0\.1:\d+)\n", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        url = m.group(1)
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert page.status == 200 and b"/data/model.sim.onnx" in page.read()
        with urllib.request.urlopen(url + "/data/model.sim.onnx", timeout=10) as data:
            assert data.read() == (workspace.root / "out/tiny/model.sim.onnx").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    proc, line = _serve(workspace, "tiny:engine[onnxruntime-fp32]")
    try:
        url = line.split(" at ")[1].strip()
        assert line.startswith("serving out/tiny/engines/onnxruntime-fp32.ort at http://127.0.0.1:")
        with urllib.request.urlopen(url + "/data/onnxruntime-fp32.ort", timeout=10) as data:
            assert data.read() == (workspace.root / "out/tiny/engines/onnxruntime-fp32.ort").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_view_names_what_the_recipe_builds_when_the_artifact_is_unknown(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.run("view", "tiny:model.int8.onnx", "--no-browser")
    assert r.code == 2
    assert "tiny builds no artifact 'model.int8.onnx'; it builds engines/onnxruntime-fp32.ort, model.onnx, " \
           "model.sim.onnx" in r.stderr
    r = workspace.run("view", "tiny", "--no-browser")
    assert r.code == 2 and "out/tiny/model.sim.onnx is not built" in r.stderr


def test_view_at_a_node_names_it_and_refuses_one_the_model_lacks(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    assert workspace.build().code == 0
    import onnx

    node = onnx.load(str(workspace.root / "out/tiny/model.sim.onnx")).graph.node[0].name
    proc, line = _serve(workspace, "tiny", "--node", node)
    try:
        assert line.startswith("serving out/tiny/model.sim.onnx at http://127.0.0.1:")
        assert proc.stdout.readline() == f"node {node}: find it with Ctrl+F in the view\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    r = workspace.run("view", "tiny", "--no-browser", "--node", node + "x")
    assert r.code == 2
    assert f"model.sim.onnx has no node '{node}x'" in r.stderr and f"did you mean '{node}'?" in r.stderr
