"""Validation of recipes: the schema itself, and what a user reads for each mistake."""
from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from buildsys.core.errors import RecipeError
from buildsys.recipe import load_recipe
from buildsys.recipe.docs import schema_table_markdown
from buildsys.recipe.model import (
    DEFAULT_TOLERANCES,
    CalibrationSpec,
    DataSpec,
    ExportSpec,
    ParitySpec,
    Recipe,
    SimplifySpec,
    TargetSpec,
    Tolerance,
)
from buildsys.recipe.validate import SCHEMA_PATH

# Lines 1-8; a case's extra text starts on line 9.
MINIMAL = """\
version: 1
model: {factory: models.net:build}
inputs:
  - {name: image, dtype: float32, shape: [batch, 3, 8, 8]}
outputs:
  - {name: logits}
dims:
  batch: {min: 1, opt: 2, max: 4}
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path)


def make_workspace(tmp_path: Path) -> Path:
    """A project with recipes/, a factory module that must never be imported, and a checkpoint."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "net.py").write_text("def build(num_classes=10):\n    raise SystemExit('never imported')\n")
    (tmp_path / "models" / "sub" / "__init__.py").write_text("")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "net.pt").write_bytes(b"not really a checkpoint")
    (tmp_path / "data" / "val").mkdir(parents=True)
    (tmp_path / "data" / "val" / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return tmp_path


def load(ws: Path, text: str, name: str = "r.yaml") -> Recipe:
    path = ws / "recipes" / name
    path.write_text(textwrap.dedent(text))
    return load_recipe(path, ws)


def problems(ws: Path, text: str, name: str = "r.yaml") -> str:
    with pytest.raises(RecipeError) as exc:
        load(ws, text, name)
    return exc.value.render()


# -- the schema ------------------------------------------------------------------------


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def test_schema_is_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_opset_bounds_follow_the_pinned_onnx():
    """export.opset's maximum is the newest opset the installed onnx defines: a higher one cannot be
    checked or run, and a newer onnx should raise the bound with it."""
    import onnx

    opset = schema()["properties"]["export"]["properties"]["opset"]
    assert opset["maximum"] == onnx.defs.onnx_opset_version()
    assert opset["minimum"] <= opset["default"] <= opset["maximum"]


def _object_schemas(node, path="#"):
    if isinstance(node, dict):
        if "properties" in node and node.get("type") == "object" or node.get("type") == ["boolean", "object"]:
            yield path, node
        for key, child in node.items():
            yield from _object_schemas(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _object_schemas(child, f"{path}/{i}")


def test_every_object_refuses_unknown_keys_and_every_property_is_described():
    objects = dict(_object_schemas(schema()))
    assert len(objects) >= 14
    for path, node in objects.items():
        assert node.get("additionalProperties") is False, path
        for name, prop in node["properties"].items():
            assert prop.get("description"), f"{path}/properties/{name}"


def _defaults(props: dict) -> dict:
    return {k: v["default"] for k, v in props.items() if "default" in v}


def _dataclass_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_schema_defaults_equal_dataclass_defaults():
    s = schema()
    top, defs = s["properties"], s["$defs"]
    recipe = _dataclass_defaults(Recipe)
    assert top["version"]["default"] == recipe["version"]
    assert top["description"]["default"] == recipe["description"]
    assert tuple(top["profiles"]["default"]) == recipe["profiles"]
    assert ExportSpec(**top["export"]["default"]) == recipe["export"] == ExportSpec(**_defaults(top["export"]["properties"]))
    assert SimplifySpec(top["simplify"]["default"]) == recipe["simplify"]
    assert top["simplify"]["properties"]["enabled"]["default"] == SimplifySpec().enabled
    assert tuple(TargetSpec(**t) for t in top["targets"]["default"]) == recipe["targets"]
    assert defs["target"]["properties"]["precision"]["default"] == _dataclass_defaults(TargetSpec)["precision"]
    assert {p: Tolerance(**t) for p, t in top["tolerances"]["default"].items()} == DEFAULT_TOLERANCES
    assert recipe["tolerances"] == DEFAULT_TOLERANCES
    for precision, prop in top["tolerances"]["properties"].items():
        assert Tolerance(**prop["default"]) == DEFAULT_TOLERANCES[precision]
    parity = top["parity"]["default"]
    assert ParitySpec(parity["samples"], parity["seed"], tuple(parity["points"])) == recipe["parity"]
    assert _defaults(top["parity"]["properties"]) == {**parity}
    calibration = top["calibration"]["properties"]
    assert {k: v for k, v in _defaults(calibration).items() if k != "data"} == {
        k: v for k, v in _dataclass_defaults(CalibrationSpec).items() if k != "data"}
    assert DataSpec(**calibration["data"]["default"]) == CalibrationSpec().data == DataSpec()
    assert DataSpec(**defs["input"]["properties"]["data"]["default"]) == DataSpec()
    data_defaults = _dataclass_defaults(DataSpec)
    assert _defaults(defs["data"]["properties"]) == {k: v for k, v in data_defaults.items() if v is not None}


def test_docs_table_is_generated_from_the_schema():
    table = schema_table_markdown()
    lines = table.splitlines()
    assert lines[0] == "| field | type | default | description |"
    assert "| `export.opset` | integer | `18` | ONNX opset to export; the exported model must carry exactly this opset. |" in lines
    assert any(line.startswith("| `targets[].precision` | `fp32` \\| `fp16` \\| `int8` \\| `best` | `\"fp32\"` |")
               for line in lines)
    assert any(line.startswith("| `dims.<dim>.min` | integer |") for line in lines)
    assert any(line.startswith("| `profiles[].<dim>.opt` | integer |") for line in lines)
    assert any(line.startswith("| `calibration.data.kind` |") for line in lines)
    for name in schema()["properties"]:
        assert any(line.startswith(f"| `{name}` |") for line in lines), name
    assert all(line.count(" | ") >= 3 for line in lines[2:])


def test_validate_does_not_import_user_code(ws: Path):
    # models/net.py raises SystemExit when imported: loading must not import it.
    assert load(ws, MINIMAL).model.factory == "models.net:build"


# -- what a user reads -----------------------------------------------------------------

CASES = [
    # unknown and mistyped fields
    ("unknown-top-level", "tolerance: {fp32: {atol: 1e-3}}\n",
     "error: recipes/r.yaml:9:1: tolerance: unknown field 'tolerance'\n  hint: did you mean 'tolerances'?"),
    ("unknown-nested", "parity: {sample: 2}\n",
     "error: recipes/r.yaml:9:10: parity.sample: unknown field 'sample'\n  hint: did you mean 'samples'?"),
    ("unknown-no-close-match", "export: {zzz: 1}\n",
     "error: recipes/r.yaml:9:10: export.zzz: unknown field 'zzz'\n  hint: expected one of: opset, exporter, strict_trace"),
    ("number-given-quoted-string", "tolerances:\n  fp32: {atol: \"0.001\"}\n",
     "error: recipes/r.yaml:10:16: tolerances.fp32.atol: expected number, found string '0.001'\n"
     "  hint: remove the quotes: a quoted value is text"),
    ("number-written-with-underscores", "parity: {samples: 1_000}\n",
     "error: recipes/r.yaml:9:19: parity.samples: expected integer, found string '1_000'\n"
     "  hint: write the number without '_' (YAML 1.2 reads it as text)"),
    ("string-given-number", "description: 12\n",
     "error: recipes/r.yaml:9:14: description: expected string, found integer 12\n  hint: quote it to make it text"),
    ("opset-too-high", "export: {opset: 99}\n",
     "error: recipes/r.yaml:9:17: export.opset: expected an integer <= 28, found 99"),
    ("null-value", "export:\n  opset:\n",
     "error: recipes/r.yaml:10:9: export.opset: expected integer, found null\n"
     "  hint: nothing follows the colon, so YAML reads null; give a value or remove the key"),
    ("version", None,
     "error: recipes/r.yaml:1:10: version: expected 1, found integer 2\n"
     "  hint: this buildsys reads recipe format version 1"),
    ("name-pattern", "name: ResNet\n",
     "error: recipes/r.yaml:9:7: name: expected a name of lowercase letters, digits, '.', '_' or '-' starting with a "
     "letter or digit, found 'ResNet'\n  hint: for example resnet18 or bert-base.v2"),
    ("name-too-long", f"name: {'a' * 65}\n",
     "error: recipes/r.yaml:9:7: name: expected at most 64 characters, found 65"),
    ("description-list", "description: [a, b]\n",
     "error: recipes/r.yaml:9:1: description: expected string, found a list\n"
     "  hint: description: One line shown in reports"),
    # targets
    ("precision-for-onnxruntime", "targets:\n  - {backend: onnxruntime, precision: fp16}\n",
     "error: recipes/r.yaml:10:39: targets.0.precision: expected one of fp32, int8 for backend onnxruntime, "
     "found \"fp16\""),
    ("precision-unknown", "targets:\n  - {backend: tensorrt, precision: fp64}\n",
     "error: recipes/r.yaml:10:36: targets.0.precision: expected one of fp32, fp16, int8, best, found \"fp64\"\n"
     "  hint: did you mean 'fp16'?"),
    ("precision-for-torchscript", "targets:\n  - {backend: torchscript, precision: fp16}\n",
     "error: recipes/r.yaml:10:39: targets.0.precision: expected fp32 for backend torchscript, found \"fp16\""),
    ("backend-unknown", "targets:\n  - {backend: onnx-runtime}\n",
     "error: recipes/r.yaml:10:15: targets.0.backend: expected one of onnxruntime, tensorrt, torchscript, "
     "found \"onnx-runtime\"\n  hint: did you mean 'onnxruntime'?"),
    ("backend-missing", "targets:\n  - {precision: fp32}\n",
     "error: recipes/r.yaml:10:5: targets.0.backend: required field is missing"),
    ("workspace-for-onnxruntime", "targets:\n  - {backend: onnxruntime, workspace: 4GiB}\n",
     "error: recipes/r.yaml:10:28: targets.0.workspace: not allowed for backend onnxruntime\n"
     "  hint: workspace applies to tensorrt targets only"),
    ("mode-for-tensorrt", "targets:\n  - {backend: tensorrt, mode: trace}\n",
     "error: recipes/r.yaml:10:25: targets.0.mode: not allowed for backend tensorrt\n"
     "  hint: mode applies to torchscript targets only"),
    ("mode-unknown", "targets:\n  - {backend: torchscript, mode: tracing}\n",
     "error: recipes/r.yaml:10:34: targets.0.mode: expected one of script, trace, found \"tracing\"\n"
     "  hint: did you mean 'trace'?"),
    ("workspace-size-string", "targets:\n  - {backend: tensorrt, workspace: 4 gigs}\n",
     "error: recipes/r.yaml:10:36: targets.0.workspace: expected a byte count or a size like 4GiB, 512MiB, 1.5GB, "
     "found '4 gigs'\n  hint: units: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"),
    ("workspace-zero", "targets:\n  - {backend: tensorrt, workspace: 0}\n",
     "error: recipes/r.yaml:10:36: targets.0.workspace: expected an integer >= 1, found 0"),
    ("targets-empty", "targets: []\n",
     "error: recipes/r.yaml:9:1: targets: expected at least 1 item, found none"),
    ("duplicate-target", "targets:\n  - {backend: tensorrt, precision: fp16}\n  - {backend: tensorrt, precision: fp16}\n",
     "error: recipes/r.yaml:11:5: targets.1: duplicate target tensorrt-fp16 (also targets.0)\n"
     "  hint: each target builds one artifact; remove one of them"),
    # model
    ("factory-without-colon", None,
     "error: recipes/r.yaml:2:18: model.factory: expected 'module.path:callable', found 'models.net.build'\n"
     "  hint: separate the module from the callable with ':': models.net:build"),
    ("factory-module-missing-in-workspace", None,
     "error: recipes/r.yaml:2:18: model.factory: module 'models.nett' not found: no models/nett.py or "
     "models/nett/__init__.py in the workspace\n  hint: did you mean 'models.net'?"),
    ("factory-package-missing", None,
     "error: recipes/r.yaml:2:18: model.factory: module 'nosuchpkg_zz.models' not found in the workspace or on the "
     "Python path\n  hint: the factory's module must be importable from the project root (a file under it, or an "
     "installed package)"),
    ("factory-submodule-of-installed-package-missing", None,
     "error: recipes/r.yaml:2:18: model.factory: module 'json.nosuch' not found in the workspace or on the Python "
     "path\n  hint: the factory's module must be importable from the project root (a file under it, or an installed "
     "package)"),
    ("model-factory-missing", None,
     "error: recipes/r.yaml:2:1: model.factory: required field is missing"),
    ("checkpoint-missing", "  checkpoint: weights/other.pt\n",
     "error: recipes/r.yaml:4:15: model.checkpoint: file not found: 'weights/other.pt'\n"
     "  hint: checkpoint paths are relative to the project root, not to the recipe"),
    ("checkpoint-outside", "  checkpoint: ../outside.pt\n",
     "error: recipes/r.yaml:4:15: model.checkpoint: '../outside.pt' is outside the workspace\n"
     "  hint: keep checkpoints inside the project so their content is tracked"),
    ("checkpoint-folder", "  checkpoint: weights\n",
     "error: recipes/r.yaml:4:15: model.checkpoint: expected a file, found the folder 'weights'"),
    # inputs, outputs, dims
    ("inputs-missing", None,
     "error: recipes/r.yaml: inputs: required field is missing"),
    ("dtype-unknown", None,
     "error: recipes/r.yaml:4:26: inputs.0.dtype: expected one of float32, float16, float64, int64, int32, int8, "
     "uint8, bool, found \"float\"\n  hint: did you mean 'float32'?"),
    ("shape-zero", None,
     "error: recipes/r.yaml:4:53: inputs.0.shape.2: expected an integer >= 1, found 0"),
    ("shape-float", None,
     "error: recipes/r.yaml:4:53: inputs.0.shape.2: expected integer or string, found number 8.5\n"
     "  hint: inputs.0.shape.2: A fixed size (integer >= 1) or a dim name"),
    ("axis-not-declared", None,
     "error: recipes/r.yaml:4:53: inputs.0.shape.2: axis 'heigth' is not declared in dims\n"
     "  hint: declare it: dims: {heigth: {min: 1, opt: 1, max: 1}}"),
    ("axis-typo", None,
     "error: recipes/r.yaml:4:43: inputs.0.shape.0: axis 'btach' is not declared in dims\n"
     "  hint: did you mean 'batch'?\n"
     "error: recipes/r.yaml:8:3: dims.batch: declared but not used in any input shape\n"
     "  hint: remove it, or use it in an input's shape\n"
     "2 problems found"),
    ("dim-not-used", "  seq: {min: 1, opt: 2, max: 4}\n",
     "error: recipes/r.yaml:9:3: dims.seq: declared but not used in any input shape\n"
     "  hint: remove it, or use it in an input's shape"),
    ("dim-min-gt-opt", None,
     "error: recipes/r.yaml:8:3: dims.batch: min (8) > opt (4)\n  hint: sizes must satisfy min <= opt <= max"),
    ("dim-opt-gt-max", None,
     "error: recipes/r.yaml:8:3: dims.batch: opt (4) > max (2)\n  hint: sizes must satisfy min <= opt <= max"),
    ("dim-zero", None,
     "error: recipes/r.yaml:8:16: dims.batch.min: expected an integer >= 1, found 0"),
    ("dim-missing-opt", None,
     "error: recipes/r.yaml:8:3: dims.batch.opt: required field is missing"),
    ("dim-name", None,
     "error: recipes/r.yaml:4:43: inputs.0.shape.0: axis 'batch' is not declared in dims\n"
     "  hint: declare it: dims: {batch: {min: 1, opt: 1, max: 1}}\n"
     "error: recipes/r.yaml:8:3: dims.2batch: expected a name of letters, digits and '_' not starting with a digit, "
     "found '2batch'\n  hint: for example batch or seq_len\n"
     "2 problems found"),
    ("duplicate-input", None,
     "error: recipes/r.yaml:5:12: inputs.1.name: duplicate input name 'image' (also inputs.0)\n"
     "  hint: every input needs its own name"),
    ("duplicate-output", "  - {name: logits}\n",
     "error: recipes/r.yaml:7:12: outputs.1.name: duplicate output name 'logits' (also outputs.0)\n"
     "  hint: every output needs its own name"),
    ("output-named-like-input", "  - {name: image}\n",
     "error: recipes/r.yaml:7:12: outputs.1.name: 'image' is also the name of inputs.0\n"
     "  hint: ONNX graph inputs and outputs need distinct names"),
    ("outputs-empty", None,
     "error: recipes/r.yaml:5:1: outputs: expected at least 1 item, found none"),
    # data
    ("int-input-without-data", None,
     "error: recipes/r.yaml:5:24: inputs.1.dtype: dtype int64 needs data: the default (kind uniform) gives fractions\n"
     "  hint: add data: {kind: randint, low: 0, high: N} (high exclusive)"),
    ("int-input-with-uniform-data", None,
     "error: recipes/r.yaml:8:18: inputs.1.data.kind: expected one of randint, npy for dtype int64, found \"normal\"\n"
     "  hint: token ids and masks take {kind: randint, low: 0, high: N} (high exclusive)"),
    ("randint-needs-integer-high", "calibration: {data: {kind: randint, low: 0.5}}\n",
     "error: recipes/r.yaml:9:15: calibration.data.high: required field is missing for kind randint\n"
     "error: recipes/r.yaml:9:42: calibration.data.low: expected integer for kind randint, found number 0.5\n"
     "2 problems found"),
    ("field-of-another-kind", "calibration: {data: {kind: normal, low: 0.5}}\n",
     "error: recipes/r.yaml:9:36: calibration.data.low: not allowed for kind normal\n  hint: kind normal takes mean, std"),
    ("field-of-another-kind-default-uniform", "calibration: {data: {std: 2}}\n",
     "error: recipes/r.yaml:9:22: calibration.data.std: not allowed for kind uniform\n"
     "  hint: kind uniform takes low, high"),
    ("npy-needs-path", "calibration: {data: {kind: npy}}\n",
     "error: recipes/r.yaml:9:15: calibration.data.path: required field is missing for kind npy"),
    ("npy-path-outside", "calibration: {data: {kind: npy, path: ../calib/*.npy}}\n",
     "error: recipes/r.yaml:9:39: calibration.data.path: '../calib/*.npy' is outside the workspace\n"
     "  hint: data paths are relative to the project root and must stay inside it"),
    ("npy-calibration-matches-nothing", "calibration: {data: {kind: npy, path: 'calib/*.npy'}}\n",
     "error: recipes/r.yaml:9:39: calibration.data.path: no file matches 'calib/*.npy'\n"
     "  hint: the glob is relative to the project root, not to the recipe's folder"),
    ("npy-input-matches-nothing", None,
     "error: recipes/r.yaml:4:84: inputs.0.data.path: no file matches 'weights/*.npy'\n"
     "  hint: the glob is relative to the project root, not to the recipe's folder"),
    ("images-path-absolute", "calibration: {data: {kind: images, path: /srv/imagenet/val}}\n",
     "error: recipes/r.yaml:9:42: calibration.data.path: '/srv/imagenet/val' is outside the workspace\n"
     "  hint: data paths are relative to the project root and must stay inside it"),
    ("images-preset", "calibration: {data: {kind: images, path: data/val, preset: coco}}\n",
     "error: recipes/r.yaml:9:60: calibration.data.preset: expected imagenet, found \"coco\"\n"
     "  hint: preset: images: preprocessing preset (imagenet when omitted)"),
    ("uniform-low-ge-high", "calibration: {data: {low: 1, high: 0}}\n",
     "error: recipes/r.yaml:9:15: calibration.data: low (1) >= high (0)\n  hint: low must be below high"),
    ("randint-low-ge-high", "calibration: {data: {kind: randint, low: 5, high: 5}}\n",
     "error: recipes/r.yaml:9:15: calibration.data: low (5) >= high (5)\n"
     "  hint: randint's high is exclusive: it must exceed low"),
    ("std-not-positive", "calibration: {data: {kind: normal, std: 0}}\n",
     "error: recipes/r.yaml:9:41: calibration.data.std: expected a number > 0, found 0"),
    ("calibration-method", "calibration: {method: max}\n",
     "error: recipes/r.yaml:9:23: calibration.method: expected one of minmax, entropy, percentile, found \"max\"\n"
     "  hint: did you mean 'minmax'?"),
    ("calibration-samples", "calibration: {samples: 0}\n",
     "error: recipes/r.yaml:9:24: calibration.samples: expected an integer >= 1, found 0"),
    # export, simplify, tolerances, parity, profiles
    ("opset-float", "export: {opset: 17.5}\n",
     "error: recipes/r.yaml:9:17: export.opset: expected integer, found number 17.5\n"
     "  hint: opset: ONNX opset to export; the exported model must carry exactly this opset"),
    ("exporter", "export: {exporter: torch_script}\n",
     "error: recipes/r.yaml:9:20: export.exporter: expected one of dynamo, torchscript, found \"torch_script\"\n"
     "  hint: did you mean 'torchscript'?"),
    ("simplify-quoted", "simplify: \"true\"\n",
     "error: recipes/r.yaml:9:11: simplify: expected boolean or mapping, found string 'true'\n"
     "  hint: simplify: Run onnxsim on the exported model: true / false, or a mapping"),
    ("tolerance-empty", "tolerances:\n  int8: {}\n",
     "error: recipes/r.yaml:10:3: tolerances.int8: expected at least one of atol, rtol, min_cosine, min_top1, min_top1_decided, max_scaled_error, "
     "found none"),
    ("tolerance-precision-unknown", "tolerances:\n  fp8: {atol: 1}\n",
     "error: recipes/r.yaml:10:3: tolerances.fp8: unknown field 'fp8'\n  hint: expected one of: fp32, fp16, int8, best"),
    ("tolerance-negative", "tolerances:\n  fp32: {atol: -1e-3}\n",
     "error: recipes/r.yaml:10:16: tolerances.fp32.atol: expected a number >= 0, found -0.001"),
    ("tolerance-cosine", "tolerances:\n  int8: {min_cosine: 1.5}\n",
     "error: recipes/r.yaml:10:22: tolerances.int8.min_cosine: expected a number <= 1, found 1.5"),
    ("tolerance-nan", "tolerances:\n  fp32: {atol: .nan}\n",
     "error: recipes/r.yaml:10:16: tolerances.fp32.atol: expected a finite number, found .nan\n"
     "  hint: recipes hold JSON numbers; .inf and .nan have no JSON form"),
    ("parity-points-duplicate", "parity: {points: [min, max, min]}\n",
     "error: recipes/r.yaml:9:29: parity.points.2: duplicate item \"min\" (also parity.points.0)"),
    ("parity-points-unknown", "parity: {points: [min, mid]}\n",
     "error: recipes/r.yaml:9:24: parity.points.1: expected one of min, opt, max, found \"mid\"\n"
     "  hint: did you mean 'min'?"),
    ("parity-seed", "parity: {seed: -1}\n",
     "error: recipes/r.yaml:9:16: parity.seed: expected an integer >= 0, found -1"),
    ("profile-undeclared-dim", "profiles:\n  - {bacth: {max: 8}}\n",
     "error: recipes/r.yaml:10:6: profiles.0.bacth: dim 'bacth' is not declared in dims\n"
     "  hint: did you mean 'batch'?"),
    ("profile-breaks-order", "profiles:\n  - {batch: {min: 3}}\n",
     "error: recipes/r.yaml:10:6: profiles.0.batch: min (3) > opt (2) after applying this profile to dims.batch\n"
     "  hint: sizes must satisfy min <= opt <= max"),
    ("profile-empty-override", "profiles:\n  - {batch: {}}\n",
     "error: recipes/r.yaml:10:6: profiles.0.batch: expected at least one of min, opt, max, found none"),
]

# Cases that change the minimal recipe instead of adding to it: (old, new).
EDITS = {
    "version": ("version: 1", "version: 2"),
    "factory-without-colon": ("models.net:build", "models.net.build"),
    "factory-module-missing-in-workspace": ("models.net:build", "models.nett:build"),
    "factory-package-missing": ("models.net:build", "nosuchpkg_zz.models:build"),
    "factory-submodule-of-installed-package-missing": ("models.net:build", "json.nosuch:build"),
    "model-factory-missing": ("{factory: models.net:build}", "{kwargs: {}}"),
    "inputs-missing": ("inputs:\n  - {name: image, dtype: float32, shape: [batch, 3, 8, 8]}\n", ""),
    "dtype-unknown": ("float32", "float"),
    "shape-zero": ("3, 8, 8]", "3, 0, 8]"),
    "shape-float": ("3, 8, 8]", "3, 8.5, 8]"),
    "axis-not-declared": ("3, 8, 8]", "3, heigth, 8]"),
    "axis-typo": ("[batch, 3", "[btach, 3"),
    "dim-min-gt-opt": ("{min: 1, opt: 2, max: 4}", "{min: 8, opt: 4, max: 16}"),
    "dim-opt-gt-max": ("{min: 1, opt: 2, max: 4}", "{min: 1, opt: 4, max: 2}"),
    "dim-zero": ("{min: 1, opt: 2, max: 4}", "{min: 0, opt: 2, max: 4}"),
    "dim-missing-opt": ("{min: 1, opt: 2, max: 4}", "{min: 1, max: 4}"),
    "dim-name": ("  batch: {min", "  2batch: {min"),
    "duplicate-input": ("outputs:", "  - {name: image, dtype: float32, shape: [batch]}\noutputs:"),
    "outputs-empty": ("outputs:\n  - {name: logits}\n", "outputs: []\n"),
    "int-input-without-data": ("outputs:", "  - {name: ids, dtype: int64, shape: [batch]}\noutputs:"),
    "int-input-with-uniform-data": (
        "outputs:", "  - name: ids\n    dtype: int64\n    shape: [batch]\n    data: {kind: normal}\noutputs:"),
    "npy-input-matches-nothing": ("shape: [batch, 3, 8, 8]}",
                                  "shape: [batch, 3, 8, 8], data: {kind: npy, path: weights/*.npy}}"),
    "checkpoint-missing": ("{factory: models.net:build}", "\n  factory: models.net:build"),
    "checkpoint-outside": ("{factory: models.net:build}", "\n  factory: models.net:build"),
    "checkpoint-folder": ("{factory: models.net:build}", "\n  factory: models.net:build"),
}
# Cases whose extra text continues a block written by an edit (model:, dims:, outputs:).
CONTINUES = {"checkpoint-missing": "model", "checkpoint-outside": "model", "checkpoint-folder": "model",
             "dim-not-used": "dims", "duplicate-output": "outputs", "output-named-like-input": "outputs"}


def _recipe_text(case: str, extra: str | None) -> str:
    text = MINIMAL
    if case in EDITS:
        old, new = EDITS[case]
        assert old in text
        text = text.replace(old, new, 1)
    block = CONTINUES.get(case)
    if block == "model":
        # "model:\n  factory: ...\n" then the extra line, then the rest
        head, _, tail = text.partition("inputs:")
        return head + extra + "inputs:" + tail
    if block == "outputs":
        head, _, tail = text.partition("dims:")
        return head + extra + "dims:" + tail
    return text + (extra or "")


@pytest.mark.parametrize(("case", "extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_recipe(ws: Path, case: str, extra: str | None, expected: str):
    assert problems(ws, _recipe_text(case, extra)) == expected


def test_npy_globs_that_match_files_pass(ws: Path):
    (ws / "data" / "calib" / "deep").mkdir(parents=True)
    (ws / "data" / "calib" / "deep" / "a.npy").write_bytes(b"")
    (ws / "data" / "x.npy").write_bytes(b"")
    (ws / "data" / "folder.npy").mkdir()  # a folder named like a file is not a match
    text = MINIMAL.replace("shape: [batch, 3, 8, 8]}", "shape: [batch, 3, 8, 8], data: {kind: npy, path: data/x.npy}}")
    r = load(ws, text + "calibration: {data: {kind: npy, path: 'data/**/*.npy'}}\n")
    assert r.inputs[0].data.path == "data/x.npy" and r.calibration.data.path == "data/**/*.npy"
    assert "calibration.data.path: no file matches 'data/fold*.npy'" in problems(
        ws, text + "calibration: {data: {kind: npy, path: 'data/fold*.npy'}}\n")


def test_cases_are_distinct():
    assert len({c[0] for c in CASES}) == len(CASES) >= 35
    assert len({c[2] for c in CASES}) == len(CASES)


def test_all_problems_of_a_file_are_reported_sorted_by_position(ws: Path):
    text = MINIMAL.replace("{min: 1, opt: 2, max: 4}", "{min: 3, opt: 2, max: 4}") + (
        "tolerance: {}\n"
        "targets:\n"
        "  - {backend: onnxruntime, precision: fp16}\n"
        "  - {backend: tensorrt, precision: int8, workspace: 1.5GB}\n"
        "export: {opset: \"18\"}\n"
    )
    assert problems(ws, text) == (
        "error: recipes/r.yaml:8:3: dims.batch: min (3) > opt (2)\n"
        "  hint: sizes must satisfy min <= opt <= max\n"
        "error: recipes/r.yaml:9:1: tolerance: unknown field 'tolerance'\n"
        "  hint: did you mean 'tolerances'?\n"
        "error: recipes/r.yaml:11:39: targets.0.precision: expected one of fp32, int8 for backend onnxruntime, "
        "found \"fp16\"\n"
        "error: recipes/r.yaml:13:17: export.opset: expected integer, found string '18'\n"
        "  hint: remove the quotes: a quoted value is text\n"
        "4 problems found"
    )


def test_problems_are_structured(ws: Path):
    with pytest.raises(RecipeError) as exc:
        load(ws, MINIMAL + "tolerances:\n  fp32: {atol: \"0.001\"}\n")
    (p,) = exc.value.problems
    assert (p.file, p.line, p.column, p.field) == ("recipes/r.yaml", 10, 16, "tolerances.fp32.atol")
    assert p.message == "expected number, found string '0.001'"
    assert p.hint == "remove the quotes: a quoted value is text"
    assert exc.value.exit_code == 2


def test_name_from_an_invalid_file_stem(ws: Path):
    assert problems(ws, MINIMAL, name="My Model.yaml") == (
        "error: recipes/My Model.yaml: name: the file name gives the recipe name 'My Model', which is not a valid name\n"
        "  hint: set name: my-model in the recipe, or rename the file"
    )


@pytest.mark.parametrize(
    "factory",
    ["models.net:build", "models.sub:anything", "models:build", "json.decoder:JSONDecoder", "sys:exit",
     "collections.abc:Mapping", "os.path:join"],
)
def test_factory_modules_found_without_importing(ws: Path, factory: str):
    assert load(ws, MINIMAL.replace("models.net:build", factory)).model.factory == factory


# -- plain names are names; booleans where text belongs ---------------------------------------


def test_plain_names_that_yaml_1_1_would_read_as_booleans_are_names(ws: Path):
    text = MINIMAL.replace("name: image", "name: x").replace("logits", "y").replace("batch", "n")
    r = load(ws, text + "description: y\nsimplify: yes\n")
    assert [i.name for i in r.inputs] == ["x"] and [o.name for o in r.outputs] == ["y"]
    assert [d.name for d in r.dims] == ["n"] and r.inputs[0].shape[0] == "n"
    assert r.description == "y" and r.simplify.enabled is True


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("{name: logits}", "{name: no}",
                     "error: recipes/r.yaml:6:12: outputs.0.name: expected string, found the boolean false\n"
                     "  hint: quote it: 'no'", id="output-name-no"),
        pytest.param("dtype: float32", "dtype: On",
                     "error: recipes/r.yaml:4:26: inputs.0.dtype: expected one of float32, float16, float64, int64, "
                     "int32, int8, uint8, bool, found the boolean true\n  hint: quote it: 'On'", id="dtype-On"),
        pytest.param("[batch, 3, 8, 8]", "[batch, 3, 8, off]",
                     "error: recipes/r.yaml:4:56: inputs.0.shape.3: expected integer or string, found the boolean "
                     "false\n  hint: quote it: 'off'", id="axis-off"),
    ],
)
def test_a_boolean_where_text_belongs(ws: Path, old: str, new: str, expected: str):
    assert problems(ws, MINIMAL.replace(old, new)) == expected


# -- values that once ended in a traceback ---------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("dtype: float32", "dtype: [float32]",
                     "error: recipes/r.yaml:4:19: inputs.0.dtype: expected one of float32, float16, float64, int64, "
                     "int32, int8, uint8, bool, found a list\n  hint: dtype: Element type", id="dtype-list"),
        pytest.param("batch: {min: 1, opt: 2, max: 4}", "batch: 2\nprofiles: [{batch: {max: 8}}]",
                     "error: recipes/r.yaml:8:10: dims.batch: expected mapping, found integer 2\n"
                     "  hint: batch: Sizes of one dynamic axis (a mapping with min, opt, max)", id="dim-int-profile"),
        pytest.param("{min: 1, opt: 2, max: 4}", "{min: 8.0, opt: 4, max: 16}",
                     "error: recipes/r.yaml:8:16: dims.batch.min: expected integer, found number 8.0\n"
                     "  hint: write 8: an integer is written without a decimal point", id="dim-float"),
        pytest.param("models.net:build", "models." + "m" * 300 + ":build",
                     "error: recipes/r.yaml:2:18: model.factory: module 'models." + "m" * 300 + "' cannot be a file: "
                     "a name in the path is longer than 255 bytes, the limit of a file name\n"
                     "  hint: the factory's module must be importable from the project root", id="module-too-long"),
        pytest.param("models.net:build}", "models.net:build, checkpoint: \"w\\0.pt\"}",
                     "error: recipes/r.yaml:2:48: model.checkpoint: the path contains a NUL character, which no file "
                     "name can hold\n  hint: name the state_dict file, relative to the project root", id="checkpoint-nul"),
    ],
)
def test_values_that_once_crashed_the_checks(ws: Path, old: str, new: str, expected: str):
    assert old in MINIMAL
    assert problems(ws, MINIMAL.replace(old, new)) == expected


