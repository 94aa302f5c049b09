"""Loading recipes: defaults, `extends`, positions, discovery, several files, selection."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from buildsys.core.errors import RecipeError, UsageError
from buildsys.recipe import discover, load_recipe, load_recipes, select
from buildsys.recipe.model import (
    DEFAULT_TOLERANCES,
    CalibrationSpec,
    DataSpec,
    Dim,
    ExportSpec,
    InputSpec,
    ModelSpec,
    OutputSpec,
    ParitySpec,
    Recipe,
    SimplifySpec,
    TargetSpec,
    Tolerance,
)

REPO = Path(__file__).resolve().parents[2]

# The example of DESIGN.md section 2, its factory pointing at a module of the test workspace.
DESIGN_EXAMPLE = """\
# recipes/resnet18.yaml
# yaml-language-server: $schema=../schemas/recipe.schema.json
version: 1
name: resnet18                    # default: the file's stem; [a-z0-9][a-z0-9._-]*
description: ResNet-18 classifier # optional, shown in reports
model:
  factory: models.resnet:resnet18 # module:callable, importable from the project root
  kwargs: {num_classes: 1000}
  checkpoint: weights/resnet18.pt # optional state_dict, loaded with weights_only=True
inputs:
  - name: input
    dtype: float32
    shape: [batch, 3, height, width]   # a name is a dynamic axis, a number is fixed
    data: {kind: uniform, low: 0.0, high: 1.0}   # or {kind: normal, mean, std},
                                                 # {kind: randint, low, high} (high exclusive;
                                                 # token ids, masks), {kind: npy, path: glob}
outputs:
  - name: logits
dims:                               # every named axis: min / opt / max
  batch:  {min: 1, opt: 8, max: 32}
  height: {min: 224, opt: 224, max: 384}
  width:  {min: 224, opt: 224, max: 384}
profiles: []                        # optional extra TensorRT profiles: overrides of dims
export: {opset: 17, exporter: dynamo}
simplify: true
calibration: {data: {kind: uniform, low: 0, high: 1}, samples: 64, method: minmax}
targets:
  - {backend: onnxruntime, precision: fp32}
  - {backend: onnxruntime, precision: int8}
  - {backend: tensorrt, precision: fp16, workspace: 4GiB}
  - {backend: tensorrt, precision: int8}
tolerances:                         # per precision, applied to every output
  fp32: {atol: 1.0e-4, rtol: 1.0e-3}
  fp16: {atol: 1.0e-2, rtol: 1.0e-2}
  int8: {min_cosine: 0.99, min_top1: 0.90}
parity: {samples: 4, seed: 0, points: [min, opt, max]}
"""

MINIMAL = """\
version: 1
model: {factory: models.resnet:resnet18}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, 8, 8]}
outputs:
  - {name: logits}
