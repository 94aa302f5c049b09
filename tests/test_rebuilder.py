"""Rebuilder and scheduler scenarios, driven by counting steps (no models, milliseconds)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from buildsys.core.verdict import Verdict
from buildsys.recipe.resolve import Graph, StepSpec, with_facts
from tests.fakes import build_graph

COUNTING = "tests.fakes:Counting"


def chain(text_a="a", text_b="b", text_c="c", source=None, extra=None, fail_b=False, passes=None):
    """export-like A -> B -> C, plus an independent D; C is gated on B's verdict when judged."""
    a = StepSpec("r:a", "r", "a", COUNTING, {"id": "r:a", "text": text_a, **({"source": source} if source else {})},
                 outputs={"out": "r/a.txt"})
    b_params = {"id": "r:b", "text": text_b, **({"fail": True} if fail_b else {})}
    if passes is not None:
        b_params["passes"] = passes
    b = StepSpec("r:b", "r", "b", COUNTING, b_params, inputs={"x": "r:a#out"}, outputs={"out": "r/b.txt"})
    c = StepSpec("r:c", "r", "c", COUNTING, {"id": "r:c", "text": text_c}, inputs={"x": "r:b#out"},
                 gates=("r:b",), outputs={"out": "r/c.txt"})
    d = StepSpec("s:d", "s", "d", COUNTING, {"id": "s:d", "text": extra or "d"}, outputs={"out": "s/d.txt"})
    return Graph({s.id: s for s in (a, b, c, d)})


def build(root: Path, graph: Graph, keep_going=False, dry_run=False, only=None):
    return build_graph(root, graph, keep_going=keep_going, dry_run=dry_run, only=only)


def states(outcomes):
    return {k: o.state for k, o in outcomes.items()}


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "model.py").write_text("x = 1\n")
    return tmp_path


def test_first_build_runs_everything_and_second_runs_nothing(ws):
    out, ran = build(ws, chain())
    assert sorted(ran) == ["r:a", "r:b", "r:c", "s:d"]
    assert (ws / "out/r/c.txt").read_text() == "c|b|a"
    out, ran = build(ws, chain())
    assert ran == []
    assert set(states(out).values()) == {"cached"}


def test_changing_a_downstream_parameter_reruns_only_that_step(ws):
    build(ws, chain())
    out, ran = build(ws, chain(text_c="c2"))
    assert ran == ["r:c"]
    assert out["r:c"].reason == "text: c → c2"
    assert (ws / "out/r/c.txt").read_text() == "c2|b|a"


def test_changing_an_upstream_parameter_reruns_it_and_what_follows(ws):
    build(ws, chain())
    out, ran = build(ws, chain(text_a="a2"))
    assert ran == ["r:a", "r:b", "r:c"]
    assert out["r:b"].reason == "input x changed (from r:a)"
    assert out["s:d"].state == "cached"


def test_reverting_a_change_is_a_cache_hit(ws):
    build(ws, chain())
    build(ws, chain(text_a="a2"))
    out, ran = build(ws, chain())
    assert ran == []
    assert (ws / "out/r/c.txt").read_text() == "c|b|a"
    assert out["r:a"].reason.startswith("restored from the cache")


def test_identical_bytes_upstream_cut_off_downstream(ws):
    # B's output does not depend on its own text here: same bytes -> C is cut off.
    build(ws, chain(text_b=""))
    g = chain(text_b="")
    g.steps["r:b"].params["unused"] = 1  # a parameter change that does not change B's output
    out, ran = build(ws, g)
    assert ran == ["r:b"]
    assert out["r:c"].state == "cutoff"


def test_touching_a_source_without_changing_it_runs_nothing(ws):
    build(ws, chain(source="model.py"))
    src = ws / "model.py"
    os.utime(src, (time.time() + 5, time.time() + 5))
    out, ran = build(ws, chain(source="model.py"))
    assert ran == []


def test_editing_a_discovered_source_reruns_its_step(ws):
    build(ws, chain(source="model.py"))
    (ws / "model.py").write_text("x = 2\n")
    out, ran = build(ws, chain(source="model.py"))
    assert ran == ["r:a", "r:b", "r:c"]  # a writes the source text, so its output changes
    assert out["r:a"].reason == "source model.py changed"


def test_failed_step_skips_its_dependents_and_keep_going_builds_the_rest(ws):
    out, ran = build(ws, chain(fail_b=True), keep_going=True)
    assert out["r:b"].state == "failed"
    assert "asked to fail" in out["r:b"].message and "hint: remove fail: true" in out["r:b"].message
    assert out["r:c"].state == "skipped" and out["r:c"].reason == "blocked: r:b failed"
    assert out["s:d"].state == "ran"
    # a failure is never cached: the next build tries again
    out, ran = build(ws, chain(fail_b=True), keep_going=True)
    assert ran == ["r:b"]


def test_without_keep_going_the_build_stops_after_a_failure(ws):
    g = chain(fail_b=True)
    out, ran = build(ws, g)
    assert out["r:b"].state == "failed"
    assert out["r:c"].state == "skipped"


