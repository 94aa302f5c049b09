"""The no-op answer: every change a full build would see makes it miss, and nothing else does.

The first tests drive it on plain files (no recipes, no models): record the
answer, change one thing, and `check` must no longer answer. The later ones go
through the real recipe loading, resolving and key making, so that what is
stamped is what the build read.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from buildsys.core import toolchain
from buildsys.core.reads import Reads, glob_folders
from buildsys.core.verdict import Verdict
from buildsys.engine import noop

SIGNATURE = json.dumps([[], [], False])  # a plain `buildsys build`
ANSWER = {"steps": [{"id": "a:export", "state": "cached", "reason": "up to date", "seconds": 0.0}], "exit": 0}
BLOB = "ab" + "1" * 62
KEY_SOURCES = noop.key_sources
INSTALLED, CPU = toolchain.installed(), toolchain.cpu()


def _age(root: Path) -> None:
    past = time.time() - 60
    for p in [root, *root.rglob("*")]:
        os.utime(p, (past, past), follow_symlinks=False)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> Path:
    # buildsys's key sources are stamped too; one edited a moment ago would keep any
    # answer from being recorded, so they are left out here (see the key-source tests below).
    monkeypatch.setattr(noop, "key_sources", list)
    root = tmp_path / "ws"
    for rel, text in {"recipes/a.yaml": "name: a\n", "bm/tiny.py": "x = 1\n",
                      "data/calib/one/1.npy": "1", "w.pt": "weights"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    blob = root / "out/.buildsys/store" / BLOB[:2] / BLOB
    blob.parent.mkdir(parents=True)
    blob.write_text("onnx bytes")
    blob.chmod(0o444)
    (root / "out/a").mkdir(parents=True)
    os.link(blob, root / "out/a/model.onnx")  # what Store.materialize does
    (root / "out/a/copied.bin").write_text("copied")  # a copy (the store on another file system)
    copied = root / "out/.buildsys/store/cd" / ("cd" + "2" * 62)
    copied.parent.mkdir(parents=True)
    copied.write_text("copied")
    _age(root)
    return root


def files(root: Path) -> Reads:
    """What a `buildsys build` of this workspace would have read."""
    meta = root / "out/.buildsys"
    found = {str(root / p) for p in ("recipes", "recipes/a.yaml", "bm/tiny.py", "w.pt", "data/calib/one/1.npy",
                                    "data/calib/one", "out/a/model.onnx", "out/a/copied.bin")} | {
        str(meta / "store" / BLOB[:2] / BLOB), str(meta / "store/cd" / ("cd" + "2" * 62))}
    return Reads(found)


def record(root: Path) -> None:
    assert noop.record(str(root / "out/.buildsys"), SIGNATURE, files(root), ANSWER)


def check(root: Path) -> dict | None:
    return noop.check(str(root / "out/.buildsys"), SIGNATURE)


def test_an_unchanged_workspace_is_answered(ws: Path):
    record(ws)
    entry = check(ws)
    assert entry is not None and entry["steps"] == ANSWER["steps"] and entry["exit"] == 0
    assert (ws / "out/.buildsys/noop.json").is_file()


def test_a_store_blob_linked_from_out_is_stamped_through_its_link(ws: Path):
    record(ws)
    text = (ws / "out/.buildsys/noop.json").read_text()
    assert BLOB not in text  # out/a/model.onnx shares its inode
    assert "cd" + "2" * 62 in text  # a copy does not


def test_a_file_read_as_absent_does_not_hide_the_files_stamped_after_it(ws: Path):
    """A path the build found missing is stamped as absent; the files after it in its folder are still checked."""
    reads = files(ws)
    reads.file(str(ws / "bm/absent.py"))  # sorts before bm/tiny.py, in the same folder
    assert noop.record(str(ws / "out/.buildsys"), SIGNATURE, reads, ANSWER)
    assert check(ws) is not None
    _edit(ws / "bm/tiny.py", "x = 2\n")
    assert check(ws) is None


def _edit(path: Path, text: str = "changed\n") -> None:
    path.chmod(0o644)
    path.write_text(text)


def _replace_blob(root: Path) -> None:
    blob = root / "out/.buildsys/store" / BLOB[:2] / BLOB
    tmp = blob.with_name("tmp")
    tmp.write_text("onnx bytes")
    os.replace(tmp, blob)


CHANGES = {
    "recipe edited": lambda r: _edit(r / "recipes/a.yaml", "name: b\n"),
    "recipe added": lambda r: (r / "recipes/b.yaml").write_text("name: b\n"),
    "model source edited": lambda r: _edit(r / "bm/tiny.py", "x = 2\n"),
    "model source folder gains a module": lambda r: (r / "bm/other.py").write_text(""),
    "checkpoint rewritten": lambda r: _edit(r / "w.pt", "other weights"),
    "data file edited": lambda r: _edit(r / "data/calib/one/1.npy", "2"),
    "data file added beside": lambda r: (r / "data/calib/one/2.npy").write_text("2"),
    "data file added in a new sub-folder": lambda r: ((r / "data/calib/two").mkdir(),
                                                      (r / "data/calib/two/3.npy").write_text("3")),
    "file added at the workspace root (beside w.pt)": lambda r: (r / "tiny.py").write_text(""),
    "output deleted": lambda r: (r / "out/a/model.onnx").unlink(),
    "output modified": lambda r: _edit(r / "out/a/model.onnx", "garbage"),
    "copied output modified": lambda r: _edit(r / "out/a/copied.bin", "garbage"),
    "store blob deleted": lambda r: (r / "out/.buildsys/store" / BLOB[:2] / BLOB).unlink(),
    "store blob replaced": _replace_blob,
    "store blob modified in place": lambda r: _edit(r / "out/.buildsys/store" / BLOB[:2] / BLOB, "bit flip"),
    "copied store blob deleted": lambda r: (r / "out/.buildsys/store/cd" / ("cd" + "2" * 62)).unlink(),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_a_build_would_see_falls_back_to_the_full_path(ws: Path, change: str):
    record(ws)
    assert check(ws) is not None
    CHANGES[change](ws)
    assert check(ws) is None


def test_a_file_younger_than_two_seconds_is_not_trusted(ws: Path):
    (ws / "recipes/a.yaml").write_text("name: a\n")
    assert not noop.record(str(ws / "out/.buildsys"), SIGNATURE, files(ws), ANSWER)
    assert check(ws) is None


def test_cuda_visible_devices_is_part_of_the_environment(ws: Path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    record(ws)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert check(ws) is None


def test_a_gpu_driver_update_falls_back_to_the_full_path(ws: Path, tmp_path: Path, monkeypatch):
    proc = tmp_path / "proc-nvidia"
    (proc / "gpus/0000:01:00.0").mkdir(parents=True)
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n")
    (proc / "gpus/0000:01:00.0/information").write_text("Model: \t\t NVIDIA H200\n")
    (tmp_path / "nvidiactl").write_text("")
    monkeypatch.setattr(toolchain, "NVIDIACTL", str(tmp_path / "nvidiactl"))
    monkeypatch.setattr(toolchain, "PROC_NVIDIA", str(proc))
    record(ws)
    assert check(ws) is not None
    (proc / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.10\n")
    assert check(ws) is None
    record(ws)
    (proc / "gpus/0000:01:00.0/information").write_text("Model: \t\t NVIDIA H100\n")
    assert check(ws) is None


def test_the_interpreter_is_known_by_its_real_path(ws: Path, tmp_path: Path, monkeypatch):
    record(ws)
    link = tmp_path / "python-link"
    link.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sys, "executable", str(link))
    assert check(ws) is not None  # the same interpreter by another name
    other = tmp_path / "other-python"
    other.write_text("")
    monkeypatch.setattr(sys, "executable", str(other))
    assert check(ws) is None


def test_each_signature_has_its_own_answer_and_forget_drops_them_all(ws: Path):
    meta = str(ws / "out/.buildsys")
    record(ws)
    only = json.dumps([["a"], [], False])
    assert noop.record(meta, only, files(ws), {**ANSWER, "exit": 1})
    assert noop.check(meta, only)["exit"] == 1
    assert check(ws)["exit"] == 0
    noop.forget(meta)
    assert check(ws) is None and noop.check(meta, only) is None
    assert not [n for n in os.listdir(meta) if n.startswith("noop")]


def test_a_damaged_manifest_is_a_miss(ws: Path):
    record(ws)
    (ws / "out/.buildsys/noop.json").write_text('{"version": 2, "signature": ')
    assert check(ws) is None
    (ws / "out/.buildsys/noop.json").write_text('[1, 2]')
    assert check(ws) is None


def _recipe_with(data: str) -> str:
    from tests.e2e.conftest import tiny_recipe

    if data == "calibration":
        return (tiny_recipe().split("tolerances:")[0]
                + "calibration: {data: {kind: npy, path: 'data/**/*.npy'}, samples: 4}\n"
                + "tolerances:\n  int8: {min_cosine: 0.9}\ntargets:\n  - {backend: onnxruntime, precision: int8}\n")
    return tiny_recipe().replace("data: {kind: normal, mean: 0.0, std: 1.0}", "data: {kind: npy, path: 'data/**/*.npy'}")


def _record_build(root: Path) -> bool:
    """Load, resolve and key every step as `buildsys build` does, then record the answer from what was read.

    The steps are not run (each is reported unavailable); the keys are made by the
    rebuilder itself, so every file a key digests is noted by the state.
    """
    from buildsys.engine.answer import Outcome
    from buildsys.engine.rebuilder import Rebuilder
    from buildsys.engine.workspace import Workspace
    from buildsys.recipe import loading
    from buildsys.recipe.resolve import resolve
    from buildsys.storage.state import State
    from buildsys.storage.store import Store

    meta = root / "out/.buildsys"
    state = State(meta)
    try:
        recipes, problems = loading.load(root, state, [])
        assert not problems
        graph = resolve(recipes, root, state.reads)
        rebuilder = Rebuilder(Workspace(root), graph, state, Store(meta / "store"))
        for step in graph.steps.values():
            upstream: dict = {}
            for ref in step.inputs.values():
                sid, _, output = ref.partition("#")
                upstream.setdefault(sid, {})[output] = [["x", "0" * 64, 1]]
            rebuilder.key_doc(step, upstream)
        outcomes = [Outcome(sid, "unavailable", "not built here") for sid in graph.steps]
        return noop.record_build(str(meta), SIGNATURE, state.reads, outcomes, 0)
    finally:
        state.close()


def _project(root: Path, recipe: str, files: dict[str, str]) -> Path:
    for rel in ("recipes", "tm", "out/.buildsys"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    (root / "tm/tiny.py").write_text("def tiny(features=4): ...\n")  # found, never imported
    (root / "recipes/tiny.yaml").write_text(recipe)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _age(root)
    return root


@pytest.mark.parametrize("data", ["calibration", "inputs"])
def test_a_file_added_to_a_folder_a_recursive_glob_has_no_match_in_yet_is_seen(tmp_path: Path, monkeypatch,
                                                                                 data: str):
    """`data/**/*.npy` with matches only in data/a/: a file new in data/b/ is a new match."""
    monkeypatch.setattr(noop, "key_sources", list)
    root = _project(tmp_path / "ws", _recipe_with(data), {"data/a/0.npy": "not read here", "data/b/deeper/.keep": ""})
    assert _record_build(root)
    assert check(root) is not None

    (root / "data/b/1.npy").write_bytes(b"a new match")
    assert check(root) is None
    assert not _record_build(root)  # data/b/ changed a moment ago
    _age(root)
    assert _record_build(root)
    assert check(root) is not None
    (root / "data/b/deeper/2.npy").write_bytes(b"a new match, further down")
    assert check(root) is None


BASE = "version: 1\nexport: {opset: 18, exporter: torchscript}\ntolerances:\n  fp32: {atol: 1.0e-4, rtol: 1.0e-3}\n"
EXTENDING = """\
extends: _base.yaml
model: {factory: "tm.tiny:tiny", kwargs: {features: 4}}
inputs:
  - {name: x, dtype: float32, shape: [batch, 3, 8, 8], data: {kind: npy, path: 'inputs/**/*.npy'}}
