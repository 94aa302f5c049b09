"""The pinned packages of pyproject.toml: their CUDA coherence, and how an installed interpreter differs from them.

Two readers. The GPU wheels (torch, onnxruntime-gpu, TensorRT and the CUDA
runtime) must all be built for one CUDA major: ONNX Runtime's TensorRT
provider loads `libnvinfer.so.<major>` beside its own `libcudart.so.<major>`, and a
TensorRT made for another CUDA cannot live beside it. What each wheel declares is
recorded in `gpu-wheels.json` next to the pins (refreshed from PyPI by
`scripts/refresh_gpu_wheels.py`), so the check needs no registry.

`make … SYSTEM=1` uses an interpreter's own packages instead of installing the
pins; `python -m buildsys.core.pins installed` says in one line what is missing and
warns about each version that differs (the keys record the real versions anyway).
Nothing here imports a heavy library: versions come from package metadata.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

RECORD = "gpu-wheels.json"
REFRESH = "python scripts/refresh_gpu_wheels.py"
# Where the GPU wheels run: requirement markers are judged for this platform.
PLATFORM = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "python_version": "3.12", "python_full_version": "3.12.3",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}
# Packages whose name or version says the CUDA major they are built for.
_CU_SUFFIX = re.compile(r"-cu(\d+)$")
_CUDA_VERSIONED = {"nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "cuda-toolkit", "cuda-bindings",
                   "nvidia-cublas", "nvidia-cudnn"}
_CUDART = re.compile(r"^libcudart\.so\.(\d+)$")
_NVINFER = re.compile(r"^libnvinfer\.so\.(\d+)$")
_EXACT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*==\s*([^\s;,]+)\s*(?:;.*)?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    extras: tuple[str, ...]
    group: str  # "dependencies", an extra's name, or "onnxruntime-gpu" (tool.buildsys)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def pins(pyproject: Path) -> dict[str, Pin]:
    """Every `name==version` of pyproject.toml: the dependencies, each extra, and tool.buildsys's onnxruntime-gpu."""
    doc = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    groups = {"dependencies": doc["project"].get("dependencies", []),
              **doc["project"].get("optional-dependencies", {}),
              "onnxruntime-gpu": [doc.get("tool", {}).get("buildsys", {}).get("onnxruntime-gpu", "")]}
    found: dict[str, Pin] = {}
    for group, lines in groups.items():
        for line in filter(None, lines):
            # parsed by hand: `make … SYSTEM=1` runs this where `packaging` may be missing
            if m := _EXACT.match(line.strip()):
                name, extras, version = canonical(m[1]), m[2] or "", m[3]
                found.setdefault(name, Pin(name, version, tuple(sorted(e.strip() for e in extras.split(",") if e.strip())),
                                           group))
    return found


def gpu_pins(all_pins: dict[str, Pin]) -> dict[str, Pin]:
    """The pins that must agree on CUDA: torch, onnxruntime-gpu and the gpu extra."""
    return {n: p for n, p in all_pins.items() if p.group in ("gpu", "onnxruntime-gpu") or n == "torch"}


def declared(entry: dict, extras: tuple[str, ...]) -> list:
    """The requirements a recorded wheel declares for this platform with `extras` asked for."""
    from packaging.requirements import Requirement

    reqs = []
    for line in entry.get("requires", []):
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**PLATFORM, "extra": e}) for e in ("", *extras)):
            reqs.append(req)
    return reqs


def cuda_majors(name: str, version: str, entry: dict, extras: tuple[str, ...]) -> dict[int, str]:
    """CUDA major -> the evidence, for one recorded wheel: its name, its requirements, the libraries it links."""
    found: dict[int, str] = {}
    if m := _CU_SUFFIX.search(name):
        found.setdefault(int(m[1]), f"its name {name}")
    if name in _CUDA_VERSIONED:
        found.setdefault(int(version.split(".")[0]), f"its version {version}")
    for req in declared(entry, extras):
        req_name = canonical(req.name)
        if m := _CU_SUFFIX.search(req_name):
            found.setdefault(int(m[1]), f"requires {req}")
        elif req_name in _CUDA_VERSIONED:
            # the lower bound names the major (`<14` says which major is excluded, not which is built for)
            versions = [s.version for s in req.specifier if s.operator in ("==", "===", "~=", ">=", ">")]
            if versions and versions[0].split(".")[0].isdigit():
                found.setdefault(int(versions[0].split(".")[0]), f"requires {req}")
    for lib, needed in sorted(entry.get("links", {}).items()):
        for so in needed:
            if m := _CUDART.match(so):
                found.setdefault(int(m[1]), f"{lib} links {so}")
    return found


