"""Jobs and answers cross pipes and a cluster as plain data; outcomes read the same from a build and from its no-op."""
from __future__ import annotations

import pickle

import pytest

from buildsys.core.exitcodes import EXIT_OK, EXIT_PARITY, EXIT_STEP, EXIT_USAGE
from buildsys.core.verdict import Verdict
from buildsys.engine.answer import Job, Outcome, StepAnswer
from buildsys.engine.status import check_status, exit_status, status_word


def test_a_job_and_its_answer_survive_the_pipe():
    job = Job(id="r:export", kind_path="m:C", params={"opset": 17}, workspace="/w", scratch="/w/tmp/x",
              inputs={"model": "/w/out/r/model.onnx"},
              artifacts={"model": ("model.onnx", [["model.onnx", "a" * 64, 3]])},
              files={}, outputs={"model": "model.onnx"}, log="/w/out/r/logs/export.log", device="gpu",
              lane="torch", threads=2)
    wire = pickle.loads(pickle.dumps(job.to_wire()))  # what a worker receives
    assert wire["lane"] == "torch" and wire["threads"] == 2  # read by buildsys.runners.worker and the step's context
    assert Job.from_wire(wire) == job
    answer = StepAnswer(ok=True, seconds=1.5, outputs={"model": [["model.onnx", "a" * 64, 3]]}, note="kept fp32")
    assert StepAnswer.from_wire(pickle.loads(pickle.dumps(answer.to_wire()))) == answer


def test_a_failure_answer_from_a_worker_keeps_its_hint_and_field():
    wire = {"ok": False, "error": "opset 99 is not supported", "hint": "use 17", "field": "export.opset",
            "seconds": 0.2, "deps": None, "verdict": None}
    answer = StepAnswer.from_wire(wire)
    assert (answer.ok, answer.error, answer.hint, answer.field, answer.deps) == \
        (False, "opset 99 is not supported", "use 17", "export.opset", {})


@pytest.mark.parametrize("outcome, word", [
    (Outcome("r:parity[int8]", "cached", "up to date", verdict=Verdict(False, "cosine 0.2")),
     ("failed", "cosine 0.2")),
    (Outcome("r:parity[fp32]", "cached", "up to date", verdict=Verdict(True, "ok")), ("up to date", "")),
    (Outcome("r:engine[tensorrt-fp16]", "unavailable", "no GPU"), ("unavailable", "no GPU")),
    (Outcome("r:engine[onnxruntime-int8]", "skipped", "blocked: r:parity[int8] failed parity"),
     ("blocked", "blocked: r:parity[int8] failed parity")),
])
def test_status_reads_a_build_and_its_remembered_no_op_alike(outcome, word):
    remembered = outcome.as_json()  # what the no-op answer keeps of a step
    assert status_word(outcome.state, outcome.reason, outcome.verdict) == word
    assert status_word(remembered["state"], remembered["reason"],
                       Verdict.from_json(remembered)) == word


def test_a_stale_step_is_failed_only_when_its_current_key_failed():
    o = Outcome("r:export", "would-run", "export.opset: 17 → 18")
    assert status_word(o.state, o.reason, None) == ("stale", "export.opset: 17 → 18")
    assert status_word(o.state, o.reason, None, "boom (log: out/r/logs/export.log)")[0] == "failed"


@pytest.mark.parametrize("pairs, require_all, problems, code", [
    ([("ran", None), ("cached", Verdict(True))], False, False, EXIT_OK),
    ([("cached", Verdict(False))], False, False, EXIT_PARITY),
    ([("cached", Verdict(False))], False, True, EXIT_USAGE),
    ([("failed", None), ("cached", Verdict(False))], False, True, EXIT_STEP),
    ([("unavailable", None)], False, False, EXIT_OK),
    ([("unavailable", None)], True, False, EXIT_STEP),
])
def test_exit_status(pairs, require_all, problems, code):
    assert exit_status(pairs, require_all, problems) == code


@pytest.mark.parametrize("states, problems, gate_failed, code", [
    (["ran", "cached"], False, False, EXIT_OK),
    (["ran"], False, True, EXIT_PARITY),  # a figure out of tolerance, a regression, a check that could not run
    (["ran"], True, True, EXIT_USAGE),  # a recipe that could not be read outranks the gate
    (["failed", "ran"], True, True, EXIT_STEP),  # a failed step outranks both
    (["unavailable"], False, False, EXIT_OK),  # check never requires every backend
])
def test_check_status(states, problems, gate_failed, code):
    outcomes = [Outcome(f"r:s{i}", state, "") for i, state in enumerate(states)]
    assert check_status(outcomes, problems, gate_failed) == code
