"""Loading the recipe's PyTorch model in a worker, and discovering what it depends on.

Shared by the steps that run PyTorch (export, reference). Importing the factory
records every module it loads from the workspace (their files join the step's
key) and the packages that provide the model's classes (their versions do).
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from buildsys.core.canonical import digest_file
from buildsys.core.errors import StepError


def _workspace_modules(workspace: Path) -> dict[str, Path]:
    found = {}
    root = str(workspace) + os.sep
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and os.path.abspath(f).startswith(root) and "site-packages" not in f:
            found[name] = Path(os.path.abspath(f))
    return found


def load_model(params: dict[str, Any], workspace: Path, files: dict[str, Path]):
    """Import the factory, build the model, load its checkpoint; return (model, deps)."""
    import torch

    spec = params["model"]
    module_name, _, attr = spec["factory"].partition(":")
    # Start from a clean slate so each step records exactly the project modules it uses.
    for name in _workspace_modules(workspace):
        del sys.modules[name]
    if str(workspace) not in sys.path:
        sys.path.insert(0, str(workspace))
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:
        raise StepError(f"importing {module_name} called sys.exit({exc.code})", field="model.factory",
                        hint="model modules must not exit while being imported") from None
    except ModuleNotFoundError as exc:
        raise StepError(f"cannot import {module_name}: {exc}", field="model.factory",
                        hint="module paths are relative to the workspace root") from None
    except Exception as exc:
        raise StepError(f"importing {module_name} raised {type(exc).__name__}: {exc}",
                        field="model.factory") from None
    # The project sources as imported: what the model is built from. Hashed now, not
    # after the factory ran, so that a file edited in between is recorded with the
    # digest of the code that ran and the build refuses the result.
    imported = _source_digests(workspace)
    factory = getattr(module, attr, None)
    if factory is None:
        raise StepError(f"{module_name} has no attribute {attr!r}", field="model.factory")
    if not callable(factory):
        raise StepError(f"{spec['factory']} is a {type(factory).__name__}, not a callable", field="model.factory")
    torch.manual_seed(0)
    try:
        model = factory(**spec["kwargs"])
    except SystemExit as exc:
        raise StepError(f"{spec['factory']} called sys.exit({exc.code})", field="model.factory") from None
    except Exception as exc:
        raise StepError(f"{spec['factory']}(**kwargs) raised {type(exc).__name__}: {exc}",
                        field="model.kwargs") from None
    if not isinstance(model, torch.nn.Module):
        raise StepError(f"{spec['factory']} returned a {type(model).__name__}, not a torch.nn.Module",
                        field="model.factory")
    if "checkpoint" in files:
        _load_checkpoint(model, files["checkpoint"], spec["checkpoint"])
    model.eval()
    _freeze_qat_observers(model)
    return model, discover(workspace, model, imported)


def _freeze_qat_observers(model) -> None:
    from buildsys.steps.qat import freeze_observers

    left_on = freeze_observers(model)
    if left_on:
        print(f"quantization-aware trained: {left_on} FakeQuantize observers were still on; switched off so that "
              "the trained scales are used (torch.ao.quantization.disable_observer)", flush=True)


def _load_checkpoint(model, path: Path, shown: str) -> None:
    import torch

    if not path.is_file():
        raise StepError(f"checkpoint {shown} does not exist", field="model.checkpoint")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"checkpoint {shown} cannot be loaded safely: {first}", field="model.checkpoint",
                        hint="checkpoints are loaded with weights_only=True; save a plain state_dict "
                             "(torch.save(model.state_dict(), path)) or a .safetensors file") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise StepError(f"checkpoint {shown} holds a {type(state).__name__}, not a state_dict",
                        field="model.checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise StepError(f"checkpoint {shown} does not fit the model: {text[:600]}", field="model.checkpoint",
                        hint="check model.kwargs (sizes, num_classes) against the checkpoint") from None


def _source_digests(workspace: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """Digests of the project source files loaded so far, by workspace-relative path.

    A file already in `known` keeps the digest it had when it was first hashed.
    """
    known = known or {}
    files = {}
    for _, path in sorted(_workspace_modules(workspace).items()):
        rel = path.relative_to(workspace).as_posix()
        if rel not in files:
            files[rel] = known[rel] if rel in known else digest_file(path)
    return files


def discover(workspace: Path, model, imported: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Project source files loaded so far, and packages providing the model's classes.

    `imported` holds the digests taken when the factory's module was imported;
    modules loaded later (by the factory itself) are hashed now.
    """
    files = _source_digests(workspace, imported)
    tops = {type(m).__module__.partition(".")[0] for m in model.modules()}
    for mod_path in _workspace_modules(workspace):
        mod = sys.modules.get(mod_path)
        for value in vars(mod).values() if mod else ():
            owner = getattr(value, "__module__", None) or getattr(value, "__name__", None)
            if isinstance(owner, str):
                tops.add(owner.partition(".")[0])
    return {"files": files, "dists": _dists(tops, workspace)}


@functools.cache
def provided_by() -> Mapping[str, list[str]]:
    """Top-level module -> the installed distributions that provide it (read once: ~100 ms).

    The worker's torch template reads it before forking, so steps find it read."""
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _dists(tops: set[str], workspace: Path) -> dict[str, str]:
    from importlib.metadata import version

    provided = provided_by()
    local = {p.split("/")[0].removesuffix(".py") for p in os.listdir(workspace)}
    out = {}
    for top in sorted(tops - set(sys.stdlib_module_names) - local - {"builtins", "__main__"}):
        for dist in provided.get(top, []):
            out[dist] = version(dist)
    return out


def example_inputs(params: dict[str, Any], workspace: Path, point: str = "opt"):
    """Seeded torch tensors at one shape point, in the recipe's input order."""
    import torch

    from buildsys.steps.inputs import parity_inputs

    arrays = parity_inputs({**params, "parity": {"seed": 0}}, workspace, point, 0)
    return tuple(torch.from_numpy(arrays[i["name"]]) for i in params["inputs"])


def flatten_outputs(result) -> list:
    """Model outputs as a flat list (a tensor, a tuple/list, or a dict in insertion order)."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        result = list(result.values())
    flat = []
    for r in result:
        flat.extend(flatten_outputs(r))
    return flat