outputs:
  - name: scores
dims:
  batch: {min: 1, opt: 2, max: 2}
calibration: {data: {kind: images, path: data/calib, preset: imagenet}, samples: 2}
tolerances:
  int8: {min_cosine: 0.9}
targets:
  - {backend: onnxruntime, precision: int8}
"""
ONE_MODEL = {"recipes/_base.yaml": BASE, "inputs/a/0.npy": "input", "inputs/b/.keep": "",
             "data/calib/0.jpg": "image", "data/calib/1.jpg": "image"}

READ_BY_THE_BUILD = {
    "an extends base edited": lambda r, m: (r / "recipes/_base.yaml").write_text(BASE.replace("1.0e-4", "2.0e-4")),
    "a calibration image added": lambda r, m: (r / "data/calib/2.jpg").write_text("image"),
    "a calibration image edited": lambda r, m: (r / "data/calib/0.jpg").write_text("other image"),
    "a data file added in a glob folder without a match yet": lambda r, m: (r / "inputs/b/1.npy").write_text("x"),
    "a matched data file edited": lambda r, m: (r / "inputs/a/0.npy").write_text("other input"),
    "a recipe added": lambda r, m: (r / "recipes/other.yaml").write_text(EXTENDING),
    "a new toolchain version": lambda r, m: m.setattr(
        toolchain, "installed", lambda: {**INSTALLED, "onnxruntime": INSTALLED.get("onnxruntime", "1") + ".1"}),
    "another CPU": lambda r, m: m.setattr(toolchain, "cpu", lambda: {**CPU, "isa": "avx"}),
}


@pytest.mark.parametrize("change", READ_BY_THE_BUILD)
def test_what_the_build_read_is_what_the_answer_is_stamped_by(tmp_path: Path, monkeypatch, change: str):
    """One dependency model: loading, resolving and the keys note what they read, and each change misses."""
    monkeypatch.setattr(noop, "key_sources", list)
    root = _project(tmp_path / "ws", EXTENDING, ONE_MODEL)
    assert _record_build(root)
    assert _record_build(root)  # again, with every digest memoised: a memo hit is a read too
    assert check(root) is not None
    READ_BY_THE_BUILD[change](root, monkeypatch)
    assert check(root) is None


def test_what_the_build_did_not_read_leaves_the_answer_standing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(noop, "key_sources", list)
    root = _project(tmp_path / "ws", EXTENDING, {**ONE_MODEL, "notes/todo.txt": "x", "data/calib/sub/.keep": ""})
    assert _record_build(root)
    (root / "notes/todo.txt").write_text("edited")  # no recipe names it
    (root / "data/calib/sub/3.jpg").write_text("image")  # an images folder's sub-folders are not read
    assert check(root) is not None


def _package(root: Path) -> Path:
    """A stand-in for the buildsys package: key sources and modules no key depends on."""
    for rel in ("__init__.py", "cli.py", "engine/workspace.py", "runners/workers.py", "recipe/resolve.py", "engine/keys.py",
                "engine/rebuilder.py",
                "engine/scheduler.py", "steps/__init__.py", "steps/export.py", "recipe/__init__.py", "reports/html.py",
                "engine/session.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("VERSION = 1\n")
    return root


SOURCE_EDITS = {
    "a step's VERSION bumped": ("steps/export.py", True),
    "the package version": ("__init__.py", True),
    "the resolver": ("recipe/resolve.py", True),
    "the key document": ("engine/keys.py", True),
    "the rebuilder's commit": ("engine/rebuilder.py", False),
    "the recipe reader": ("recipe/__init__.py", True),
    "a step module added": ("steps/quantize.py", True),
    "the command line": ("cli.py", False),
    "the scheduler": ("engine/scheduler.py", False),
    "the workspace": ("engine/workspace.py", False),
    "the workers": ("runners/workers.py", False),
    "a report": ("reports/html.py", False),
    "the session": ("engine/session.py", False),
}


@pytest.mark.parametrize("edit", SOURCE_EDITS)
def test_only_buildsys_sources_that_make_keys_or_the_graph_invalidate_the_answer(ws: Path, tmp_path: Path,
                                                                                 monkeypatch, edit: str):
    monkeypatch.setattr(noop, "key_sources", KEY_SOURCES)  # the fixture left them out
    monkeypatch.setattr(noop, "_PACKAGE", str(_package(tmp_path / "pkg")))
    _age(tmp_path / "pkg")
    record(ws)
    rel, misses = SOURCE_EDITS[edit]
    (tmp_path / "pkg" / rel).write_text("VERSION = 2\n")
    assert (check(ws) is None) == misses


def test_the_code_that_makes_keys_and_the_graph_is_among_the_key_sources():
    """Whoever moves key-making code to another module must add that module to KEY_SOURCES."""
    import inspect

    import buildsys
    from buildsys import recipe
    from buildsys.core import canonical, datafiles, gpu
    from buildsys.engine import keys
    from buildsys.recipe import loading, resolve
    from buildsys.steps import KINDS, step_class
    from buildsys.storage.state import State

    makers = [buildsys, keys.KeyMaker.doc, keys.key_document, keys.step_environment, keys.no_op_environment,
              keys.artifact_digest, resolve.resolve, loading.load, recipe.load_recipe,
              canonical.digest_data, toolchain.versions, gpu.select, toolchain.gpu_fingerprint, State.digest, step_class,
              datafiles.npy_files, toolchain.cpu_class]
    makers += [step_class(path) for path in KINDS.values()]
    stamped = set(noop.key_sources())
    for maker in makers:
        assert os.path.abspath(inspect.getsourcefile(maker)) in stamped, maker
    assert os.path.join(noop._PACKAGE, "core/kinds.py") in stamped  # the table of step classes
    assert not {os.path.join(noop._PACKAGE, m) for m in ("cli.py", "engine/workspace.py", "runners/workers.py",
                                                         "engine/rebuilder.py")} & stamped


def test_glob_folders_reach_as_deep_as_the_pattern(tmp_path: Path):
    for rel in ("data/a/x", "data/b", "data/.hidden", "other"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data/a/up").symlink_to(tmp_path / "data", target_is_directory=True)

    def rel(pattern: str) -> set[str]:
        return {os.path.relpath(p, tmp_path) for p in glob_folders(str(tmp_path), pattern)}

    assert rel("data/*.npy") == {"data"}
    assert rel("data/*/*.npy") == {"data", "data/a", "data/b"}
    assert rel("data/**/*.npy") == {"data", "data/a", "data/a/x", "data/a/up", "data/b"}
    assert rel("data/.*/*.npy") == {"data", "data/a", "data/b", "data/.hidden"}
    assert rel("data/a/x/one.npy") == {"data/a/x/one.npy"}
    assert rel("missing/**/*.npy") == {"missing"}


def test_a_copied_workspace_is_not_answered_from_the_original(ws: Path, tmp_path: Path):
    import shutil

    record(ws)
    copy = tmp_path / "copy"
    shutil.copytree(ws, copy, symlinks=True, copy_function=shutil.copy2)
    (copy / "recipes/a.yaml").write_text("name: a\nedited: 1\n")
    _age(copy)
    assert check(copy) is None  # the manifest's stamps name the original's files
    assert check(ws) is not None


# -- the answer a repeat prints, and which commands are answered from it --------------------------


def _outcomes():
    from buildsys.engine.answer import Outcome

    return [Outcome("m:export", "ran", "key changed", seconds=3.25, verdict=None, note="dynamo"),
            Outcome("m:parity", "cached", "up to date", seconds=0.5, verdict=Verdict.from_json({"passed": 1, "summary": "max abs 1e-6"})),
            Outcome("m:simplify", "cutoff", "output unchanged", seconds=1.5, verdict=Verdict.from_json({"passed": 0})),
            Outcome("m:engine", "unavailable", "no NVIDIA GPU", seconds=0.0004),
            Outcome("m:bench", "skipped", "blocked by m:engine")]


def test_a_repeat_reports_every_step_that_ran_or_was_restored_as_up_to_date_with_its_verdict():
    """What `buildsys build` prints the second time: no seconds, no 'ran', the verdicts kept as they were."""
    assert json.dumps(noop.answer(_outcomes())) == json.dumps([
        {"id": "m:export", "state": "cached", "reason": "up to date", "seconds": 0.0},
        {"id": "m:parity", "state": "cached", "reason": "up to date", "seconds": 0.0,
         "passed": True, "summary": "max abs 1e-6"},
        {"id": "m:simplify", "state": "cached", "reason": "up to date", "seconds": 0.0, "passed": False, "summary": ""},
        {"id": "m:engine", "state": "unavailable", "reason": "no NVIDIA GPU", "seconds": 0.0},
        {"id": "m:bench", "state": "skipped", "reason": "blocked by m:engine", "seconds": 0.0}])


@pytest.mark.parametrize("state", ["failed", "would-run"])
def test_a_build_with_a_step_that_failed_or_would_run_has_no_answer_to_repeat(state: str):
    from buildsys.engine.answer import Outcome

    for at in (0, 2, 5):  # first, among the others, last
        outcomes = _outcomes()
        outcomes.insert(at, Outcome("m:quantize", state, "key changed"))
        assert noop.answer(outcomes) is None, at


def test_a_failed_step_in_a_build_records_nothing_so_the_repeat_runs_it(ws: Path):
    from buildsys.engine.answer import Outcome

    meta = str(ws / "out/.buildsys")
    assert not noop.record_build(meta, SIGNATURE, files(ws), [*_outcomes(), Outcome("m:q", "failed", "boom")], 3)
    assert check(ws) is None and not (ws / "out/.buildsys/noop.json").exists()
    assert noop.record_build(meta, SIGNATURE, files(ws), _outcomes(), 0)
    assert check(ws)["steps"] == noop.answer(_outcomes()) and check(ws)["exit"] == 0


def test_the_store_blob_of_each_output_of_a_step_that_ran_is_stamped(ws: Path):
    """A blob deleted from the store while its artifact under out/ is a copy: the repeat must rebuild."""
    from buildsys.engine.answer import Outcome

    meta = ws / "out/.buildsys"
    copied = meta / "store/cd" / ("cd" + "2" * 62)
    reads = Reads({str(ws / "recipes/a.yaml")})  # out/a/copied.bin is not among the reads
    for state in ("ran", "cached", "cutoff"):
        outputs = {"model": [["copied.bin", "cd" + "2" * 62, 6]]}
        assert noop.record_build(str(meta), SIGNATURE, reads, [Outcome("a:export", state, "", outputs=outputs)], 0)
        assert check(ws) is not None
        copied.rename(copied.with_name("gone"))
        assert check(ws) is None, state
        copied.with_name("gone").rename(copied)
    outputs = {"model": [["copied.bin", "cd" + "2" * 62, 6]]}  # an unavailable step's outputs are not its own
    assert noop.record_build(str(meta), SIGNATURE, reads, [Outcome("a:x", "unavailable", "", outputs=outputs)], 0)
    copied.unlink()
    assert check(ws) is not None


def test_only_a_finished_build_without_problems_or_failed_steps_is_worth_recording():
    from buildsys.core.exitcodes import EXIT_OK, EXIT_PARITY, EXIT_STEP

    assert noop.worth_recording(dry_run=False, problems=False, code=EXIT_OK)
    assert noop.worth_recording(dry_run=False, problems=False, code=EXIT_PARITY)  # a parity failure stays one
    assert not noop.worth_recording(dry_run=True, problems=False, code=EXIT_OK)
    assert not noop.worth_recording(dry_run=False, problems=True, code=EXIT_OK)
    assert not noop.worth_recording(dry_run=False, problems=False, code=EXIT_STEP)


def test_a_build_is_answered_from_the_record_of_the_same_selection_only(ws: Path):
    meta = str(ws / "out/.buildsys")
    sig = noop.signature(["b", "a"], ["parity", "export"], True)
    assert noop.record(meta, sig, files(ws), ANSWER)
    plain = dict(dry_run=False, verbose=False, trims=False)
    assert noop.replay_build(meta, ["a", "b"], ["export", "parity"], True, **plain)["steps"] == ANSWER["steps"]
    assert noop.replay_build(meta, ["a", "b"], ["export", "parity"], False, **plain) is None
    assert noop.replay_build(meta, ["a"], ["export", "parity"], True, **plain) is None
    assert noop.replay_build(meta, ["a", "b"], ["export"], True, **plain) is None
    for flag in ("dry_run", "verbose", "trims"):  # these print or do more than the record holds
        assert noop.replay_build(meta, ["a", "b"], ["export", "parity"], True, **{**plain, flag: True}) is None, flag
    assert noop.record(meta, noop.signature([], None, False), files(ws), {**ANSWER, "exit": 1})
    assert noop.replay_build(meta, [], None, False, **plain)["exit"] == 1
    assert noop.replay_build(meta, [], [], False, **plain)["exit"] == 1  # no --only is an empty --only


def test_status_of_an_up_to_date_selection_is_read_from_the_record_of_its_build(ws: Path):
    meta = str(ws / "out/.buildsys")
    assert noop.replay_status(meta, ["m"]) is None
    assert noop.record(meta, noop.signature(["m"], None, False), files(ws),
                       {"steps": noop.answer(_outcomes()), "exit": 1})
    assert noop.replay_status(meta, ["m"]) == [
        ("m:export", "up to date", ""), ("m:parity", "up to date", ""), ("m:simplify", "failed", ""),
        ("m:engine", "unavailable", "no NVIDIA GPU"), ("m:bench", "blocked", "blocked by m:engine")]
    assert noop.replay_status(meta, []) is None  # another selection's record


def test_each_command_s_record_is_a_file_named_by_fnv1a_of_its_signature(tmp_path: Path):
    assert noop._path("m", noop.signature([], None, False)) == os.path.join("m", "noop.json")
    assert noop._path("m", "a") == os.path.join("m", "noop-af63dc4c8601ec8c.json")  # FNV-1a 64's test vector
    assert noop._path("m", "foobar") == os.path.join("m", "noop-85944171f73967e8.json")


def test_reading_out_itself_stamps_no_folder_above_it(ws: Path):
    """out/ is the build's own: a note added beside it, which no recipe reads, leaves the answer standing."""
    meta = str(ws / "out/.buildsys")
    assert noop.record(meta, SIGNATURE, Reads({str(ws / "out"), str(ws / "out/a/model.onnx")}), ANSWER)
    (ws / "notes.txt").write_text("not read")
    assert check(ws) is not None
    (ws / "out/a/model.onnx").unlink()
    assert check(ws) is None


