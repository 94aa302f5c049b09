"""The fingerprint of a process: what a step could leave changed in the interpreter it ran in.

tests/e2e/test_resident.py writes this file into a workspace as `probe.py`, whose
steps run in the resident process before and after each resident step; the
tests import it directly to show that each kind of change shows.
"""
import hashlib
import inspect
import json
import logging
import os
import random
import signal
import sys
import warnings

from buildsys.steps.base import Step, StepResult

# The libraries whose functions and classes steps compute with: a step that replaces one of
# them (np.mean = ..., torch.nn.functional.relu = ...) changes what every later step computes.
LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnxsim", "onnxoptimizer", "polygraphy", "buildsys")
TORCH_MODULES = ("torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.linalg", "torch.fft",
                 "torch.special", "torch.onnx")
# torch.backends flags (module attributes) and the global switches that have getters.
TORCH_FLAGS = (("cudnn", "enabled"), ("cudnn", "benchmark"), ("cudnn", "deterministic"), ("cudnn", "allow_tf32"),
               ("mkldnn", "enabled"), ("mkl", "is_available"), ("nnpack", "enabled"), ("opt_einsum", "enabled"),
               ("opt_einsum", "strategy"), ("cuda.matmul", "allow_tf32"),
               ("cuda.matmul", "allow_fp16_reduced_precision_reduction"),
               ("cuda.matmul", "allow_bf16_reduced_precision_reduction"))


def _digest(value) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()


def attributes() -> dict:
    """`module.name` -> id of the object bound there, for the libraries' public and private attributes.

    Identities, so a replaced function shows while one the process only loaded later
    (a lazy attribute, a new module) is not a change: `changes` compares names present in
    both. None is kept as None: a name bound to None until first use is a cache, filled once.
    """
    found = {}
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        if module is None or not (top in LIBRARIES or name in TORCH_MODULES):
            continue
        for attr, value in list(vars(module).items()):
            if not (attr.startswith("__") and attr.endswith("__")):
                found[f"{name}.{attr}"] = None if value is None else id(value)
    if "torch" in sys.modules:  # methods as the class resolves them (most live on its C base class)
        tensor = sys.modules["torch"].Tensor
        found.update({f"torch.Tensor.{attr}": id(inspect.getattr_static(tensor, attr)) for attr in dir(tensor)
                      if not (attr.startswith("__") and attr.endswith("__"))})
    return found


def torch_flags() -> dict:
    import torch

    flags = {}
    for where, name in TORCH_FLAGS:
        obj = torch.backends
        for part in where.split("."):
            obj = getattr(obj, part, None)
        value = getattr(obj, name, None)
        flags[f"torch.backends.{where}.{name}"] = repr(value() if callable(value) else value)
    flags["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    flags["mha fastpath"] = torch.backends.mha.get_fastpath_enabled()
    flags["interop threads"] = torch.get_num_interop_threads()
    flags["grad enabled"] = torch.is_grad_enabled()
    flags["inference mode"] = torch.is_inference_mode_enabled()
    flags["anomaly detection"] = torch.is_anomaly_enabled()
    flags["deterministic warn only"] = torch.is_deterministic_algorithms_warn_only_enabled()
    return flags


def fingerprint() -> dict:
    import numpy as np

    umask = os.umask(0o22)
    os.umask(umask)
    loggers = {name: (lg.level, [repr(h) for h in lg.handlers], lg.propagate, lg.disabled)
               for name, lg in sorted(logging.root.manager.loggerDict.items()) if isinstance(lg, logging.Logger)}
    state = {
        "sys.modules": sorted(sys.modules),
        "sys.path": list(sys.path),
        "os.environ": dict(os.environ),
        "cwd": os.getcwd(),
        "umask": umask,
        "random": _digest(random.getstate()),
        "numpy.random": _digest([a.tolist() if hasattr(a, "tolist") else a for a in np.random.get_state()]),
        "np.geterr": np.geterr(),
        "np.printoptions": repr(np.get_printoptions()),
        "warnings.filters": repr(warnings.filters),
        "logging.root": (logging.root.level, [repr(h) for h in logging.root.handlers]),
        "logging.loggers": repr(loggers),
        "logging.disable": logging.root.manager.disable,
        "signals": {s.name: repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)},
        "recursionlimit": sys.getrecursionlimit(),
        "attributes": attributes(),
    }
    if "torch" in sys.modules:
        import torch

        state["torch"] = (str(torch.get_default_dtype()), torch.get_num_threads(),
                          torch.are_deterministic_algorithms_enabled(), _digest(torch.random.get_rng_state().tolist()))
        state["torch.backends"] = torch_flags()
    return state


def changes(before: dict, after: dict) -> dict:
    """What differs between two fingerprints; attributes only where both have the name."""
    found = {}
    for key in before:
        if key == "attributes":
            # a name bound to None until its first use is a cache the library fills (onnxsim's executor)
            replaced = sorted(k for k in before[key].keys() & after[key].keys()
                              if before[key][k] is not None and before[key][k] != after[key][k])
            if replaced:
                found[key] = replaced[:20]
        elif before[key] != after.get(key):
            if key == "sys.modules":
                found[key] = sorted(set(after[key]) ^ set(before[key]))[:20]
            else:
                found[key] = (str(before[key])[:300], str(after.get(key))[:300])
    return found


class Fingerprint(Step):
    KIND = "fingerprint"
    TOOLS = ("numpy",)
    RESIDENT = True

    def run(self):
        self.ctx.output("state").write_text(json.dumps(fingerprint(), sort_keys=True, default=repr))
        return StepResult()


class FingerprintOnnx(Fingerprint):  # the same, in the resident process of the steps that need ONNX
    TOOLS = ("numpy", "onnx")
