"""The same graph on a real Dask cluster (a scheduler and two workers on 127.0.0.1)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Workspace, tiny_recipe

pytest.importorskip("distributed", reason="Dask is an optional extra: pip install '.[cluster]'")


def _run_ort(path: Path) -> bytes:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4)
    return session.run(None, {"x": x})[0].tobytes()


def _digests(root: Path) -> dict[str, bytes]:
    out = root / "out"
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".buildsys" not in p.parts and "logs" not in p.parts}


@pytest.mark.slow
def test_a_build_through_dask_matches_a_local_build(workspace, cluster, tmp_path_factory):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    workspace.write("recipes/tiny2.yaml", tiny_recipe(opset=17))
    t0 = time.perf_counter()
    local = workspace.build("-j", "2")
    local_s = time.perf_counter() - t0
    assert local.code == 0, local.stderr

    remote_ws = Workspace(tmp_path_factory.mktemp("through-dask"))
    for d in ("recipes", "tm"):
        shutil.copytree(workspace.root / d, remote_ws.root / d)
    cache = tmp_path_factory.mktemp("meeting-point")
    t0 = time.perf_counter()
    r = remote_ws.build("-j", "2", "--executor", "dask", "--scheduler", cluster, "--cache", str(cache))
    print(f"\ndask build: {time.perf_counter() - t0:.1f}s, local build of the same recipes: {local_s:.1f}s")
    assert r.code == 0, r.stderr
    assert len(r.ran()) == 10
    here, there = _digests(workspace.root), _digests(remote_ws.root)
    assert here.keys() == there.keys()
    # ONNX Runtime writes ORT-format models in a layout that varies from process to process
    # (same size, same content, other order), so engines are compared by what they compute.
    assert {k: v for k, v in here.items() if not k.endswith(".ort")} == \
        {k: v for k, v in there.items() if not k.endswith(".ort")}
    for name in (k for k in here if k.endswith(".ort")):
        assert _run_ort(workspace.root / "out" / name) == _run_ort(remote_ws.root / "out" / name)
    assert (remote_ws.root / "out/tiny/logs/export.log").read_text().startswith("== tiny:export")


def test_dask_without_a_cache_is_a_usage_error(workspace):
    workspace.write("recipes/tiny.yaml", tiny_recipe())
    r = workspace.run("build", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert r.code == 2
    assert "--executor dask needs a writable --cache" in r.stderr