def test_a_record_of_another_version_or_another_command_is_a_miss(ws: Path):
    record(ws)
    manifest = ws / "out/.buildsys/noop.json"
    entry = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**entry, "version": noop.VERSION - 1}))
    assert check(ws) is None
    manifest.write_text(json.dumps({**entry, "signature": json.dumps([["a"], [], False])}))  # a file copied over
    assert check(ws) is None
    manifest.write_text(json.dumps(entry))
    assert check(ws) is not None


def test_forget_removes_the_records_and_nothing_else(ws: Path):
    meta = ws / "out/.buildsys"
    record(ws)
    assert noop.record(str(meta), json.dumps([["a"], [], False]), files(ws), ANSWER)
    for name in ("notes.json", "noop-notes.txt", "state.sqlite"):
        (meta / name).write_text("kept")
    noop.forget(str(meta))
    assert sorted(n for n in os.listdir(meta) if (meta / n).is_file()) == ["noop-notes.txt", "notes.json",
                                                                             "state.sqlite"]
    noop.forget(str(ws / "missing"))  # no out/.buildsys yet: nothing to forget


def test_the_folders_of_a_workspace_file_read_after_the_outputs_are_stamped(ws: Path):
    """tm/ sorts after out/: the artifacts skipped on the way must not end the walk over what was read."""
    (ws / "tm/sub").mkdir(parents=True)
    (ws / "tm/sub/m.py").write_text("x = 1\n")
    _age(ws)
    meta = str(ws / "out/.buildsys")
    assert noop.record(meta, SIGNATURE, Reads({str(ws / "out/a/model.onnx"), str(ws / "out/a/copied.bin"),
                                               str(ws / "tm/sub/m.py")}), ANSWER)
    assert check(ws) is not None
    (ws / "tm/sub/other.py").write_text("")  # a module beside the model's source
    assert check(ws) is None
