"""A verdict reads and writes the JSON documents as they were, and is truthy exactly when it passed."""
from __future__ import annotations

import json

import pytest

from buildsys.core.verdict import Verdict, to_json


@pytest.mark.parametrize("text", [
    '{"passed": false, "summary": "fp32 FAILED: cosine 0.2 < 0.99"}',  # a parity step's verdict
    '{"passed": true, "summary": "2 tracer warnings", "tracer_warnings": {"count": 2, "listed": []}}',  # export's
    '{"passed": false, "failures": ["shape [2] != reference [3]"]}',  # one output's verdict, cut short
    '{"passed": false, "failures": ["rows in another order"], "permuted": true}',
])
def test_a_document_read_and_written_again_is_the_same_text(text):
    assert json.dumps(Verdict.from_json(json.loads(text)).to_json()) == text


def test_it_is_truthy_exactly_when_it_passed_and_says_why_it_failed():
    figures = {"shape": [2], "passed": False, "failures": ["cosine 0.5 < 0.99"], "cosine": 0.5}
    v = Verdict.read(figures)
    assert not v and v.failures == ("cosine 0.5 < 0.99",) and v.details == {"shape": [2], "cosine": 0.5}
    assert Verdict(True, "ok") and Verdict(True, "ok") == Verdict.from_json({"passed": True, "summary": "ok"})
    assert not Verdict.read({"shape": [2]})  # judged figures that say nothing did not pass
    assert Verdict.from_json({"id": "r:export", "state": "cached"}) is None  # a step row without a verdict
    assert Verdict.from_json(None) is None and to_json(None) is None


def test_a_build_row_shows_only_passed_and_the_summary():
    v = Verdict(True, None, details={"tracer_warnings": {"count": 1}})
    assert v.brief().to_json() == {"passed": True, "summary": ""}


def test_it_cannot_be_changed():
    v = Verdict(False, "bad")
    with pytest.raises(AttributeError):
        v.passed = True  # type: ignore[misc]
    assert not v
