"""The build state database and the resolved-recipe cache that lives in it."""
from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from buildsys import recipe as recipe_api
from buildsys.core.errors import RecipeError
from buildsys.recipe import loading
from buildsys.storage.state import State, Trace
from tests.recipe.test_validate import MINIMAL, make_workspace


def _trace(i: int) -> Trace:
    return Trace(f"r{i}:export", f"{i:064x}", {"step": "export", "params": {"opset": (17, 18)}},
                 {"files": {"m.py": "d" * 64}} if i % 2 else {}, {"model": [["model.onnx", "e" * 64, 3]]},
                 {"passed": True} if i % 3 == 0 else None, 1.5)


def _filled(tmp_path: Path, n: int = 20) -> State:
    state = State(tmp_path / "meta")
    for i in range(n):
        state.record(_trace(i), f"deps{i}")
    return state


# -- opening -----------------------------------------------------------------------------------------


def test_a_read_only_state_creates_and_writes_nothing(tmp_path: Path):
    """What `status` and `explain` open: the traces are read, nothing is created or memoised."""
    empty = State(tmp_path / "never-built", read_only=True)
    assert dict(empty.traces()) == {} and empty.failures() == {}
    empty.close()
    assert not (tmp_path / "never-built").exists()
    _filled(tmp_path).close()
    (tmp_path / "f.txt").write_text("x")
    os.utime(tmp_path / "f.txt", (1e9, 1e9))  # settled: a writable state would remember its digest
    state = State(tmp_path / "meta", read_only=True)
    assert state.traces()["r3:export"].key == _trace(3).key
    assert state.digest(tmp_path / "f.txt")  # read, not remembered
    state.cache_recipes([("a.yaml", [1], "{}")])
    state.close()
    again = State(tmp_path / "meta")
    assert again.cached_recipes() == {} and again._load_files() == {}
    again.close()



