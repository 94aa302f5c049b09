"""A corpus of bad input driven through the real command line.

Every case writes one broken recipe (or passes a bad argument) into a workspace
that also holds a good recipe, runs `buildsys build --json -k`, and asserts what a
user sees: the exit status (2 for a bad recipe or usage, 3 for a step that
failed), a message naming the file (with line and column where the problem is in
YAML) and the field, no Python traceback, nothing of the bad recipe recorded
(no artifact under out/<bad>/, no trace, no new store entry for a failed step) and
the good recipe still built next to it.

The workspace is module-scoped: the good recipe is built once, then every case is
a cache hit for it. The broken model modules live in tests/fixtures/bad/ and are
copied into the workspace as the package `tb`.
"""
from __future__ import annotations

import hashlib
import pickle
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import FIXTURES, REPO, Result, Workspace, tiny_recipe, worker_pids

BAD_MODULES = REPO / "tests" / "fixtures" / "bad"
TRACEBACK = "Traceback (most recent call last)"
GOOD_STEPS = {"good:export", "good:reference", "good:simplify", "good:parity[fp32]", "good:engine[onnxruntime-fp32]"}

# The recipe every case breaks in one place. Line numbers below refer to this text.
BASE = """\
version: 1
model:
  factory: tm.tiny:tiny
  kwargs: {features: 4}
inputs:
  - name: x
    dtype: float32
    shape: [batch, 4]
    data: {kind: normal, mean: 0.0, std: 1.0}
outputs:
  - name: scores
dims:
  batch: {min: 1, opt: 4, max: 8}
export: {opset: 18, exporter: torchscript}
tolerances:
  fp32: {atol: 1.0e-4, rtol: 1.0e-3}
"""


