"""The harness around every step: what a step's log holds."""
from __future__ import annotations

import os

from buildsys.steps.base import Step, StepResult

WARNING = "2026-12-06 10:00:00.1 [W:onnxruntime:, env.cc:11] No registered plugin EP device found"


class Colourful(Step):
    """Writes as ONNX Runtime does on a terminal: its warnings in colour, from native code (fd 2)."""

    KIND = "colourful"

    def run(self) -> StepResult:
        os.write(2, f"\x1b[0;93m{WARNING}\x1b[m\n".encode())
        print("\x1b[1mplain\x1b[0m text \x1b]8;;https://example.com\x07link\x1b]8;;\x07")
        (self.ctx.scratch / "out.txt").write_text("done")
        return StepResult(summary="\x1b[32mok\x1b[0m")


def test_a_steps_log_holds_no_terminal_colour_codes(tmp_path, capfd):
    from buildsys.engine.stepjob import run_job

    log = tmp_path / "logs" / "r.log"
    log.parent.mkdir()
    log.write_bytes(b"an earlier run\n")
    with capfd.disabled():  # the step's print goes to fd 1, as in a worker, not to pytest's capture
        answer = run_job({"id": "r:colourful", "kind_path": f"{__name__}:Colourful", "params": {},
                          "workspace": str(tmp_path), "scratch": str(tmp_path / "s"), "inputs": {}, "files": {},
                          "outputs": {"out": "out.txt"}, "log": str(log)})
    assert answer["ok"], answer
    text = log.read_text()
    assert "\x1b" not in text
    assert f"\n{WARNING}\n" in text and "plain text link" in text
    assert text.startswith("an earlier run\n== r:colourful")
