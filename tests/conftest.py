"""Shared by every test: tests marked `gpu` are skipped, with the reason, where no NVIDIA GPU and TensorRT are."""
from __future__ import annotations

import pytest


def gpu_missing() -> str | None:
    """Why this machine cannot run the `gpu` tests, or None when it can.

    The reasons are the TensorRT step's own: no GPU, GPU packages that `make`
    could not install, TensorRT's bindings without its libraries, a driver too
    old for its CUDA.
    """
    from buildsys.core import gpu
    from buildsys.steps.engine_tensorrt import tensorrt_missing

    return gpu.absent_reason() or tensorrt_missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    reason = gpu_missing()
    if reason:
        skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU and TensorRT: {reason}")
        for item in marked:
            item.add_marker(skip)