def coherence_problems(pyproject: Path, record: dict) -> list[str]:
    """What makes the GPU pins of `pyproject` incoherent, judged on the recorded wheel metadata; [] when none."""
    wanted = gpu_pins(pins(pyproject))
    wheels = {canonical(n): e for n, e in record.get("wheels", {}).items()}
    problems = []
    for name, pin in sorted(wanted.items()):
        entry = wheels.get(name)
        if entry is None:
            problems.append(f"{pin} is pinned ({pin.group}) but {RECORD} does not record it: run {REFRESH}")
        elif entry.get("version") != pin.version:
            problems.append(f"{pin} is pinned ({pin.group}) but {RECORD} records {name}=={entry.get('version')}: "
                            f"run {REFRESH}")
    versions = {n: e.get("version", "") for n, e in wheels.items()} | {n: p.version for n, p in wanted.items()}
    majors: dict[str, dict[int, str]] = {}
    for name, pin in sorted(wanted.items()):
        entry = wheels.get(name, {})
        majors[name] = cuda_majors(name, pin.version, entry, pin.extras)
        for req in declared(entry, pin.extras):
            other = canonical(req.name)
            if other in versions and req.specifier and versions[other] not in req.specifier:
                problems.append(f"{pin} requires {req}, but the set has {other}=={versions[other]}")
        for needed in entry.get("links", {}).values():
            for so in needed:
                trt = next((p for n, p in wanted.items() if n.startswith("tensorrt")), None)
                if (m := _NVINFER.match(so)) and trt and trt.version.split(".")[0] != m[1]:
                    problems.append(f"{pin} links {so} (TensorRT {m[1]}), but {trt} is pinned")
    every = sorted({k for found in majors.values() for k in found})
    if len(every) > 1:
        detail = "; ".join(f"{wanted[n]}: CUDA {', '.join(f'{k} ({why})' for k, why in sorted(found.items()))}"
                           for n, found in sorted(majors.items()) if found)
        problems.append(f"the GPU pins mix CUDA majors {' and '.join(map(str, every))}: {detail}")
    return problems


def load_record(root: Path) -> dict:
    return json.loads((root / RECORD).read_text(encoding="utf-8"))


# Distributions that provide a pinned one's module under another name: onnxruntime-gpu's `onnxruntime`
# (in place of the CPU wheel on GPU hosts), the `tensorrt` of NVIDIA's containers.
PROVIDED_BY = {"onnxruntime": ("onnxruntime-gpu",), "tensorrt-cu13": ("tensorrt", "tensorrt-cu12")}


def installed(pyproject: Path, groups: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(missing packages, version warnings) of this interpreter against the pins of `groups`."""
    from importlib import metadata

    missing, differ = [], []
    for name, pin in sorted(pins(pyproject).items()):
        if pin.group not in groups:
            continue
        have = None
        for dist in (name, *PROVIDED_BY.get(name, ())):
            try:
                have, name = metadata.version(dist), dist
                break
            except metadata.PackageNotFoundError:
                continue
        if have is None:
            missing.append(str(pin))
            continue
        if have.split("+")[0] != pin.version:
            differ.append(f"warning: {name} {have} is installed, {pin.version} is pinned "
                          "(the steps' keys record the installed version)")
    return missing, differ


def main(argv: list[str] | None = None) -> int:
    """`python -m buildsys.core.pins installed [GROUP…]` | `python -m buildsys.core.pins check`, from the repository root."""
    args = sys.argv[1:] if argv is None else argv
    root = Path.cwd()
    if args[:1] == ["check"]:
        problems = coherence_problems(root / "pyproject.toml", load_record(root))
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 1 if problems else 0
    if args[:1] == ["installed"]:
        groups = tuple(args[1:]) or ("dependencies",)
        missing, differ = installed(root / "pyproject.toml", groups)
        if missing:
            print(f"missing from {sys.executable}: {', '.join(missing)} (the steps that need them fail or are "
                  "unavailable)", file=sys.stderr)
        for line in differ:
            print(line, file=sys.stderr)
        return 0
    print("usage: python -m buildsys.core.pins check | installed [GROUP…]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