def edit(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert text.count(old) == 1, f"{old!r} is not once in the base recipe"
        text = text.replace(old, new)
    return text


def factory(name: str, kwargs: str = "{}") -> str:
    return edit(("factory: tm.tiny:tiny", f"factory: {name}"), ("kwargs: {features: 4}", f"kwargs: {kwargs}"))


# -- processes and files --------------------------------------------------------------


def store_blobs(root: Path) -> set[str]:
    store = root / "out" / ".buildsys" / "store"
    return {p.name for p in store.rglob("*") if p.is_file()} if store.is_dir() else set()


def traced_steps(root: Path) -> set[str]:
    db = root / "out" / ".buildsys" / "state.sqlite"
    if not db.exists():
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {s for (s,) in con.execute("SELECT step FROM traces")}
    finally:
        con.close()


def artifacts(folder: Path) -> dict[str, str]:
    """Every file under an out/<recipe>/ folder but its logs, with its sha256."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "logs" not in p.relative_to(folder).parts}


# -- the cases ----------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes | Callable[[Path], None]]  # workspace path -> content (or a writer)
    code: int
    where: str | None  # "recipes/<id>.yaml:L:C" or the file alone where YAML has no position
    field: str | None  # the dotted field the message names
    says: tuple[str, ...]  # fragments of the message
    hint: str | None = None  # fragment of the hint line
    args: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # steps (of the bad recipe) that failed with the message located as above
    also_failed: tuple[str, ...] = ()  # steps that failed too, with a message of their own
    recipe: str | None = None  # the bad recipe's name, when it is not the case id
    check: Callable[[Path, Result], None] | None = None

    @property
    def name(self) -> str:
        return self.recipe or self.id


def recipe_case(id: str, text: str | bytes, where: str | None, field: str | None, *says: str,
                hint: str | None = None, **kw) -> Case:
    loc = f"recipes/{id}.yaml" + (f":{where}" if where else "")
    return Case(id, {f"recipes/{id}.yaml": text}, 2, loc, field, says, hint, **kw)


def step_case(id: str, text: str, where: str | None, field: str | None, *says: str, hint: str | None = None,
              failed: tuple[str, ...] = ("export",), extra: dict | None = None, **kw) -> Case:
    loc = f"recipes/{id}.yaml" + (f":{where}" if where else "")
    return Case(id, {f"recipes/{id}.yaml": text, **(extra or {})}, 3, loc, field, says, hint,
                failed=failed, **kw)


OUTPUTS_COUNT = edit(("  - name: scores", "  - name: scores\n  - name: extra"))


def _no_marker(name: str) -> Callable[[Path, Result], None]:
    def check(root: Path, r: Result) -> None:
        assert not (root / name).exists(), f"{name} exists: the recipe ran code"
    return check


def _checkpoint(kind: str) -> Callable[[Path], None]:
    """A writer of a checkpoint of this kind for tm.tiny (features 4); hostile ones create pwned-<kind>."""
    def write(path: Path) -> None:
        import torch

        from tests.fixtures.models.tiny import Tiny

        torch.manual_seed(0)
        if kind == "misfit":
            torch.save(Tiny(features=5).state_dict(), path)
        elif kind == "truncated":
            torch.save(Tiny(features=4).state_dict(), path)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "tensor":
            torch.save(torch.zeros(3), path)
        elif kind == "garbage":
            path.write_bytes(b"this is not a checkpoint\n" * 8)
        elif kind in ("pickle-zip", "pickle-raw"):
            marker = path.parent / f"pwned-{kind}"
            payload = {"fc1.weight": _RunsCode(str(marker))}
            if kind == "pickle-zip":
                torch.save(payload, path)
            else:
                with open(path, "wb") as f:
                    pickle.dump(payload, f, protocol=2)
        else:
            raise AssertionError(kind)
    return write


class _RunsCode:
    """Unpickling this creates the marker file: what a hostile checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _yaml_tag_exec(path: Path) -> None:
    marker = path.parents[1] / "hacked-by-yaml"
    path.write_text(edit(("opset: 18", f'opset: !!python/object/apply:os.system ["touch {marker}"]')))


def _absolute_name(path: Path) -> None:
    """name: the absolute path of a folder beside the workspace (it must stay empty)."""
    root = path.parents[1]
    path.write_text(f"name: {root.parent / (root.name + '-absolute')}\n" + BASE)


def _nothing_at_the_absolute_name(root: Path, r: Result) -> None:
    assert not (root.parent / (root.name + "-absolute")).exists()


def _validate_says(line: str) -> Callable[[Path, Result], None]:
    """`buildsys validate` (no model code, no build) refuses the recipe too, with the same located error."""
    def check(root: Path, r: Result) -> None:
        v = Workspace(root).run("validate")
        assert v.code == 2, (v.code, v.stdout, v.stderr)
        assert f"error: {line}" in v.stderr, v.stderr
        assert TRACEBACK not in v.stderr
    return check


def _validate_and_dry_run_say(line: str) -> Callable[[Path, Result], None]:
    """`validate` and `build --dry-run` refuse the recipe too, with the same located error and no traceback."""
    def check(root: Path, r: Result) -> None:
        _validate_says(line)(root, r)
        name = line.partition(".yaml")[0].removeprefix("recipes/")
        d = Workspace(root).run("build", "--dry-run", name)
        assert d.code == 2 and f"error: {line}" in d.stderr and TRACEBACK not in d.stderr, (d.code, d.stderr)
    return check


def _symlinked_out(root: Path) -> None:
    elsewhere = root.parent / f"{root.name}-elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    (root / "out" / "linked").symlink_to(elsewhere, target_is_directory=True)


def _symlinked_logs(root: Path) -> None:
    elsewhere = root.parent / f"{root.name}-elsewhere-logs"
    elsewhere.mkdir(exist_ok=True)
    (root / "out" / "linkedlogs").mkdir(parents=True, exist_ok=True)
    (root / "out" / "linkedlogs" / "logs").symlink_to(elsewhere, target_is_directory=True)


def _nothing_written_elsewhere(suffix: str) -> Callable[[Path, Result], None]:
    def check(root: Path, r: Result) -> None:
        elsewhere = root.parent / f"{root.name}-{suffix}"
        assert list(elsewhere.iterdir()) == [], "buildsys wrote through a symlink outside out/"
    return check


RECIPE_CASES: list = [
    # ---- YAML itself --------------------------------------------------------------------
    recipe_case("dup-top", BASE + "model: {factory: tm.tiny:tiny}\n", "17:1", "model",
                "duplicate key 'model' (first at line 2, column 1)"),
    recipe_case("dup-nested", edit(("  batch: {min: 1, opt: 4, max: 8}",
                                    "  batch: {min: 1, opt: 4, max: 8}\n  batch: {min: 2, opt: 4, max: 8}")),
                "14:3", "dims.batch", "duplicate key 'batch' (first at line 13, column 3)"),
    recipe_case("dup-flow", edit(("{min: 1, opt: 4, max: 8}", "{min: 1, opt: 4, max: 8, opt: 2}")),
                "13:35", "dims.batch.opt", "duplicate key 'opt' (first at line 13, column 19)"),
    Case("tag-exec", {"recipes/tag-exec.yaml": _yaml_tag_exec}, 2, "recipes/tag-exec.yaml:14:17",
         "export.opset", ("explicit tag !!python/object/apply:os.system is not allowed",),
         "remove the tag", check=_no_marker("hacked-by-yaml")),
    recipe_case("tag-str", edit(("opset: 18", "opset: !!str 18")), "14:17", "export.opset",
                "explicit tag !!str is not allowed"),
    recipe_case("tag-custom", edit(("min: 1,", "min: !custom 1,")), "13:16", "dims.batch.min",
                "explicit tag !custom is not allowed"),
    recipe_case("anchor", edit(("  batch: {min: 1, opt: 4, max: 8}", "  batch: &b {min: 1, opt: 4, max: 8}")),
                "13:10", "dims.batch", "anchor &b is not supported", hint="extends:"),
    recipe_case("merge-key", edit(("  fp32: {atol: 1.0e-4, rtol: 1.0e-3}", "  fp32: {<<: {atol: 1.0e-4}}")),
                "16:10", "tolerances.fp32.<<", "merge keys (<<) are not supported"),
    recipe_case("second-doc", BASE + "---\nname: other\n", "17:1", None,
                "expected a single YAML document, found a second one", hint="remove the `---` line"),
    recipe_case("top-list", "- model: {factory: tm.tiny:tiny}\n", "1:1", None,
                "expected a mapping at the top level, found a list"),
    recipe_case("tabs", edit(("  - name: scores", "\t- name: scores")), "11:1", None, "YAML syntax error",
                hint="replace the tabs"),
    recipe_case("unclosed", edit(("shape: [batch, 4]", "shape: [batch, 4")), "9:9", None, "YAML syntax error",
                "did not find expected ',' or ']'"),
    recipe_case("empty", "", None, None, "the file is empty"),
    recipe_case("comments-only", "# just a comment\n", None, None, "the file is empty"),
    recipe_case("not-utf8", BASE.encode().replace(b"scores", b"sc\xf6res"), "11:13", None,
                "the file is not UTF-8 text (byte 0xf6)", hint="save it as UTF-8"),
    # ---- YAML 1.1 readings ---------------------------------------------------------------
    # yes/no/on/off load as booleans (as PyYAML reads them): wrong only where text belongs.
    recipe_case("yaml11-no", edit(("- name: scores", "- name: no")), "11:11", "outputs.0.name",
                "expected string, found the boolean false", hint="quote it: 'no'"),
    recipe_case("yaml11-on", edit(("dtype: float32", "dtype: on")), "7:12", "inputs.0.dtype",
                "found the boolean true", hint="quote it: 'on'"),
    recipe_case("yaml11-octal", edit(("opset: 18", "opset: 010")), "14:17", "export.opset",
                "YAML 1.1 reads 010 as the octal number 8", hint="write 10 without the leading zero"),
    recipe_case("yaml11-sexagesimal", edit(("max: 8}", "max: 12:30}")), "13:32", "dims.batch.max",
                "YAML 1.1 reads 12:30 as a base-60 number", hint="quote it"),
    # ---- types --------------------------------------------------------------------------------
    recipe_case("opset-string", edit(("opset: 18", 'opset: "18"')), "14:17", "export.opset",
                "expected integer, found string '18'", hint="remove the quotes"),
    recipe_case("dim-string", edit(("min: 1,", "min: '1',")), "13:16", "dims.batch.min",
                "expected integer, found string '1'", hint="remove the quotes"),
    recipe_case("atol-string", edit(("atol: 1.0e-4", 'atol: "1e-4"')), "16:16", "tolerances.fp32.atol",
                "expected number, found string '1e-4'", hint="remove the quotes"),
    recipe_case("opset-float", edit(("opset: 18", "opset: 18.5")), "14:17", "export.opset",
                "expected integer, found number 18.5"),
    recipe_case("dims-float", edit(("{min: 1, opt: 4, max: 8}", "{min: 8.0, opt: 4.0, max: 2.0}")), "13:16",
                "dims.batch.min", "expected integer, found number 8.0", hint="write 8"),
    recipe_case("huge-integer", edit(("opset: 18", "opset: " + "9" * 5000)), "14:17", "export.opset",
                "the integer of 5000 digits is out of range"),
    recipe_case("deep-nesting", edit(("kwargs: {features: 4}", "kwargs: {features: " + "[" * 100_000
                                      + "]" * 100_000 + "}")), "4:84", "model.kwargs",
                "nested more than 64 levels deep, the limit of a recipe"),
    recipe_case("dtype-list", edit(("dtype: float32", "dtype: [float32]")), "7:5", "inputs.0.dtype",
                "expected one of float32", "found a list"),
    recipe_case("atol-nan", edit(("atol: 1.0e-4", "atol: .nan")), "16:16", "tolerances.fp32.atol",
                "expected a finite number, found .nan"),
    recipe_case("null-model", edit(("model:\n  factory: tm.tiny:tiny\n  kwargs: {features: 4}\n", "model:\n")),
                "2:7", "model", "expected mapping, found null", hint="nothing follows the colon"),
    recipe_case("inputs-mapping", edit(("inputs:\n  - name: x\n    dtype", "inputs:\n  x:\n    dtype")), "5:1", "inputs",
                "expected list, found a mapping"),
    recipe_case("key-not-text", edit(("  batch: {min: 1, opt: 4, max: 8}",
                                      "  batch: {min: 1, opt: 4, max: 8}\n  [a]: {min: 1, opt: 1, max: 1}")),
                "14:3", "dims", "expected a text key, found a list"),
    # ---- unknown and missing fields ---------------------------------------------------------
    recipe_case("unknown-top", BASE.replace("tolerances:", "tolerance:"), "15:1", "tolerance",
                "unknown field 'tolerance'", hint="did you mean 'tolerances'?"),
    recipe_case("unknown-nested", edit(("opset: 18", "opsett: 18")), "14:10", "export.opsett",
                "unknown field 'opsett'", hint="did you mean 'opset'?"),
    recipe_case("unknown-in-dim", edit(("max: 8}", "max: 8, mx: 9}")), "13:35", "dims.batch.mx",
                "unknown field 'mx'", hint="did you mean 'max'?"),
    recipe_case("missing-outputs", edit(("outputs:\n  - name: scores\n", "")), None, "outputs",
                "required field is missing"),
    recipe_case("version-2", edit(("version: 1", "version: 2")), "1:10", "version", "expected 1, found integer 2",
                hint="version 1"),
    recipe_case("exporter-typo", edit(("exporter: torchscript", "exporter: torchscipt")), "14:31",
                "export.exporter", 'expected one of dynamo, torchscript, found "torchscipt"',
                hint="did you mean 'torchscript'?"),
    recipe_case("dtype-typo", edit(("dtype: float32", "dtype: float33")), "7:12", "inputs.0.dtype",
                "found \"float33\"", hint="did you mean 'float32'?"),
    recipe_case("opset-too-low", edit(("opset: 18", "opset: 5")), "14:17", "export.opset",
                "expected an integer >= 7, found 5"),
    recipe_case("opset-unsupported", edit(("opset: 18", "opset: 99")), "14:17", "export.opset",
                "expected an integer <= 28, found 99"),
    recipe_case("samples-zero", BASE + "parity: {samples: 0}\n", "17:19", "parity.samples",
                "expected an integer >= 1, found 0"),
    recipe_case("points-dup", BASE + "parity: {points: [min, max, min]}\n", "17:29", "parity.points.2",
                'duplicate item "min" (also parity.points.0)'),
    # ---- dims and shapes -------------------------------------------------------------------
    recipe_case("min-gt-opt", edit(("{min: 1, opt: 4, max: 8}", "{min: 8, opt: 4, max: 8}")), "13:3",
                "dims.batch", "min (8) > opt (4)", hint="min <= opt <= max"),
    recipe_case("opt-gt-max", edit(("{min: 1, opt: 4, max: 8}", "{min: 1, opt: 16, max: 8}")), "13:3",
                "dims.batch", "opt (16) > max (8)"),
    recipe_case("dim-zero", edit(("min: 1,", "min: 0,")), "13:16", "dims.batch.min",
                "expected an integer >= 1, found 0"),
    recipe_case("dim-undeclared", edit(("shape: [batch, 4]", "shape: [batch, feat]")), "8:20", "inputs.0.shape.1",
                "axis 'feat' is not declared in dims", hint="declare it"),
    recipe_case("dim-typo", edit(("shape: [batch, 4]", "shape: [btach, 4]")), "8:13", "inputs.0.shape.0",
                "axis 'btach' is not declared in dims", hint="did you mean 'batch'?"),
    recipe_case("dim-unused", edit(("  batch: {min: 1, opt: 4, max: 8}",
                                    "  batch: {min: 1, opt: 4, max: 8}\n  seq: {min: 1, opt: 2, max: 4}")),
                "14:3", "dims.seq", "declared but not used in any input shape"),
    recipe_case("profile-undeclared", BASE + "profiles:\n  - {bacth: {max: 4}}\n", "18:6", "profiles.0.bacth",
                "dim 'bacth' is not declared in dims", hint="did you mean 'batch'?"),
    recipe_case("profile-order", BASE + "profiles:\n  - {batch: {min: 6}}\n", "18:6", "profiles.0.batch",
                "min (6) > opt (4) after applying this profile to dims.batch"),
    # ---- names, data, targets ----------------------------------------------------------------
    recipe_case("dup-input", edit(("outputs:\n  - name: scores", "outputs:\n  - name: x")), "11:11",
                "outputs.0.name", "'x' is also the name of inputs.0"),
    recipe_case("randint-low-high", edit(("data: {kind: normal, mean: 0.0, std: 1.0}",
                                          "data: {kind: randint, low: 5, high: 5}")), "9:5", "inputs.0.data",
                "low (5) >= high (5)", hint="randint's high is exclusive"),
    recipe_case("normal-with-low", edit(("mean: 0.0,", "low: 0.0,")), "9:26", "inputs.0.data.low",
                "not allowed for kind normal", hint="kind normal takes mean, std"),
    recipe_case("int-uniform", edit(("dtype: float32", "dtype: int64"),
                                     ("data: {kind: normal, mean: 0.0, std: 1.0}", "data: {kind: uniform}")),
                "9:18", "inputs.0.data.kind", "expected one of randint, npy for dtype int64"),
    recipe_case("tensorrt-lots", BASE + "targets:\n  - {backend: tensorrt, precision: fp16, workspace: lots}\n",
                "18:53", "targets.0.workspace", "a byte count or a size like 4GiB", hint="units:"),
    recipe_case("ort-workspace", BASE + "targets:\n  - {backend: onnxruntime, precision: fp32, workspace: 1GiB}\n",
                "18:45", "targets.0.workspace", "not allowed for backend onnxruntime",
                hint="workspace applies to tensorrt targets only"),
    recipe_case("dup-target", BASE + "targets:\n  - {backend: onnxruntime}\n  - {backend: onnxruntime, precision: fp32}\n",
                "19:5", "targets.1", "duplicate target onnxruntime-fp32 (also targets.0)"),
    recipe_case("npy-no-match", edit(("data: {kind: normal, mean: 0.0, std: 1.0}",
                                      "data: {kind: npy, path: 'nodata/*.npy'}")),
                "9:29", "inputs.0.data.path", "no file matches 'nodata/*.npy'", hint="relative to the project root",
                check=_validate_says("recipes/npy-no-match.yaml:9:29: inputs.0.data.path: no file matches")),
    recipe_case("calib-npy-no-match", BASE + "calibration: {data: {kind: npy, path: 'nocalib/*.npy'}}\n"
                "targets:\n  - {backend: onnxruntime, precision: int8}\n",
                "17:39", "calibration.data.path", "no file matches 'nocalib/*.npy'",
                hint="relative to the project root",
                check=_validate_says("recipes/calib-npy-no-match.yaml:17:39: calibration.data.path: no file matches")),
    recipe_case("tensorrt-huge-workspace",
                BASE + "targets:\n  - {backend: tensorrt, precision: fp16, workspace: %sGiB}\n" % ("9" * 5000),
                "18:53", "targets.0.workspace", "(5003 characters) is larger than the largest size, 8 EiB",
                check=_validate_and_dry_run_say("recipes/tensorrt-huge-workspace.yaml:18:53: targets.0.workspace: "
                                                "9999999999…999GiB (5003 characters) is larger")),
    recipe_case("npy-absolute-glob", edit(("data: {kind: normal, mean: 0.0, std: 1.0}",
                                           "data: {kind: npy, path: '/**/*.npy'}")),
                "9:29", "inputs.0.data.path", "'/**/*.npy' is outside the workspace",
                check=_validate_and_dry_run_say("recipes/npy-absolute-glob.yaml:9:29: inputs.0.data.path: "
                                                "'/**/*.npy' is outside the workspace")),
    recipe_case("npy-glob-into-out", edit(("data: {kind: normal, mean: 0.0, std: 1.0}",
                                           "data: {kind: npy, path: 'out/**/*.npy'}")),
                "9:29", "inputs.0.data.path", "'out/**/*.npy' reaches into out/",
                check=_validate_and_dry_run_say("recipes/npy-glob-into-out.yaml:9:29: inputs.0.data.path: "
                                                "'out/**/*.npy' reaches into out/")),
    recipe_case("calib-images-none", BASE + "calibration: {data: {kind: images, path: tm}}\n"
                "targets:\n  - {backend: onnxruntime, precision: int8}\n",
                "17:42", "calibration.data.path", "the folder 'tm' holds no image (",
                hint="calibration images are JPEG, PNG",
                check=_validate_and_dry_run_say("recipes/calib-images-none.yaml:17:42: calibration.data.path: "
                                                "the folder 'tm' holds no image")),
    recipe_case("factory-no-colon", factory("tm.tiny.tiny", "{features: 4}"), "3:12", "model.factory",
                "expected 'module.path:callable', found 'tm.tiny.tiny'",
                hint="separate the module from the callable with ':': tm.tiny:tiny"),
    recipe_case("factory-missing-module", factory("tm.tinny:tiny", "{features: 4}"), "3:12", "model.factory",
                "module 'tm.tinny' not found", hint="did you mean 'tm.tiny'?"),
    # ---- files and names that leave the workspace or out/ ---------------------------------
    recipe_case("name-dotdot", "name: ../x\n" + BASE, "1:7", "name",
                "expected a name of lowercase letters, digits", recipe="../x"),
    Case("name-absolute", {"recipes/name-absolute.yaml": _absolute_name}, 2, "recipes/name-absolute.yaml:1:7",
         "name", ("expected a name of lowercase letters, digits",), check=_nothing_at_the_absolute_name),
    recipe_case("name-upper", "name: Tiny\n" + BASE, "1:7", "name", "found 'Tiny'", recipe="Tiny"),
    Case("Bad Stem", {"recipes/Bad Stem.yaml": BASE}, 2, "recipes/Bad Stem.yaml", "name",
         ("the file name gives the recipe name 'Bad Stem', which is not a valid name",), "set name: bad-stem",
         recipe="Bad Stem"),
    recipe_case("ckpt-missing", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: nope.pt")),
                "5:15", "model.checkpoint", "file not found: 'nope.pt'"),
    recipe_case("ckpt-outside", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: ../x.pt")),
                "5:15", "model.checkpoint", "'../x.pt' is outside the workspace"),
    Case("ckpt-link-out", {"recipes/ckpt-link-out.yaml": edit(("kwargs: {features: 4}",
                                                              "kwargs: {features: 4}\n  checkpoint: link.pt")),
                           "link.pt": lambda path: path.symlink_to("/etc/hostname")}, 2,
         "recipes/ckpt-link-out.yaml:5:15", "model.checkpoint", ("'link.pt' is outside the workspace",)),
    recipe_case("ckpt-folder", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: tm")),
                "5:15", "model.checkpoint", "expected a file, found the folder 'tm'"),
    Case("extends-missing", {"recipes/extends-missing.yaml": "extends: _bsae.yaml\n" + BASE,
                             "recipes/_base.yaml": "version: 1\n"}, 2, "recipes/extends-missing.yaml:1:10",
         "extends", ("base file not found: '_bsae.yaml'",), "did you mean '_base.yaml'?"),
    Case("base-problem", {"recipes/base-problem.yaml": "extends: _shared.yaml\n" + edit(
        ("export: {opset: 18, exporter: torchscript}\n", "")),
        "recipes/_shared.yaml": "export: {opset: '18', exporter: torchscript}\n"}, 2, "recipes/_shared.yaml:1:17",
        "export.opset", ("expected integer, found string '18'",), "remove the quotes"),
    recipe_case("extends-outside", "extends: ../../etc/passwd\n" + BASE, "1:10", "extends",
                "'../../etc/passwd' is outside the workspace"),
    Case("extends-cycle", {"recipes/extends-cycle.yaml": "extends: _cyc.yaml\n" + BASE,
                           "recipes/_cyc.yaml": "extends: _cyc2.yaml\n", "recipes/_cyc2.yaml": "extends: _cyc.yaml\n"},
         2, "recipes/_cyc2.yaml:1:10", "extends", ("makes a cycle",), "remove the extends:"),
    Case("twin", {"recipes/twin-a.yaml": "name: twin\n" + BASE, "recipes/twin-b.yaml": "name: twin\n" + BASE}, 2,
         "recipes/twin-a.yaml:1:7", "name", ("recipe name 'twin' is also used by recipes/twin-b.yaml",),
         "every recipe needs its own name"),
]

# Model code (and out/ links) that fail a step: exit 3. They share one build (see `batch`).
STEP_CASES: list = [
    Case("linked", {"recipes/linked.yaml": BASE, "_setup": _symlinked_out}, 3, None, None,
         ("resolves to", "outside", "buildsys writes only under out/"), "remove the link",
         failed=("export", "reference"), check=_nothing_written_elsewhere("elsewhere")),
    Case("linkedlogs", {"recipes/linkedlogs.yaml": BASE, "_setup": _symlinked_logs}, 3, None, None,
         ("resolves to", "outside"), "remove the link", failed=("export", "reference"),
         check=_nothing_written_elsewhere("elsewhere-logs")),
    step_case("import-missing-dep", factory("tb.import_missing_dep:net"), "3:12", "model.factory",
              "cannot import tb.import_missing_dep: No module named 'nonexistent_package_for_buildsys_tests'",
              failed=("export", "reference")),
    step_case("import-syntax", factory("tb.syntax:net"), "3:12", "model.factory",
              "importing tb.syntax raised SyntaxError", failed=("export", "reference"),
              extra={"tb/syntax.py": "def net(:\n    pass\n"}),
    step_case("import-raises", factory("tb.import_raises:net"), "3:12", "model.factory",
              "importing tb.import_raises raised RuntimeError: weights server unreachable",
              failed=("export", "reference")),
    step_case("import-exits", factory("tb.import_exits:net"), "3:12", "model.factory",
              "importing tb.import_exits called sys.exit(0)", hint="must not exit",
              failed=("export", "reference")),
    step_case("attr-missing", factory("tb.not_callable:nett"), "3:12", "model.factory",
              "tb.not_callable has no attribute 'nett'", failed=("export", "reference")),
    step_case("not-callable", factory("tb.not_callable:net"), "3:12", "model.factory",
              "tb.not_callable:net is a", "int, not a callable", failed=("export", "reference")),
    step_case("returns-dict", factory("tb.returns_wrong:as_dict"), "3:12", "model.factory",
              "tb.returns_wrong:as_dict returned a dict, not a torch.nn.Module", failed=("export", "reference")),
    step_case("returns-class", factory("tb.returns_wrong:as_class"), "3:12", "model.factory",
              "returned a type, not a torch.nn.Module", failed=("export", "reference")),
    step_case("returns-none", factory("tb.returns_wrong:nothing"), "3:12", "model.factory",
              "returned a NoneType, not a torch.nn.Module", failed=("export", "reference")),
    step_case("factory-raises", factory("tb.factory_raises:raises", "{features: 3}"), "4:3", "model.kwargs",
              "raised ValueError: features must be even, got 3", failed=("export", "reference")),
    step_case("factory-exits", factory("tb.factory_raises:exits"), "3:12", "model.factory",
              "tb.factory_raises:exits called sys.exit(3)", failed=("export", "reference")),
    step_case("bad-kwargs", edit(("kwargs: {features: 4}", "kwargs: {featurs: 4}")), "4:3", "model.kwargs",
              "unexpected keyword argument 'featurs'", failed=("export", "reference")),
    step_case("ckpt-misfit", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: misfit.pt")),
              "5:15", "model.checkpoint", "checkpoint misfit.pt does not fit the model", hint="model.kwargs",
              failed=("export", "reference"), extra={"misfit.pt": _checkpoint("misfit")}),
    step_case("ckpt-truncated", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: cut.pt")),
              "5:15", "model.checkpoint", "checkpoint cut.pt cannot be loaded safely", failed=("export", "reference"),
              extra={"cut.pt": _checkpoint("truncated")}),
    step_case("ckpt-garbage", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: junk.pt")),
              "5:15", "model.checkpoint", "checkpoint junk.pt cannot be loaded safely",
              failed=("export", "reference"), extra={"junk.pt": _checkpoint("garbage")}),
    step_case("ckpt-tensor", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: t.pt")),
              "5:15", "model.checkpoint", "checkpoint t.pt holds a Tensor, not a state_dict",
              failed=("export", "reference"), extra={"t.pt": _checkpoint("tensor")}),
    step_case("ckpt-pickle-zip", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: evil.pt")),
              "5:15", "model.checkpoint", "checkpoint evil.pt cannot be loaded safely", hint="weights_only=True",
              failed=("export", "reference"), extra={"evil.pt": _checkpoint("pickle-zip")}),
    step_case("ckpt-pickle-raw", edit(("kwargs: {features: 4}", "kwargs: {features: 4}\n  checkpoint: evil2.pt")),
              "5:15", "model.checkpoint", "checkpoint evil2.pt cannot be loaded safely",
              failed=("export", "reference"), extra={"evil2.pt": _checkpoint("pickle-raw")}),
    step_case("unsupported-op", factory("tb.unsupported_op:net"), "14:31", "export.exporter",
              "the torchscript exporter failed", "aten::lgamma", hint="exporter: dynamo"),
    # (by default parity judges a trace that warned; strict_trace refuses it)
    step_case("data-dependent", factory("tb.data_dependent:net").replace(
                  "exporter: torchscript}", "exporter: torchscript, strict_trace: true}"), "14:58", "export.strict_trace",
              "the TorchScript tracer could not follow the model: tb/data_dependent.py:",
              "Converting a tensor to a Python boolean", hint="use exporter: dynamo"),
    step_case("frozen-axis", factory("tb.frozen_axis:net").replace("exporter: torchscript", "exporter: dynamo"),
              "13:3", "dims.batch", "dim batch: the exported graph holds for only the size 4, not for all of the "
              "declared 1..8", "the model's code constrains it at tb/frozen_axis.py:"),
    # (its own parity seed: a reference of its own runs, rather than the good recipe's cached one)
    step_case("opset-torchscript", edit(("opset: 18", "opset: 24")) + "parity: {seed: 1}\n", "14:17", "export.opset",
              "the torchscript exporter supports opsets up to 20, found 24", hint="or exporter: dynamo"),
    step_case("outputs-count", OUTPUTS_COUNT, "10:1", "outputs", "the model returned 1 tensors, the recipe names 2 outputs",
              hint="give outputs one name per tensor", failed=("reference",), also_failed=("export",)),
]


@dataclass
class UsageCase:
    id: str
    args: tuple[str, ...]
    says: tuple[str, ...]
    hint: str | None = None


USAGE: list[UsageCase] = [
    UsageCase("unknown-command", ("frobnicate",), ("invalid choice: 'frobnicate'",)),
    UsageCase("j-zero", ("build", "-j", "0"), ("-j takes a positive number of jobs, found 0",)),
    UsageCase("j-negative", ("build", "-j", "-3"), ("-j takes a positive number of jobs, found -3",)),
    UsageCase("j-text", ("build", "-j", "two"), ("argument -j/--jobs: invalid int value: 'two'",)),
    UsageCase("unknown-option", ("build", "--frobnicate"), ("unrecognized arguments: --frobnicate",)),
    UsageCase("unknown-recipe", ("build", "godo"), ("unknown recipe 'godo'; known: good",), "did you mean 'good'?"),
    UsageCase("only-nothing", ("build", "--only", "exprot"), ("--only exprot matches no step",), "step names:"),
    UsageCase("explain-unknown-step", ("explain", "good:exprot"), ("good:exprot: no such step",), "steps of good:"),
    UsageCase("check-missing-baseline", ("check", "--baseline", "nope.json"), ("--baseline nope.json: no such file",)),
    UsageCase("check-regression-factor", ("check", "--max-regression", "0.5"),
              ("--max-regression must be greater than 1, found 0.5",)),
    UsageCase("timeout-text", ("build", "--timeout", "soon"), ("argument --timeout: invalid float value: 'soon'",)),
]


def _case_id(case: Case) -> str:
    return case.id


def _cases(params: list) -> list[Case]:
    return [p.values[0] if hasattr(p, "values") else p for p in params]


# -- the workspace ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(FIXTURES, root / "tm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BAD_MODULES, root / "tb", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "recipes").mkdir()
    w = Workspace(root)
    w.write("recipes/good.yaml", tiny_recipe())
    r = w.build()
    assert r.code == 0, r.stderr
    assert set(r.ran()) == GOOD_STEPS
    return w


def _write(root: Path, files: dict) -> list[Path]:
    """Write a case's files (text, bytes, or a writer called with the path); `_setup` gets the root."""
    written = []
    for rel, content in files.items():
        if rel == "_setup":
            content(root)
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        written.append(path)
    return written


def _cleanup(root: Path, case: Case, written: list[Path]) -> None:
    for p in written:
        p.unlink(missing_ok=True)
    target = root / "out" / case.name
    if target.is_symlink():
        target.unlink()
    elif target.is_dir() and target.resolve().is_relative_to(root / "out"):
        shutil.rmtree(target)
    for p in [*root.glob("pwned-*"), root / "hacked-by-yaml"]:
        p.unlink(missing_ok=True)


def _no_traceback(r: Result) -> None:
    assert TRACEBACK not in r.stdout and TRACEBACK not in r.stderr, r.stderr[-3000:]
    assert "this is a bug in buildsys" not in r.stdout + r.stderr, "a user error reported as a bug in buildsys"


def _good_still_built(root: Path, r: Result, before: dict[str, str]) -> None:
    good = {k: v for k, v in r.states().items() if k.startswith("good:")}
    assert set(good) == GOOD_STEPS and set(good.values()) <= {"cached", "ran", "cutoff"}, good
    assert artifacts(root / "out" / "good") == before


def _no_scratch_left(root: Path) -> None:
    tmp = root / "out" / ".buildsys" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.rglob("*"))


