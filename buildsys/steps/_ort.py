"""ONNX Runtime sessions configured for a shared, small machine."""
from __future__ import annotations

from pathlib import Path


def session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # With spinning on, ORT's idle threads keep the cores busy and starve torch
    # when both live in one worker process (3x slower on 2 cores).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def cpu_session(path: Path, threads: int, so=None):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), so or session_options(threads), providers=["CPUExecutionProvider"])