@pytest.mark.parametrize("damage", ["garbage", "truncated", "header only"])
def test_a_damaged_database_is_set_aside_with_a_warning(tmp_path: Path, damage: str, capsys):
    _filled(tmp_path, 200).close()
    db = tmp_path / "meta/state.sqlite"
    data = db.read_bytes()
    db.write_bytes({"garbage": random.Random(7).randbytes(len(data)), "truncated": data[: len(data) // 2],
                    "header only": data[:100]}[damage])
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    state = State(tmp_path / "meta")
    assert len(state.traces()) == 0
    assert list(db.parent.glob("state.sqlite.*.bad"))
    err = capsys.readouterr().err
    assert "warning: build state" in err and "set aside as" in err


def test_another_schema_version_is_not_set_aside(tmp_path: Path, capsys):
    _filled(tmp_path).close()
    db = sqlite3.connect(tmp_path / "meta/state.sqlite", isolation_level=None)
    db.execute("UPDATE meta SET v = '0' WHERE k = 'schema'")  # the error text says "is not"
    db.close()
    state = State(tmp_path / "meta")
    assert len(state.traces()) == 20
    assert not list((tmp_path / "meta").glob("*.bad"))
    assert capsys.readouterr().err == ""


def test_an_empty_file_is_an_empty_database(tmp_path: Path, capsys):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/state.sqlite").write_bytes(b"")
    assert len(State(tmp_path / "meta").traces()) == 0
    assert not list((tmp_path / "meta").glob("*.bad")) and capsys.readouterr().err == ""


# -- traces ------------------------------------------------------------------------------------------


def test_traces_read_back_equal_what_was_recorded(tmp_path: Path):
    state = _filled(tmp_path)
    traces = state.traces()
    assert sorted(traces) == sorted(f"r{i}:export" for i in range(20)) and len(traces) == 20
    for i in range(20):
        t = traces[f"r{i}:export"]
        assert (t.key, t.deps, t.outputs, t.verdict, t.seconds) == (
            f"{i:064x}", _trace(i).deps, _trace(i).outputs, _trace(i).verdict, 1.5)
        assert t.doc == {"step": "export", "params": {"opset": [17, 18]}}
    assert "r99:export" not in traces and traces.get("r99:export") is None


def test_only_the_traces_asked_for_are_read(tmp_path: Path):
    state = _filled(tmp_path)
    some = state.traces(["r3:export", "r5:export", "nothing:here"])
    assert sorted(some) == ["r3:export", "r5:export"]
    assert some["r5:export"].deps == {"files": {"m.py": "d" * 64}}
    many = [f"r{i}:export" for i in range(20)] * 60  # more than one query's worth of parameters
    assert len(state.traces(many)) == 20


def test_a_trace_read_back_is_recorded_again_unchanged(tmp_path: Path):
    state = _filled(tmp_path)
    before = state.db.execute("SELECT doc, deps, outputs, verdict FROM traces WHERE step = 'r3:export'").fetchone()
    state.record(state.traces()["r3:export"], "deps3")  # fields never decoded: written back as read
    assert state.db.execute("SELECT doc, deps, outputs, verdict FROM traces WHERE step = 'r3:export'"
                            ).fetchone() == before
    assert state.actions(f"{3:064x}")[0][1] == _trace(3).outputs


# -- the resolved-recipe cache --------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "ws").mkdir()
    root = make_workspace(tmp_path / "ws")
    for i in range(5):
        (root / f"recipes/r{i}.yaml").write_text(MINIMAL)
    return root


@pytest.fixture
def parsed(monkeypatch) -> list[str]:
    """The recipe files read from YAML (rather than taken from the cache), in order."""
    seen: list[str] = []
    real = recipe_api.load_recipe

    def counting(path, workspace):
        seen.append(Path(path).name)
        return real(path, workspace)

    monkeypatch.setattr(recipe_api, "load_recipe", counting)
    return seen


def _names(recipes) -> list[str]:
    return [r.name for r in recipes]


def test_only_recipes_whose_files_moved_are_read_again(ws: Path, parsed: list[str]):
    state = State(ws / "out/.buildsys")
    assert _names(loading.load(ws, state, [])[0]) == [f"r{i}" for i in range(5)]
    assert parsed == [f"r{i}.yaml" for i in range(5)]
    parsed.clear()
    assert _names(loading.load(ws, state, [])[0]) == [f"r{i}" for i in range(5)]
    assert parsed == []
    (ws / "recipes/r2.yaml").write_text(MINIMAL.replace("max: 4", "max: 8"))
    recipes, problems = loading.load(ws, state, [])
    assert parsed == ["r2.yaml"] and problems == []
    assert _names(recipes) == [f"r{i}" for i in range(5)]
    assert recipes[2].profile_dims()["batch"].max == 8


def test_recipes_cached_under_other_reading_rules_are_read_again(ws: Path, parsed: list[str], monkeypatch):
    state = State(ws / "out/.buildsys")
    loading.load(ws, state, [])
    parsed.clear()
    monkeypatch.setattr(loading, "READING_VERSION", loading.READING_VERSION + 1)
    assert _names(loading.load(ws, state, [])[0]) == [f"r{i}" for i in range(5)]
    assert parsed == [f"r{i}.yaml" for i in range(5)]


def test_a_broken_recipe_among_cached_ones(ws: Path, parsed: list[str]):
    state = State(ws / "out/.buildsys")
    loading.load(ws, state, [])
    parsed.clear()
    (ws / "recipes/r1.yaml").write_text(MINIMAL + "tolerance: {}\n")
    with pytest.raises(RecipeError) as exc:
        loading.load(ws, state, [])
    assert "tolerance" in exc.value.render() and parsed == ["r1.yaml"]
    recipes, problems = loading.load(ws, state, [], keep_going=True)
    assert _names(recipes) == ["r0", "r2", "r3", "r4"] and len(problems) == 1


def test_a_name_clash_with_a_cached_recipe_names_both(ws: Path, parsed: list[str]):
    state = State(ws / "out/.buildsys")
    loading.load(ws, state, [])
    (ws / "recipes/r4.yaml").write_text("name: r0\n" + MINIMAL)
    recipes, problems = loading.load(ws, state, [], keep_going=True)
    assert _names(recipes) == ["r1", "r2", "r3"]
    assert sorted(p.file for p in problems) == ["recipes/r0.yaml", "recipes/r4.yaml"]
    assert all("also used by" in p.message for p in problems)
    # fixed again: both build, and neither is left out of the cache
    (ws / "recipes/r4.yaml").write_text(MINIMAL)
    assert _names(loading.load(ws, state, [])[0]) == [f"r{i}" for i in range(5)]
    parsed.clear()
    assert _names(loading.load(ws, state, [])[0]) == [f"r{i}" for i in range(5)] and parsed == []


def test_a_deleted_recipe_leaves_the_cache(ws: Path):
    state = State(ws / "out/.buildsys")
    loading.load(ws, state, [])
    (ws / "recipes/r3.yaml").unlink()
    assert _names(loading.load(ws, state, [])[0]) == ["r0", "r1", "r2", "r4"]
    assert sorted(state.cached_recipes()) == [f"recipes/r{i}.yaml" for i in (0, 1, 2, 4)]