@pytest.mark.parametrize("case", RECIPE_CASES, ids=_case_id)
def test_bad_recipe(ws: Workspace, case: Case):
    """A broken recipe: exit 2, `error: file:line:col: field: message`, nothing of it built."""
    root = ws.root
    blobs_before = store_blobs(root)
    good_before = artifacts(root / "out" / "good")
    written = _write(root, case.files)
    try:
        r = ws.build("-k", *case.args)
        _no_traceback(r)
        assert r.code == case.code == 2, (r.code, r.stderr[-3000:])
        head = f"error: {case.where}: " + (f"{case.field}: " if case.field else "")
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith(head)]
        assert lines, f"no line starts with {head!r}\n{r.stderr}"
        assert case.says[0] in lines[0], (case.says[0], lines[0])
        for s in case.says[1:]:
            assert s in r.stderr, (s, r.stderr)
        if case.hint:
            hints = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("hint: ")]
            assert any(case.hint in h for h in hints), (case.hint, r.stderr)
        # the JSON record carries the same problem
        assert any(p.startswith(head.removeprefix("error: ")) for p in r.json["problems"]), r.json["problems"]
        # nothing of the bad recipe: no out/<name>/, no trace, no store entry
        assert not any(s.startswith(f"{case.name}:") for s in r.states()), r.states()
        assert not any(s.startswith(f"{case.name}:") for s in traced_steps(root))
        assert not (root / "out" / case.name).exists()
        assert store_blobs(root) == blobs_before
        _no_scratch_left(root)
        _good_still_built(root, r, good_before)
        assert worker_pids(root) == [], "a worker process outlived the build"
        if case.check:
            case.check(root, r)
    finally:
        _cleanup(root, case, written)