dims:
  batch: {min: 1, opt: 2, max: 4}
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "resnet.py").write_text("def resnet18(num_classes=1000):\n    raise SystemExit(1)\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "resnet18.pt").write_bytes(b"weights")
    return tmp_path


def write(ws: Path, name: str, text: str) -> Path:
    path = ws / "recipes" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(ws: Path, text: str, name: str = "r.yaml") -> Recipe:
    return load_recipe(write(ws, name, text), ws)


def problems(ws: Path, text: str, name: str = "r.yaml") -> str:
    with pytest.raises(RecipeError) as exc:
        load(ws, text, name)
    return exc.value.render()


# -- one recipe ------------------------------------------------------------------------


def test_design_example_resolves_and_round_trips(ws: Path):
    r = load(ws, DESIGN_EXAMPLE, "resnet18.yaml")
    assert r == Recipe(
        name="resnet18",
        file="recipes/resnet18.yaml",
        sources=("recipes/resnet18.yaml",),
        model=ModelSpec("models.resnet:resnet18", {"num_classes": 1000}, "weights/resnet18.pt"),
        inputs=(InputSpec("input", "float32", ("batch", 3, "height", "width"), DataSpec("uniform", 0.0, 1.0)),),
        outputs=(OutputSpec("logits"),),
        dims=(Dim("batch", 1, 8, 32), Dim("height", 224, 224, 384), Dim("width", 224, 224, 384)),
        description="ResNet-18 classifier",
        version=1,
        profiles=(),
        export=ExportSpec(17, "dynamo"),
        simplify=SimplifySpec(True),
        calibration=CalibrationSpec(DataSpec("uniform", 0.0, 1.0), 64, "minmax", True),
        targets=(
            TargetSpec("onnxruntime", "fp32"),
            TargetSpec("onnxruntime", "int8"),
            TargetSpec("tensorrt", "fp16", workspace=4 * 2**30),
            TargetSpec("tensorrt", "int8"),
        ),
        tolerances={
            "fp32": Tolerance(atol=1e-4, rtol=1e-3),
            "fp16": Tolerance(atol=1e-2, rtol=1e-2),
            "int8": Tolerance(min_cosine=0.99, min_top1=0.9),
            "best": Tolerance(atol=1e-2, rtol=1e-2),
        },
        parity=ParitySpec(4, 0, ("min", "opt", "max")),
    )
    again = Recipe.from_json(r.to_json())
    assert again == r
    assert again.positions == r.positions
    assert again.to_json() == r.to_json()
    assert r.where("dims.batch.max") == "recipes/resnet18.yaml:20:33"
    assert r.where("targets.2") == "recipes/resnet18.yaml:30:5"
    assert r.where("targets.2.workspace") == "recipes/resnet18.yaml:30:53"
    assert r.where("tolerances.int8.min_top1") == "recipes/resnet18.yaml:35:38"
    assert r.where("inputs.0.shape") == "recipes/resnet18.yaml:13:5"
    assert r.where("inputs.0.name") == "recipes/resnet18.yaml:11:11"


def test_defaults_are_filled(ws: Path):
    r = load(ws, MINIMAL, "tiny-net.yaml")
    assert r.name == "tiny-net"
    assert r.description == ""
    assert r.version == 1
    assert r.model == ModelSpec("models.resnet:resnet18", {}, None)
    assert r.inputs[0].data == DataSpec()
    assert r.profiles == ()
    assert r.export == ExportSpec(opset=18, exporter="dynamo")
    assert r.simplify == SimplifySpec(enabled=True)
    assert r.calibration is None
    assert r.targets == (TargetSpec(backend="onnxruntime", precision="fp32"),)
    assert r.tolerances == DEFAULT_TOLERANCES
    assert r.parity == ParitySpec(samples=1, seed=0, points=("min", "opt", "max"))
    # a defaulted field is located at its nearest written parent, else the file
    assert r.where("export.opset") == "recipes/tiny-net.yaml"
    assert r.where("inputs.0.data.kind") == "recipes/tiny-net.yaml:4:5"


def test_static_model_needs_no_dims(ws: Path):
    r = load(ws, MINIMAL.replace("[batch, 3, 8, 8]", "[1, 3, 8, 8]").replace(
        "dims:\n  batch: {min: 1, opt: 2, max: 4}\n", ""))
    assert r.dims == ()
    assert r.inputs[0].shape == (1, 3, 8, 8)


def test_a_tolerance_entry_replaces_its_default_entirely(ws: Path):
    r = load(ws, MINIMAL + "tolerances:\n  fp32: {atol: 1e-5}\n  int8: {min_top1: 0.9}\n")
    assert r.tolerances["fp32"] == Tolerance(atol=1e-05)
    assert isinstance(r.tolerances["fp32"].atol, float)
    assert r.tolerances["int8"] == Tolerance(min_top1=0.9)
    assert r.tolerances["fp16"] == DEFAULT_TOLERANCES["fp16"]


@pytest.mark.parametrize(
    ("written", "size"),
    [("4GiB", 4 * 2**30), ("512MiB", 512 * 2**20), ("1.5GB", 1_500_000_000), ("64 KiB", 65536), ("100B", 100),
     ("2TB", 2 * 10**12), ("1073741824", 2**30)],
)
def test_workspace_sizes_become_bytes(ws: Path, written: str, size: int):
    r = load(ws, MINIMAL + f"targets:\n  - {{backend: tensorrt, workspace: {written}}}\n")
    assert r.targets == (TargetSpec("tensorrt", "fp32", workspace=size),)


@pytest.mark.parametrize(("written", "enabled"), [("false", False), ("true", True), ("{enabled: false}", False),
                                                  ("{}", True)])
def test_simplify_takes_a_boolean_or_a_mapping(ws: Path, written: str, enabled: bool):
    assert load(ws, MINIMAL + f"simplify: {written}\n").simplify == SimplifySpec(enabled)


def test_kind_and_backend_specific_defaults(ws: Path):
    (ws / "data" / "calib").mkdir(parents=True)
    (ws / "data" / "calib" / "cat.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    r = load(ws, MINIMAL.replace("outputs:", (
        "  - {name: ids, dtype: int64, shape: [batch, 16], data: {kind: randint, high: 30522}}\n"
        "  - {name: mask, dtype: bool, shape: [batch, 16], data: {kind: randint, low: 0, high: 2}}\n"
        "outputs:")) + (
        "calibration: {data: {kind: images, path: data/calib}, method: entropy, per_channel: false}\n"
        "targets:\n"
        "  - {backend: torchscript}\n"
        "  - {backend: tensorrt, precision: int8}\n"
        "  - {backend: tensorrt, precision: best}\n"
        "parity: {points: [max, min], samples: 2, seed: 7}\n"
        "profiles:\n"
        "  - {batch: {min: 4, opt: 4}}\n"
    ))
    assert r.inputs[1].data == DataSpec(kind="randint", low=0, high=30522)
    assert isinstance(r.inputs[1].data.low, int) and isinstance(r.inputs[1].data.high, int)
    assert r.inputs[2].data == DataSpec(kind="randint", low=0, high=2)
    assert r.calibration == CalibrationSpec(DataSpec(kind="images", path="data/calib", preset="imagenet"),
                                            64, "entropy", False)
    assert r.targets == (TargetSpec("torchscript", "fp32", mode="script"), TargetSpec("tensorrt", "int8"),
                         TargetSpec("tensorrt", "best"))
    assert [t.id for t in r.targets] == ["torchscript", "tensorrt-int8", "tensorrt-best"]
    assert r.parity == ParitySpec(2, 7, ("min", "max"))
    assert r.profiles == ({"batch": {"min": 4, "opt": 4}},)
    assert r.profile_dims(1)["batch"] == Dim("batch", 4, 4, 4)
    assert r.shape_at(r.inputs[1], "max", profile=1) == (4, 16)


