"""Shared by every test: tests marked `gpu` are skipped, with the reason, where no NVIDIA GPU and TensorRT are."""
from __future__ import annotations

import importlib.util

import pytest


def gpu_missing() -> str | None:
    """Why this machine cannot run the `gpu` tests, or None when it can."""
    from buildsys import gpu

    reason = gpu.absent_reason()
    if reason:
        return reason
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install '.[gpu]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    reason = gpu_missing()
    if reason:
        skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU and TensorRT: {reason}")
        for item in marked:
            item.add_marker(skip)