@dataclass
class Batch:
    """What one build of every STEP_CASES recipe at once left behind."""

    root: Path
    result: Result
    traced: set[str]
    made: dict[str, dict[str, str]]  # recipe -> its artifacts under out/<recipe>/ (logs left out)
    new_blobs: set[str]
    markers: set[str]  # files a hostile checkpoint or recipe would have created
    workers_left: list[int]
    scratch: list[str]
    good_before: dict[str, str]
    good_after: dict[str, str]


@pytest.fixture(scope="module")
def batch(ws: Workspace) -> Batch:
    """One `build -k -j 2` over every step case: the persistent workers serve them all (which is
    itself part of the test: one broken model must not spoil the next step in the same worker)."""
    root = ws.root
    blobs_before = store_blobs(root)
    good_before = artifacts(root / "out" / "good")
    written: list[Path] = []
    try:
        for case in _cases(STEP_CASES):
            written += _write(root, case.files)
        r = ws.build("-k", "-j", "2")
        tmp = root / "out" / ".buildsys" / "tmp"
        return Batch(
            root=root, result=r, traced=traced_steps(root),
            made={c.name: artifacts(root / "out" / c.name) for c in _cases(STEP_CASES)
                  if not (root / "out" / c.name).is_symlink()},
            new_blobs=store_blobs(root) - blobs_before,
            markers={p.name for p in root.glob("pwned-*")} | {p.name for p in root.glob("hacked*")},
            workers_left=worker_pids(root),
            scratch=[str(p) for p in tmp.rglob("*")] if tmp.exists() else [],
            good_before=good_before, good_after=artifacts(root / "out" / "good"),
        )
    finally:
        for p in written:
            p.unlink(missing_ok=True)
        for case in _cases(STEP_CASES):
            _cleanup(root, case, [])


