"""What a build's outcomes mean to the user: the command's exit status and each step's status word.

It imports nothing but buildsys.core.exitcodes (and buildsys.core.verdict for its types): the no-op
answer maps the steps it remembers with the same function as a full `status`, before
anything else is loaded.
"""
from __future__ import annotations

from buildsys.core.exitcodes import EXIT_OK, EXIT_PARITY, EXIT_STEP, EXIT_USAGE

TYPE_CHECKING = False  # typing itself is an import the no-op answer does without
if TYPE_CHECKING:
    from buildsys.core.verdict import Verdict

DONE = ("ran", "cached", "cutoff")  # states that leave the step's outputs in place


def exit_status(states_and_verdicts, require_all: bool, problems: bool = False) -> int:
    """The exit status of a build whose steps ended as (state, verdict) pairs."""
    pairs = list(states_and_verdicts)
    if any(state == "failed" for state, _ in pairs):
        return EXIT_STEP
    if require_all and any(state == "unavailable" for state, _ in pairs):
        return EXIT_STEP
    code = EXIT_OK
    if any(verdict is not None and not verdict for _, verdict in pairs):
        code = EXIT_PARITY
    return max(code, EXIT_USAGE) if problems else code


def artifacts_built(code: int) -> bool:
    """Whether a build that exited `code` left its artifacts in place (a parity failure does)."""
    return code in (EXIT_OK, EXIT_PARITY)


def check_status(outcomes, problems: bool, gate_failed: bool) -> int:
    """What `check` exits with: a step failed, a recipe could not be read, the parity gate failed, or 0.

    The gate fails on a figure out of tolerance, a regression, or a check that could not run;
    the reports decide that, and write the status this returns.
    """
    if any(o.state == "failed" for o in outcomes):
        return EXIT_STEP
    if problems:
        return EXIT_USAGE
    return EXIT_PARITY if gate_failed else EXIT_OK


def status_word(state: str, reason: str, verdict: Verdict | None, failure: str | None = None) -> tuple[str, str]:
    """(word, detail) for `status` and `explain`: up to date, stale, failed, unavailable or blocked.

    `failure` is the recorded failure of the step's current key, when there is one.
    """
    if state in ("cached", "cutoff"):
        if verdict is not None and not verdict:
            return "failed", "parity failed" if verdict.summary is None else verdict.summary
        return "up to date", ""
    if state == "unavailable":
        return "unavailable", reason
    if state == "skipped":
        return "blocked", reason
    if failure is not None:
        return "failed", failure
    return "stale", reason