# -- extends ---------------------------------------------------------------------------

BASE = """\
export: {opset: 17}
targets:
  - {backend: onnxruntime}
  - {backend: tensorrt, precision: fp16}
tolerances:
  fp16: {atol: 0.05}
  fp32: {atol: 1e-3, rtol: 1e-2}
dims:
  batch: {min: 1, opt: 2, max: 4}
"""


def test_extends_deep_merges_and_locates_values_in_the_base(ws: Path):
    write(ws, "_base.yaml", BASE)
    text = MINIMAL.replace("dims:\n  batch: {min: 1, opt: 2, max: 4}\n", "") + (
        "extends: _base.yaml\n"
        "export: {exporter: torchscript}\n"
        "targets:\n"
        "  - {backend: torchscript}\n"
        "tolerances:\n"
        "  fp16: {rtol: 0.1}\n"
    )
    r = load(ws, text)
    assert r.sources == ("recipes/r.yaml", "recipes/_base.yaml")
    assert r.export == ExportSpec(opset=17, exporter="torchscript")  # mappings merge
    assert r.targets == (TargetSpec("torchscript", "fp32", mode="script"),)  # lists are replaced whole
    assert r.tolerances["fp16"] == Tolerance(atol=0.05, rtol=0.1)
    assert r.tolerances["fp32"] == Tolerance(atol=1e-3, rtol=1e-2)
    assert r.dims == (Dim("batch", 1, 2, 4),)
    assert r.positions["export.opset"] == ("recipes/_base.yaml", 1, 17)
    assert r.positions["export.exporter"] == ("recipes/r.yaml", 8, 20)
    assert r.positions["dims.batch.max"] == ("recipes/_base.yaml", 9, 32)
    assert r.positions["tolerances.fp16.atol"] == ("recipes/_base.yaml", 6, 16)
    assert r.positions["tolerances.fp16.rtol"] == ("recipes/r.yaml", 12, 16)
    assert r.positions["targets.0"] == ("recipes/r.yaml", 10, 5)
    assert "targets.1" not in r.positions  # the base's list did not survive
    assert r.where("dims.batch") == "recipes/_base.yaml:9:3"