def test_step_failures_together(batch: Batch):
    """The shared build of all step cases: exit 3, no traceback, good recipe built, nothing left over."""
    r = batch.result
    _no_traceback(r)
    assert r.code == 3, r.stderr[-3000:]
    good = {k: v for k, v in r.states().items() if k.startswith("good:")}
    assert set(good) == GOOD_STEPS and set(good.values()) <= {"cached", "ran", "cutoff"}, good
    assert batch.good_after == batch.good_before
    assert batch.workers_left == [], "a worker process outlived the build"
    assert batch.scratch == []
    # the only new store entries are the outputs of steps that succeeded (reference runs PyTorch only)
    succeeded = {s["id"] for s in r.json["steps"] if s["state"] == "ran"}
    assert {sid.partition(":")[2] for sid in succeeded} <= {"reference"}, succeeded
    assert len(batch.new_blobs) <= len(succeeded)


@pytest.mark.parametrize("case", STEP_CASES, ids=_case_id)
def test_failing_step(batch: Batch, case: Case):
    """A step that cannot run: failed with `file:line:col: field: message`, nothing of it recorded."""
    r = batch.result
    assert r.code == case.code == 3
    _no_traceback(r)
    steps = {s["id"]: s for s in r.json["steps"]}
    head = f"{case.where}: " if case.where else ""
    prefix = head + (f"{case.field}: " if case.field else "")
    for name in case.failed:
        sid = f"{case.name}:{name}"
        assert steps[sid]["state"] == "failed", steps[sid]
        msg = steps[sid]["message"]
        assert msg.startswith(prefix), (prefix, msg)
        for s in case.says:
            assert s in msg, (s, msg)
        if case.hint:
            assert "hint: " in msg and case.hint in msg, msg
        assert f"FAILED      {sid}" in r.stderr, "the failure is not shown on the terminal"
        if case.where:
            assert f"log: out/{case.name}/logs/" in msg
    for name in case.also_failed:
        sid = f"{case.name}:{name}"
        assert steps[sid]["state"] == "failed", steps[sid]
        assert steps[sid]["message"].startswith(f"recipes/{case.id}.yaml") or not case.where, steps[sid]["message"]
    # what depends on a failed step is skipped, and named as such
    for sid, s in steps.items():
        if sid.startswith(f"{case.name}:") and s["state"] == "skipped":
            assert s["reason"].startswith("blocked: "), s
    # nothing of a failed step was recorded or placed under out/
    succeeded = {sid for sid, s in steps.items() if sid.startswith(f"{case.name}:") and s["state"] == "ran"}
    traced = {s for s in batch.traced if s.startswith(f"{case.name}:")}
    assert traced == succeeded, (traced, succeeded)
    allowed = {"reference.npz"} if f"{case.name}:reference" in succeeded else set()
    assert set(batch.made.get(case.name, {})) <= allowed, batch.made.get(case.name)
    assert not batch.markers, f"hostile input ran code: {batch.markers}"
    if case.check:
        case.check(batch.root, r)