def test_a_failed_verdict_blocks_gated_steps_and_is_kept(ws):
    out, ran = build(ws, chain(passes=False), keep_going=True)
    assert out["r:b"].verdict == Verdict(False, "judged")
    assert out["r:c"].state == "skipped" and "failed parity" in out["r:c"].reason
    out, ran = build(ws, chain(passes=False), keep_going=True)
    assert "r:b" not in ran and out["r:b"].verdict == Verdict(False, "judged")  # as the trace kept it


def test_deleted_output_is_restored_from_the_store_without_running(ws):
    build(ws, chain())
    (ws / "out/r/b.txt").unlink()
    out, ran = build(ws, chain())
    assert ran == []
    assert (ws / "out/r/b.txt").read_text() == "b|a"


def test_damaged_store_entry_is_detected_and_rebuilt(ws):
    build(ws, chain())
    build(ws, chain(text_a="a2"))
    store = ws / "out/.buildsys/store"
    # damage every blob, then go back to the first configuration: restore must verify and rebuild
    for blob in store.rglob("*"):
        if blob.is_file():
            os.chmod(blob, 0o644)
            blob.write_text("garbage")
    out, ran = build(ws, chain())
    # out/ files share the blobs' inodes, so s:d's output was damaged too: all four re-run
    assert sorted(ran) == ["r:a", "r:b", "r:c", "s:d"]
    assert (ws / "out/r/c.txt").read_text() == "c|b|a"
    assert (ws / "out/s/d.txt").read_text() == "d"


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip"])
def test_damaged_entry_restored_from_the_action_cache_is_a_miss(ws, damage):
    build(ws, chain())
    build(ws, chain(text_c="c2"))
    blob = next(p for p in (ws / "out/.buildsys/store").rglob("*") if p.is_file() and p.read_text() == "c|b|a")
    os.chmod(blob, 0o644)
    data = blob.read_bytes()
    blob.write_bytes({"truncate": data[:2], "empty": b"", "flip": bytes([data[0] ^ 1]) + data[1:]}[damage])
    out, ran = build(ws, chain())  # back to c: the action cache has it, but its blob is bad
    assert ran == ["r:c"]
    assert (ws / "out/r/c.txt").read_text() == "c|b|a"


def test_an_output_folder_linked_outside_out_is_refused(ws, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (ws / "out").mkdir()
    (ws / "out/r").symlink_to(elsewhere)
    out, ran = build(ws, chain(), keep_going=True)
    assert out["r:a"].state == "failed"
    assert "outside" in out["r:a"].message and "buildsys writes only under out/" in out["r:a"].message
    assert "r:a" not in ran and out["s:d"].state == "ran"
    assert list(elsewhere.iterdir()) == []


def test_dry_run_runs_nothing_and_says_what_would_run(ws):
    build(ws, chain())
    out, ran = build(ws, chain(text_a="a2"), dry_run=True)
    assert ran == []
    assert out["r:a"].state == "would-run" and out["r:a"].reason == "text: a → a2"
    assert out["r:b"].state == "would-run" and out["r:b"].reason == "upstream r:a would run"


def test_only_builds_the_named_step_and_what_it_needs(ws):
    out, ran = build(ws, chain(), only=["b"])
    assert sorted(ran) == ["r:a", "r:b"]


def test_unavailable_step_is_reported_with_its_reason(ws):
    g = chain()
    d = g.steps["s:d"]
    g.steps["s:d"] = with_facts(StepSpec(d.id, d.recipe, d.name, "tests.fakes:Unavailable", d.params, outputs=d.outputs))
    out, ran = build(ws, g)
    assert out["s:d"].state == "unavailable" and out["s:d"].reason == "no such device on this machine"
    assert "s:d" not in ran


def test_gpu_steps_run_one_at_a_time_and_cpu_steps_beside_them(ws):
    from buildsys.runners.workers import WorkerPool

    steps = [StepSpec(f"{r}:engine", r, "engine", "tests.fakes:OnGpu", {"id": f"{r}:engine", "sleep": 1.0},
                      outputs={"out": f"{r}/engine.txt"}) for r in ("a", "b")]
    steps.append(StepSpec("c:cpu", "c", "cpu", "tests.fakes:Timed", {"id": "c:cpu", "sleep": 1.0},
                          outputs={"out": "c/cpu.txt"}))
    graph = Graph({s.id: s for s in steps})
    pool = WorkerPool(2, 1, str(ws))
    try:
        outcomes, _ = build_graph(ws, graph, runner=pool)
    finally:
        pool.shutdown()
    assert {o.step: o.state for o in outcomes.values()} == {"a:engine": "ran", "b:engine": "ran", "c:cpu": "ran"}
    spans = {sid: (float(t0), float(t1)) for sid, t0, t1 in
             (line.split() for line in (ws / "times.log").read_text().splitlines())}
    (a0, a1), (b0, b1) = spans["a:engine"], spans["b:engine"]
    assert a1 <= b0 or b1 <= a0, "two GPU steps ran at once"
    c0, c1 = spans["c:cpu"]
    assert any(c0 < e1 and e0 < c1 for e0, e1 in (spans["a:engine"], spans["b:engine"])), \
        "the CPU step waited for the GPU"