def test_extends_chains_and_bases_in_subfolders(ws: Path):
    write(ws, "shared/_opset.yaml", "export: {opset: 16}\nparity: {seed: 3}\n")
    write(ws, "shared/_common.yaml", "extends: _opset.yaml\nparity: {seed: 5, samples: 2}\n")
    r = load(ws, MINIMAL + "extends: shared/_common.yaml\n")
    assert r.sources == ("recipes/r.yaml", "recipes/shared/_common.yaml", "recipes/shared/_opset.yaml")
    assert r.export.opset == 16
    assert r.parity == ParitySpec(samples=2, seed=5)
    assert r.positions["parity.seed"] == ("recipes/shared/_common.yaml", 2, 16)


def test_problems_in_a_base_point_into_the_base(ws: Path):
    write(ws, "_base.yaml", "export:\n  opset: 17\n  exporter: dinamo\ntolerance: {}\n")
    assert problems(ws, MINIMAL + "extends: _base.yaml\n") == (
        "error: recipes/_base.yaml:3:13: export.exporter: expected one of dynamo, torchscript, found \"dinamo\"\n"
        "  hint: did you mean 'dynamo'?\n"
        "error: recipes/_base.yaml:4:1: tolerance: unknown field 'tolerance'\n"
        "  hint: did you mean 'tolerances'?\n"
        "2 problems found"
    )


def test_a_recipe_overriding_a_bad_base_value_is_fine(ws: Path):
    write(ws, "_base.yaml", "export: {opset: 3}\n")
    assert load(ws, MINIMAL + "extends: _base.yaml\nexport: {opset: 18}\n").export.opset == 18


@pytest.mark.parametrize(
    ("files", "extends", "expected"),
    [
        pytest.param({}, "_bsae.yaml",
                     "error: recipes/r.yaml:9:10: extends: base file not found: '_bsae.yaml' "
                     "(looked for recipes/_bsae.yaml)\n  hint: did you mean '_base.yaml'?", id="missing"),
        pytest.param({}, "other/_x.yaml",
                     "error: recipes/r.yaml:9:10: extends: base file not found: 'other/_x.yaml' "
                     "(looked for recipes/other/_x.yaml)\n  hint: the path is relative to this recipe's folder",
                     id="missing-folder"),
        pytest.param({}, "../../outside.yaml",
                     "error: recipes/r.yaml:9:10: extends: '../../outside.yaml' is outside the workspace\n"
                     "  hint: bases must live inside the project", id="outside"),
        pytest.param({"_a.yaml": "extends: _b.yaml\n", "_b.yaml": "extends: _a.yaml\n"}, "_a.yaml",
                     "error: recipes/_b.yaml:1:10: extends: makes a cycle: recipes/r.yaml -> recipes/_a.yaml -> "
                     "recipes/_b.yaml -> recipes/_a.yaml\n  hint: remove the extends: that points back", id="cycle"),
        pytest.param({}, "r.yaml",
                     "error: recipes/r.yaml:9:10: extends: makes a cycle: recipes/r.yaml -> recipes/r.yaml\n"
                     "  hint: remove the extends: that points back", id="self"),
        pytest.param({}, "[_base.yaml]",
                     "error: recipes/r.yaml:9:1: extends: expected the path of a base YAML file, found a list\n"
                     "  hint: for example extends: _base.yaml (relative to this file)", id="not-a-string"),
        pytest.param({"_bad.yaml": "export: {opset: 17\n"}, "_bad.yaml",
                     "error: recipes/_bad.yaml:2:1: YAML syntax error: while parsing a flow mapping: ",
                     id="base-syntax-error"),
        pytest.param({"_list.yaml": "- 1\n"}, "_list.yaml",
                     "error: recipes/_list.yaml:1:1: expected a mapping at the top level, found a list\n"
                     "  hint: a recipe is a mapping that starts with `version: 1`", id="base-not-a-mapping"),
        pytest.param({}, '"_base\\0.yaml"',
                     "error: recipes/r.yaml:9:10: extends: the path contains a NUL character, which no file name "
                     "can hold\n  hint: for example extends: _base.yaml (relative to this file)", id="nul"),
        pytest.param({}, "b" * 300 + ".yaml",
                     "error: recipes/r.yaml:9:10: extends: a name in the path is longer than 255 bytes, the limit "
                     "of a file name\n  hint: for example extends: _base.yaml (relative to this file)", id="too-long"),
        pytest.param({f"_c{i}.yaml": f"extends: _c{i + 1}.yaml\n" for i in range(2000)}, "_c0.yaml",
                     "error: recipes/_c14.yaml:1:10: extends: a chain of extends longer than 16 files (from "
                     "recipes/r.yaml), the limit of a recipe\n  hint: let the bases extend fewer files in turn",
                     id="chain-of-2000"),
    ],
)
def test_extends_errors(ws: Path, files: dict[str, str], extends: str, expected: str):
    write(ws, "_base.yaml", "parity: {seed: 1}\n")
    for name, text in files.items():
        write(ws, name, text)
    assert problems(ws, MINIMAL + f"extends: {extends}\n").startswith(expected)