def test_export_blames_outputs_when_the_recipe_names_too_many(batch: Batch):
    """The exporter refuses more output names than the model returns: the field at fault is the
    recipe's outputs, with both counts, not export.exporter with a hint to switch exporter."""
    msg = next(s["message"] for s in batch.result.json["steps"] if s["id"] == "outputs-count:export")
    assert msg.startswith("recipes/outputs-count.yaml:10:1: outputs: "), msg
    assert "the model returned 1 tensors, the recipe names 2 outputs" in msg, msg
    assert "hint: give outputs one name per tensor the model's forward returns" in msg, msg
    assert "export.exporter" not in msg and "exporter: dynamo may handle this model" not in msg, msg


def test_import_that_hangs_times_out_and_leaves_no_worker(ws: Workspace):
    """`build --timeout 5`: a module that sleeps at import fails both steps that import it, kills their
    workers, and leaves the good recipe built."""
    root = ws.root
    good_before = artifacts(root / "out" / "good")
    case = Case("hangs", {"recipes/hangs.yaml": factory("tb.import_hangs:net")}, 3, None, None, ())
    written = _write(root, case.files)
    try:
        started = time.monotonic()
        r = ws.build("-k", "-j", "2", "--timeout", "5")
        elapsed = time.monotonic() - started
        _no_traceback(r)
        assert r.code == 3, r.stderr
        assert elapsed < 60
        for sid in ("hangs:export", "hangs:reference"):
            step = next(s for s in r.json["steps"] if s["id"] == sid)
            assert step["state"] == "failed"
            assert "timed out after 5s; the step's process group was killed" in step["message"], step["message"]
            assert "hint: raise the step's timeout" in step["message"]
            assert step["message"].startswith("recipes/hangs.yaml"), step["message"]
        assert worker_pids(root) == [], "a timed-out worker is still running"
        assert not any(s.startswith("hangs:") for s in traced_steps(root))
        assert artifacts(root / "out" / "hangs") == {}
        _no_scratch_left(root)
        _good_still_built(root, r, good_before)
    finally:
        _cleanup(root, case, written)


