"""npy parity data of one batch size builds at every shape point, and the build says how it was fitted."""
from __future__ import annotations

import json

import numpy as np

from tests.e2e.conftest import tiny_recipe


def test_data_of_batch_2_builds_at_batch_1_and_4_and_says_how(workspace):
    (workspace.root / "data").mkdir()
    np.save(workspace.root / "data/x.npy", np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    recipe = tiny_recipe().replace("data: {kind: normal, mean: 0.0, std: 1.0}", "data: {kind: npy, path: 'data/*.npy'}")
    workspace.write("recipes/tiny.yaml", recipe)

    r = workspace.build()

    assert r.code == 0, r.stderr
    note = {s["id"]: s for s in r.json["steps"]}["tiny:reference"]["note"]
    assert note.startswith("npy data fitted to the shape points (first entries, or repeated): ")
    assert "x at min: data/x.npy [2, 4] -> [1, 4] (first 1 of 2 along batch)" in note
    assert "x at max: data/x.npy [2, 4] -> [8, 4] (2 repeated to 8 along batch)" in note
    assert "x at opt" in note and "note: npy data fitted" in r.stderr
    parity = json.loads((workspace.root / "out/tiny/parity/fp32.json").read_text())
    assert parity["passed"] and [row["shapes"]["x"] for row in parity["results"]] == [[1, 4], [4, 4], [8, 4]]
