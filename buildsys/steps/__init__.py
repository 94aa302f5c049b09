"""Step kinds: one module each; `KINDS` (buildsys.kinds) maps a kind to its class without importing it.

Step modules import only the standard library at their top, so the orchestrator
can read a step's VERSION and TOOLS cheaply; heavy libraries are imported inside
`run`, which executes in a worker process.
"""
from __future__ import annotations

import importlib

from buildsys.kinds import KINDS  # noqa: F401  (the table lives below the resolver, which reads it)


def step_class(kind_path: str):
    """Import a step class from `module:Class` (a KINDS value or a test's own step)."""
    module, _, name = kind_path.partition(":")
    return getattr(importlib.import_module(module), name)