def test_bad_recipe_without_keep_going_stops_before_building(ws: Workspace):
    """Without -k a broken recipe is reported once, with exit 2, and nothing runs."""
    root = ws.root
    written = _write(root, {"recipes/stop.yaml": edit(("min: 1,", "min: 9,"))})
    try:
        r = ws.build()
        _no_traceback(r)
        assert r.code == 2
        assert "error: recipes/stop.yaml:13:3: dims.batch: min (9) > opt (4)" in r.stderr
        assert r.stdout == ""  # no build happened: no step record
        r = ws.run("validate")
        assert r.code == 2 and "recipes/stop.yaml:13:3: dims.batch: min (9) > opt (4)" in r.stderr
        _no_traceback(r)
    finally:
        for p in written:
            p.unlink()


def test_every_problem_of_a_file_is_reported_at_once(ws: Workspace):
    text = edit(("min: 1,", "min: 9,"), ("opset: 18", 'opset: "18"'), ("tolerances:", "tolerance:"))
    written = _write(ws.root, {"recipes/many.yaml": text})
    try:
        r = ws.run("validate")
        _no_traceback(r)
        assert r.code == 2
        located = [ln for ln in r.stderr.splitlines() if ln.startswith("error: recipes/many.yaml:")]
        assert [ln.split(": ")[1] for ln in located] == ["recipes/many.yaml:13:3", "recipes/many.yaml:14:17",
                                                          "recipes/many.yaml:15:1"], r.stderr
        assert "3 problems found" in r.stderr
    finally:
        for p in written:
            p.unlink()