def test_extends_chains_up_to_the_limit(ws: Path):
    for i in range(14):
        write(ws, f"_c{i}.yaml", f"extends: _c{i + 1}.yaml\n")
    write(ws, "_c14.yaml", "parity: {seed: 14}\n")
    assert load(ws, MINIMAL + "extends: _c0.yaml\n").parity.seed == 14  # 16 files in all


def test_extends_through_a_symlink_loop(ws: Path):
    os.symlink("_loop2.yaml", ws / "recipes" / "_loop.yaml")
    os.symlink("_loop.yaml", ws / "recipes" / "_loop2.yaml")
    assert problems(ws, MINIMAL + "extends: _loop.yaml\n") == (
        "error: recipes/r.yaml:9:10: extends: cannot follow '_loop.yaml': a symlink loop\n"
        "  hint: a base is a YAML file; check the symlinks on its path")


def test_a_boolean_from_a_base_is_quoted_as_written_there(ws: Path):
    write(ws, "_base.yaml", "description: Off\n")
    assert problems(ws, MINIMAL + "extends: _base.yaml\n") == (
        "error: recipes/_base.yaml:1:14: description: expected string, found the boolean false\n"
        "  hint: quote it: 'Off'")


# -- discovery, several recipes, selection ---------------------------------------------------


def test_discover_sorts_and_skips_bases(ws: Path):
    for name in ("b.yaml", "a.yml", "_base.yaml", ".hidden.yaml", "notes.txt", "c.yaml"):
        write(ws, name, MINIMAL)
    (ws / "recipes" / "folder.yaml").mkdir()
    assert [p.name for p in discover(ws)] == ["a.yml", "b.yaml", "c.yaml"]


def test_discover_without_recipes(tmp_path: Path):
    with pytest.raises(UsageError) as exc:
        discover(tmp_path)
    assert exc.value.render() == (
        f"error: no recipes/ folder in {tmp_path}\n"
        "  hint: run buildsys from the project root, or create recipes/<model>.yaml")
    assert exc.value.exit_code == 2
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "_base.yaml").write_text("export: {opset: 18}\n")
    with pytest.raises(UsageError) as exc:
        discover(tmp_path)
    assert exc.value.render() == (
        f"error: no recipes in {tmp_path / 'recipes'}\n"
        "  hint: add recipes/<model>.yaml (files starting with '_' are bases for `extends`)")