def test_an_npy_of_python_objects_is_named(ws: Path):
    import numpy as np

    (ws / "data").mkdir(exist_ok=True)
    np.save(ws / "data" / "ok.npy", np.zeros((1, 3, 8, 8), dtype=np.float32))
    np.save(ws / "data" / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    text = MINIMAL.replace("shape: [batch, 3, 8, 8]}", "shape: [batch, 3, 8, 8], data: {kind: npy, path: data/*.npy}}")
    assert problems(ws, text) == (
        "error: recipes/r.yaml:4:84: inputs.0.data.path: 'data/objects.npy' holds Python objects (dtype object), "
        "which cannot be loaded without pickle\n"
        "  hint: buildsys reads numeric arrays without pickle: np.save(path, array.astype('float32'))")
    (ws / "data" / "objects.npy").unlink()
    assert load(ws, text).inputs[0].data.path == "data/*.npy"


def test_sizes_that_are_not_multiples_of_a_dims_multiple_of_are_located(ws: Path):
    text = MINIMAL.replace("batch: {min: 1, opt: 2, max: 4}", "batch: {min: 4, opt: 12, max: 30, multiple_of: 8}")
    assert problems(ws, text + "profiles:\n  - batch: {max: 20}\n") == (
        "error: recipes/r.yaml:8:16: dims.batch.min: 4 is not a multiple of 8 (dims.batch.multiple_of)\n"
        "  hint: the model takes only multiples of 8: use 8, or change multiple_of\n"
        "error: recipes/r.yaml:8:24: dims.batch.opt: 12 is not a multiple of 8 (dims.batch.multiple_of)\n"
        "  hint: the model takes only multiples of 8: use 8 or 16, or change multiple_of\n"
        "error: recipes/r.yaml:8:33: dims.batch.max: 30 is not a multiple of 8 (dims.batch.multiple_of)\n"
        "  hint: the model takes only multiples of 8: use 24 or 32, or change multiple_of\n"
        "error: recipes/r.yaml:10:18: profiles.0.batch.max: 20 is not a multiple of 8 (dims.batch.multiple_of)\n"
        "  hint: the model takes only multiples of 8: use 16 or 24, or change multiple_of\n"
        "4 problems found")
    assert "dims.batch.multiple_of: expected an integer >= 1, found 0" in problems(
        ws, MINIMAL.replace("max: 4}", "max: 4, multiple_of: 0}"))
    r = load(ws, MINIMAL.replace("batch: {min: 1, opt: 2, max: 4}",
                                 "batch: {min: 8, opt: 16, max: 32, multiple_of: 8}"))
    assert r.dims[0].multiple_of == 8 and list(r.dims[0].sizes()) == [8, 16, 24, 32]


def test_unordered_outputs_must_be_outputs_of_the_recipe(ws: Path):
    assert problems(ws, MINIMAL + "parity: {unordered: [logit, boxes]}\n") == (
        "error: recipes/r.yaml:9:22: parity.unordered.0: 'logit' is not an output of the recipe (outputs: logits)\n"
        "  hint: did you mean 'logits'?\n"
        "error: recipes/r.yaml:9:29: parity.unordered.1: 'boxes' is not an output of the recipe (outputs: logits)\n"
        "  hint: list outputs named under outputs:, those that share their first axis\n"
        "2 problems found")
    assert load(ws, MINIMAL + "parity: {unordered: [logits]}\n").parity.unordered == ("logits",)
# -- hostile input: sizes, globs and image folders ----------------------------------------------

HUGE = "9" * 5000


def test_a_size_beyond_the_largest_is_a_located_error_not_a_conversion(ws: Path):
    text = MINIMAL + f"targets:\n  - {{backend: tensorrt, precision: fp16, workspace: {HUGE}GiB}}\n"
    assert problems(ws, text) == (
        "error: recipes/r.yaml:10:53: targets.0.workspace: 9999999999…999GiB (5003 characters) is larger than the "
        "largest size, 8 EiB (2^63-1 bytes)\n  hint: write the TensorRT workspace limit as a size like 4GiB")
    big = MINIMAL + "targets:\n  - {backend: tensorrt, precision: fp16, workspace: 8589934592GiB}\n"  # 2^63 bytes
    assert "targets.0.workspace: 8589934592GiB is larger than the largest size" in problems(ws, big)
    r = load(ws, MINIMAL + "targets:\n  - {backend: tensorrt, precision: fp16, workspace: 8589934591GiB}\n")
    assert r.targets[0].workspace == 8589934591 * 2**30


def test_parse_size_refuses_what_it_cannot_hold_before_converting():
    from buildsys.recipe import MAX_SIZE, parse_size

    assert parse_size(f"{MAX_SIZE}B") == MAX_SIZE and parse_size("1.5GB") == 1_500_000_000
    for text in (f"{MAX_SIZE + 1}B", f"{HUGE}B", f"{HUGE}.5GiB", 2**63, "0." + HUGE + "KiB"):
        with pytest.raises(ValueError, match="is larger than the largest size"):
            parse_size(text)


@pytest.mark.parametrize(("glob", "says"), [
    ("/**/*.npy", "'/**/*.npy' is outside the workspace"),
    ("../**/*.npy", "'../**/*.npy' is outside the workspace"),
    ("data/../../**/*.npy", "'data/../../**/*.npy' is outside the workspace"),
    ("data/../**/*.npy", "'data/../**/*.npy' climbs out of the workspace through '..'"),
    ("out/**/*.npy", "'out/**/*.npy' reaches into out/, which holds no data"),
    ("./.venv/*.npy", "'./.venv/*.npy' reaches into .venv/"),
    (".git/**", "'.git/**' reaches into .git/"),
])
def test_a_glob_that_leaves_the_workspace_is_refused_from_its_text_before_any_walk(ws: Path, monkeypatch, glob,
                                                                                    says):
    import glob as globbing

    from buildsys.core import datafiles

    def walked(*args, **kwargs):
        raise AssertionError("a folder was read")

    monkeypatch.setattr(datafiles._Walk, "_entries", walked)
    monkeypatch.setattr(globbing, "glob", walked)
    monkeypatch.setattr(globbing, "iglob", walked)
    for where, line, col in (("calibration: {data: {kind: npy, path: '%s'}}\n", 9, 39),):
        got = problems(ws, MINIMAL + where % glob)
        assert got.startswith(f"error: recipes/r.yaml:{line}:{col}: calibration.data.path: {says}"), got
        assert "hint: data paths are relative to the project root and must stay inside it" in got


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_a_glob_walk_never_enters_out_venv_or_git_and_is_bounded(tmp_path: Path, monkeypatch):
    import os

    from buildsys.core import datafiles

    _tree(tmp_path, ["out/r/a.npy", ".venv/lib/b.npy", ".git/c.npy", "data/d.npy", "data/out/e.npy", "f.npy",
                     "data/.hidden/g.npy"])
    read = []
    scandir = os.scandir
    monkeypatch.setattr(datafiles.os, "scandir", lambda path: read.append(os.path.relpath(path, tmp_path))
                        or scandir(path))
    assert datafiles.npy_files(tmp_path, "**/*.npy") == [str(tmp_path / n) for n in
                                                        ("data/d.npy", "data/out/e.npy", "f.npy")]
    assert datafiles.npy_files(tmp_path, "*/*.npy") == [str(tmp_path / "data/d.npy")]
    assert datafiles.npy_files(tmp_path, ".*/*.npy") == []
    assert datafiles.npy_files(tmp_path, "**/.*/*.npy") == [str(tmp_path / "data/.hidden/g.npy")]
    assert datafiles.npy_files(tmp_path, "data/out/*.npy") == [str(tmp_path / "data/out/e.npy")]  # only at the root
    assert read and not [r for r in read if r.split(os.sep)[0] in ("out", ".venv", ".git")], read

    _tree(tmp_path, [f"many/{i}/x.npy" for i in range(30)])
    with pytest.raises(datafiles.GlobTooWide, match=r"'\*\*/\*.npy' looks at more than 40 files and folders"):
        datafiles.npy_files(tmp_path, "**/*.npy", limit=40)
    assert len(datafiles.npy_files(tmp_path, "**/*.npy", limit=1000)) == 33


def test_a_glob_that_walks_too_far_is_a_located_error(ws: Path, monkeypatch):
    from buildsys.core import datafiles

    _tree(ws, [f"data/{i}/x.npy" for i in range(20)])
    monkeypatch.setattr(datafiles, "MAX_WALKED", 10)
    assert problems(ws, MINIMAL + "calibration: {data: {kind: npy, path: '**/*.npy'}}\n") == (
        "error: recipes/r.yaml:9:39: calibration.data.path: '**/*.npy' looks at more than 10 files and folders\n"
        "  hint: name the folder the data is in (data/calib/*.npy rather than **/*.npy)")


def test_a_symbolic_link_loop_is_walked_once(tmp_path: Path):
    from buildsys.core import datafiles

    _tree(tmp_path, ["data/a/x.npy"])
    (tmp_path / "data/a/back").symlink_to(tmp_path / "data")
    assert datafiles.npy_files(tmp_path, "data/**/*.npy") == [str(tmp_path / "data/a/x.npy")]


def test_an_images_folder_must_hold_an_image(ws: Path):
    text = MINIMAL + "calibration: {data: {kind: images, path: %s}}\n"
    assert problems(ws, text % "models") == (
        "error: recipes/r.yaml:9:42: calibration.data.path: the folder 'models' holds no image (2 files, none of "
        "them an image)\n  hint: calibration images are JPEG, PNG, BMP, GIF, WebP or TIFF files directly in the folder")
    (ws / "empty").mkdir()
    assert "the folder 'empty' holds no image (no file)" in problems(ws, text % "empty")
    assert "expected a folder of images at 'weights/net.pt', found a file" in problems(ws, text % "weights/net.pt")
    assert "expected a folder of images at 'nowhere', found nothing" in problems(ws, text % "nowhere")
    (ws / "models" / "scan0001").write_bytes(b"\x89PNG\r\n\x1a\n")  # an image by its first bytes, whatever its name
    assert load(ws, text % "models").calibration.data.path == "models"
    assert load(ws, text % "data/val").calibration.data.path == "data/val"
