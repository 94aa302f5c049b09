"""The exception kinds of buildsys and the exit status each one maps to.

Every failure a user can cause or meet is a `BuildsysError`; anything else that
escapes is a bug in buildsys itself and is shown with its traceback. A step that
fails or misses its tolerances is not an exception of the build: it is the step's
outcome (buildsys.engine.answer), and the build's exit status says so
(buildsys.engine.status); `StepError` is how a step's own code reports a failure.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from buildsys.core.exitcodes import EXIT_STEP, EXIT_USAGE


class BuildsysError(Exception):
    """Root of the errors buildsys reports to the user (never a bug)."""

    exit_code = EXIT_STEP

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, located as precisely as the input allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        head = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        if self.hint:
            head += f"\n  hint: {self.hint}"
        return head


class RecipeError(BuildsysError):
    """One or more recipes are wrong; every problem found is reported at once."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(p.render() for p in self.problems))

    def render(self) -> str:
        n = len(self.problems)
        return "\n".join(f"error: {p.render()}" for p in self.problems) + (
            f"\n{n} problem{'s' if n != 1 else ''} found" if n > 1 else ""
        )


class UsageError(BuildsysError):
    """The command line asks for something that does not exist or does not fit."""

    exit_code = EXIT_USAGE


class StepError(Exception):
    """Raised inside a step to fail it with a message meant for the user.

    `field` names the recipe field the failure is about (for example
    `export.opset`), so the message can point at it in the recipe.
    """

    def __init__(self, message: str, hint: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field


class StorageError(BuildsysError):
    """The disk refused a write buildsys needs: read-only, full, or not permitted."""

    exit_code = EXIT_STEP


_STORAGE_HINTS: dict[int | None, str] = {
    errno.EROFS: "the file system is mounted read-only; remount it writable or build in a writable copy",
    errno.ENOSPC: "the disk is full; free some space (`buildsys clean --cache` empties this workspace's store) "
                  "and run the command again",
    errno.EDQUOT: "the disk quota is used up; free some space and run the command again",
    errno.EFBIG: "the file system refused a file this large",
    errno.EACCES: "check the owner and permissions of the folder",
    errno.EPERM: "check the owner and permissions of the folder",
    errno.EIO: "the disk reported an input/output error; check it before building again",
}


def storage_error(exc: OSError) -> StorageError | None:
    """A one-line error for an OSError the disk raised (read-only, full, not permitted), else None."""
    hint = _STORAGE_HINTS.get(exc.errno)
    if hint is None:
        return None
    cause = (exc.strerror or str(exc)).rstrip(".")
    where = exc.filename if exc.filename is not None else "a file under out/"
    verb = "write" if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "use"
    return StorageError(f"cannot {verb} {where}: {cause[:1].lower()}{cause[1:]}", hint=hint)
