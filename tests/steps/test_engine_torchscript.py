"""engine[torchscript]: script and trace a tiny model, refuse what does not compile, save reproducible bytes."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.steps import FIXTURES, RecipeSteps

TINY = """\
version: 1
model: {{factory: "tm.{module}"{checkpoint}}}
inputs: [{{name: x, dtype: float32, shape: [batch, 4], data: {{kind: normal, mean: 0.0, std: 1.0}}}}]
outputs: [{{name: scores}}]
dims: {{batch: {{min: 1, opt: 4, max: 8}}}}
targets: [{{backend: torchscript, mode: {mode}}}]
"""

MODELS = '''\
import torch
from torch import nn


class Branchy(nn.Module):
    """Python control flow on the batch size: tracing at one size freezes the branch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.shape[0] > 2:
            return self.fc(x) * 2.0
        return self.fc(x)


class Unscriptable(nn.Module):
    """A try block: plain Python that TorchScript's compiler refuses and the tracer never sees."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        try:
            return self.fc(x)
        except RuntimeError:
            return x


def branchy():
    return Branchy()


def unscriptable():
    return Unscriptable()
'''

ENGINE = "engine[torchscript]"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def build(tmp_path: Path, module: str = "tiny:tiny", mode: str = "script", checkpoint: str = "") -> RecipeSteps:
    """A workspace with the fixture models and MODELS, and a recipe for one of them."""
    if not (tmp_path / "tm").exists():
        shutil.copytree(FIXTURES, tmp_path / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tm" / "odd.py").write_text(MODELS)
    text = TINY.format(module=module, mode=mode, checkpoint=f", checkpoint: {checkpoint}" if checkpoint else "")
    return RecipeSteps(tmp_path, text)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> RecipeSteps:
    """The tiny model's recipe with its reference built once."""
    steps = build(tmp_path_factory.mktemp("tiny"))
    assert steps.run("reference")["ok"]
    return steps


def with_mode(steps: RecipeSteps, mode: str) -> dict:
    params = json.loads(json.dumps(steps.steps[ENGINE].params))
    params["target"]["mode"] = mode
    return params


@pytest.mark.parametrize("mode", ["script", "trace"])
def test_compiled_model_matches_eager_at_every_shape_point(tiny, mode):
    answer = tiny.run(ENGINE, with_mode(tiny, mode))
    assert answer["ok"], answer.get("error")
    assert answer["verdict"]["passed"] is True
    assert answer["verdict"]["summary"].startswith(f"{mode}, ")
    assert "matches eager at min, opt, max" in answer["verdict"]["summary"]
    result = json.loads(tiny.out(ENGINE, "result").read_text())
    assert result["passed"] is True and result["precision"] == "fp32"
    # every reference point: the corners and the seeded shapes drawn inside the ranges
    assert {r["point"] for r in result["results"]} == {"min", "opt", "max", "random1", "random2"}
    assert result["results"][0]["outputs"]["scores"]["max_abs"] < 1e-5
    assert "tm/tiny.py" in answer["deps"]["files"]  # the model's source joins the key


def test_saved_file_loads_alone_and_matches_eager_on_new_data(tiny):
    import torch

    from tests.fixtures.models.tiny import tiny as make

    assert tiny.run(ENGINE, with_mode(tiny, "trace"))["ok"]
    loaded = torch.jit.load(str(tiny.out(ENGINE, "engine")))
    torch.manual_seed(0)  # the recipe's factory is called under seed 0
    eager = make(features=4)
    x = torch.randn(5, 4)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), eager(x), atol=1e-6)


def test_trace_check_fails_on_data_dependent_control_flow_naming_the_line(tmp_path):
    steps = build(tmp_path, "odd:branchy", "trace")
    assert steps.run("reference")["ok"]
    answer = steps.run(ENGINE)
    assert not answer["ok"]
    assert answer["error"].startswith("the trace does not hold at every shape point (checked at min, opt, max): "
                                      "Tracing failed sanity checks! ERROR: Graphs differed across invocations!")
    assert answer["error"].endswith("(odd.py:13: Converting a tensor to a Python boolean might cause the trace "
                                    "to be incorrect)")
    assert answer["field"] == "targets" and "mode: script" in answer["hint"]
    assert "TracerWarning: " in steps.log(ENGINE).read_text()  # the full story is in the log


def test_the_same_control_flow_compiles_with_script_and_passes(tmp_path):
    steps = build(tmp_path, "odd:branchy", "script")
    assert steps.run("reference")["ok"]
    answer = steps.run(ENGINE)
    assert answer["ok"], answer.get("error")
    assert answer["verdict"]["passed"] is True


def test_script_names_the_unsupported_construct_and_suggests_trace(tmp_path):
    steps = build(tmp_path, "odd:unscriptable", "script")
    assert steps.run("reference")["ok"]
    answer = steps.run(ENGINE)
    assert not answer["ok"]
    assert answer["error"].startswith("torch.jit.script cannot compile the model: ")
    assert "try blocks aren't supported" in answer["error"]
    assert 'odd.py", line 26' in answer["error"] and "<--- HERE" in answer["error"]
    assert answer["field"] == "targets" and "mode: trace" in answer["hint"]
    assert steps.run(ENGINE, with_mode(steps, "trace"))["ok"]


def test_bytes_are_reproducible_and_free_of_paths_whatever_the_worker_compiled_before(tiny, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("PYTHONHASHSEED", "0")  # a worker's own seed must not order the archive
    answer = tiny.run(ENGINE, with_mode(tiny, "script"))
    first = tiny.out(ENGINE, "engine").read_bytes()
    # This process now holds TorchScript classes of the same names; a compile here would mangle them.
    torch.jit.script(torch.nn.Linear(4, 2))
    again = tiny.run(ENGINE, with_mode(tiny, "script"))
    assert again["outputs"]["engine"] == answer["outputs"]["engine"]
    assert tiny.out(ENGINE, "engine").read_bytes() == first
    assert str(tiny.ws).encode() not in first and b"site-packages" not in first
    names = zipfile.ZipFile(tiny.out(ENGINE, "engine")).namelist()
    assert names and not [n for n in names if n.endswith(".debug_pkl")]

    monkeypatch.setenv("PYTHONHASHSEED", "2")
    elsewhere = build(tmp_path / "elsewhere")  # another checkout of the same project
    assert elsewhere.run("reference")["ok"]
    other = elsewhere.run(ENGINE, with_mode(elsewhere, "script"))
    assert other["outputs"]["engine"] == answer["outputs"]["engine"]


def test_checkpoint_weights_are_compiled_in(tmp_path):
    import torch

    from tests.fixtures.models.tiny import tiny as make

    weights = make(features=4)
    with torch.no_grad():
        for p in weights.parameters():
            p.fill_(0.5)
    (tmp_path / "w").mkdir()
    torch.save(weights.state_dict(), tmp_path / "w" / "tiny.pt")
    steps = build(tmp_path, "tiny:tiny", "trace", checkpoint="w/tiny.pt")
    assert steps.steps[ENGINE].files == {"checkpoint": "w/tiny.pt"}
    assert steps.run("reference")["ok"]
    answer = steps.run(ENGINE)
    assert answer["ok"] and answer["verdict"]["passed"], answer.get("error")
    loaded = torch.jit.load(str(steps.out(ENGINE, "engine")))
    assert all(bool((p == 0.5).all()) for p in loaded.parameters())
