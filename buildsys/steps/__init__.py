"""Step kinds: one module each; `KINDS` (buildsys.core.kinds) maps a kind to its class without importing it.

Step modules import only the standard library at their top, so the orchestrator
can read a step's VERSION and TOOLS cheaply; heavy libraries are imported inside
`run`, which executes in a worker process.
"""
from __future__ import annotations

from buildsys.core.kinds import (
    KINDS,  # noqa: F401  (the table lives below the resolver, which reads it)
    step_class,  # noqa: F401  (the resolver reads each class's facts once)
)