def test_a_broken_recipe_does_not_hide_the_good_ones(ws: Path):
    write(ws, "a.yaml", MINIMAL)
    write(ws, "b.yaml", MINIMAL + "export: {opset: \"18\"}\nsimplify: 012\n")
    write(ws, "c.yaml", MINIMAL + "parity: {seed: 2}\n")
    recipes, found = load_recipes(ws, discover(ws))
    assert [r.name for r in recipes] == ["a", "c"]
    assert [p.render() for p in found] == [
        "recipes/b.yaml:10:11: simplify: YAML 1.1 reads 012 as the octal number 10\n"
        "  hint: write 12 without the leading zero, or quote it: '012'",
    ]
    assert RecipeError(found).exit_code == 2


def test_problems_of_every_file_are_collected(ws: Path):
    write(ws, "a.yaml", MINIMAL + "export: {opset: 6}\n")
    write(ws, "b.yaml", MINIMAL + "targets: [{backend: onnxruntime, precision: fp16}]\n")
    recipes, found = load_recipes(ws, discover(ws))
    assert recipes == []
    assert RecipeError(found).render() == (
        "error: recipes/a.yaml:9:17: export.opset: expected an integer >= 7, found 6\n"
        "error: recipes/b.yaml:9:45: targets.0.precision: expected one of fp32, int8 for backend onnxruntime, "
        "found \"fp16\"\n"
        "2 problems found"
    )


def test_two_recipes_with_one_name(ws: Path):
    write(ws, "a.yaml", "name: net\n" + MINIMAL)
    write(ws, "b.yaml", MINIMAL)
    write(ws, "net.yaml", MINIMAL)
    recipes, found = load_recipes(ws, discover(ws))
    assert [r.name for r in recipes] == ["b"]
    assert [p.render() for p in found] == [
        "recipes/a.yaml:1:7: name: recipe name 'net' is also used by recipes/net.yaml\n"
        "  hint: every recipe needs its own name (it names out/<name>/); set name: in one of them",
        "recipes/net.yaml: name: recipe name 'net' is also used by recipes/a.yaml\n"
        "  hint: every recipe needs its own name (it names out/<name>/); set name: in one of them",
    ]


def test_the_same_path_twice_is_loaded_once(ws: Path):
    path = write(ws, "a.yaml", MINIMAL)
    recipes, found = load_recipes(ws, [path, ws / "recipes" / ".." / "recipes" / "a.yaml"])
    assert ([r.name for r in recipes], found) == (["a"], [])


@pytest.fixture
def three(ws: Path) -> list[Recipe]:
    for name in ("resnet18", "resnet50", "bert-base"):
        write(ws, f"{name}.yaml", MINIMAL)
    recipes, found = load_recipes(ws, discover(ws))
    assert not found
    return recipes


def test_select_by_name_and_path(ws: Path, three: list[Recipe], monkeypatch):
    assert select(three, [], ws) == three
    assert [r.name for r in select(three, ["resnet50", "bert-base", "resnet50"], ws)] == ["resnet50", "bert-base"]
    assert [r.name for r in select(three, ["recipes/resnet18.yaml"], ws)] == ["resnet18"]
    assert [r.name for r in select(three, [str(ws / "recipes" / "bert-base.yaml")], ws)] == ["bert-base"]
    monkeypatch.chdir(ws / "recipes")
    assert [r.name for r in select(three, ["resnet50.yaml"], ws)] == ["resnet50"]


def test_select_unknown(ws: Path, three: list[Recipe]):
    with pytest.raises(UsageError) as exc:
        select(three, ["resnet19", "resnet18"], ws)
    assert exc.value.render() == (
        "error: unknown recipe 'resnet19'; known: bert-base, resnet18, resnet50\n  hint: did you mean 'resnet18'?")
    with pytest.raises(UsageError) as exc:
        select(three, ["gpt", "recipes/nope.yaml"], ws)
    assert exc.value.render() == (
        "error: unknown recipes 'gpt', 'recipes/nope.yaml'; known: bert-base, resnet18, resnet50\n"
        "  hint: pass a recipe name or the path of a file under recipes/")


def test_importing_the_recipe_layer_stays_light():
    # discover() runs on every command, even a no-op build served from the recipe cache
    heavy = ("jsonschema", "yaml", "torch", "numpy", "onnx")
    code = f"import sys, buildsys.recipe; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "[]"