@pytest.mark.parametrize("case", USAGE, ids=lambda c: c.id)
def test_bad_usage(ws: Workspace, case: UsageCase):
    blobs = store_blobs(ws.root)
    r = ws.run(*case.args)
    _no_traceback(r)
    assert r.code == 2, (r.code, r.stderr)
    for s in case.says:
        assert s in r.stderr, (s, r.stderr)
    if case.hint:
        assert f"hint: {case.hint}" in r.stderr, r.stderr
    assert store_blobs(ws.root) == blobs
    assert worker_pids(ws.root) == []


def test_workspace_that_is_not_a_folder(tmp_path: Path):
    r = Workspace(tmp_path / "nowhere").run("build")
    _no_traceback(r)
    assert r.code == 2 and f"error: workspace {tmp_path / 'nowhere'} is not a directory" in r.stderr


@pytest.mark.parametrize("layout", ["empty-recipes", "no-recipes-folder", "only-bases"])
def test_no_recipes(tmp_path: Path, layout: str):
    if layout != "no-recipes-folder":
        (tmp_path / "recipes").mkdir()
    if layout == "only-bases":
        (tmp_path / "recipes" / "_base.yaml").write_text("version: 1\n")
    r = Workspace(tmp_path).build("-k")
    _no_traceback(r)
    assert r.code == 2, r.stderr
    if layout == "no-recipes-folder":
        assert f"error: no recipes/ folder in {tmp_path}" in r.stderr
    else:
        assert f"error: no recipes in {tmp_path / 'recipes'}" in r.stderr
    assert "hint: " in r.stderr
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file() and ".buildsys" not in p.parts]
    assert store_blobs(tmp_path) == set()


def test_a_file_symlinked_under_out_is_replaced_not_written_through(ws: Workspace, tmp_path: Path):
    """out/<recipe>/model.onnx linked to a file elsewhere: the build replaces the link, the target is untouched."""
    victim = tmp_path / "victim.onnx"
    victim.write_bytes(b"precious")
    folder = ws.root / "out" / "victimized"
    folder.mkdir(parents=True)
    (folder / "model.onnx").symlink_to(victim)
    written = _write(ws.root, {"recipes/victimized.yaml": BASE})
    try:
        r = ws.build("-k")
        _no_traceback(r)
        assert r.code == 0, r.stderr
        assert victim.read_bytes() == b"precious"
        assert not (folder / "model.onnx").is_symlink()
    finally:
        for p in written:
            p.unlink()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["pickle-zip", "pickle-raw"])
def test_hostile_checkpoints_would_run_code_if_loaded_unsafely(tmp_path: Path, kind: str):
    """The pickle cases above prove something only if their payload is live: torch.load without
    weights_only=True runs it (and creates the marker the step cases look for)."""
    import torch

    path = tmp_path / "evil.pt"
    _checkpoint(kind)(path)
    try:
        torch.load(path, weights_only=False)
    except Exception:  # the payload ran before the loader gave up on what it returned
        pass
    assert (tmp_path / f"pwned-{kind}").exists()


def test_hostile_yaml_would_run_code_if_loaded_unsafely(tmp_path: Path):
    """The tag-exec case proves something only if its payload is live for an unsafe YAML loader."""
    import yaml

    path = tmp_path / "recipes" / "x.yaml"
    path.parent.mkdir()
    _yaml_tag_exec(path)
    yaml.unsafe_load(path.read_text())
    assert (tmp_path / "hacked-by-yaml").exists()


def test_corpus_size():
    """The corpus keeps at least 60 cases: recipes, model code, checkpoints and usage together."""
    extra = 1 + 3 + 1  # the hanging import, the recipes/ layouts, a workspace that is not a folder
    assert len(RECIPE_CASES) + len(STEP_CASES) + len(USAGE) + extra >= 60
    ids = [c.id for c in _cases(RECIPE_CASES + STEP_CASES)]
    assert len(set(ids)) == len(ids)
