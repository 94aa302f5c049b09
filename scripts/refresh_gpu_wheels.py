"""Refresh gpu-wheels.json: what each pinned GPU wheel declares, read from PyPI.

    python scripts/refresh_gpu_wheels.py            # needs PyPI; rewrites gpu-wheels.json
    python scripts/refresh_gpu_wheels.py --no-links # without onnxruntime-gpu's 250 MB wheel

For torch, onnxruntime-gpu (with the extras pinned), TensorRT (its meta-package,
libraries and bindings) and the CUDA runtime, at their pinned versions, for
CPython 3.12 on manylinux x86_64: the declared requirements (wheel metadata read
with pip's lazy range requests; for a source archive, its PKG-INFO), and for
onnxruntime-gpu the CUDA and TensorRT libraries its GPU providers link (the
ELF NEEDED entries). tests/test_pins.py checks the pins against this record,
offline. tensorrt-cu13-libs is only a stub on PyPI (its wheel is on
https://pypi.nvidia.com): its record says so.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from buildsys.core.pins import RECORD, canonical, gpu_pins, pins  # noqa: E402

WHEEL = ["--only-binary", ":all:", "--python-version", "3.12", *(f"--platform={p}" for p in (
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"))]


def wheel_requires(spec: str) -> list[str]:
    """Requires-Dist of a wheel, by pip's lazy wheel (HTTP range requests: the metadata, not the whole wheel)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--no-deps",
                        "--use-feature=fast-deps", "--target", tmp, "--report", str(report), *WHEEL, spec], check=True)
        return json.loads(report.read_text())["install"][0]["metadata"].get("requires_dist", [])


def sdist_requires(name: str, version: str) -> tuple[list[str], str | None]:
    """Requires-Dist of a source archive on PyPI, and the index its build fetches the real wheel from (a stub)."""
    req = urllib.request.Request(f"https://pypi.org/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
    url = next(f["url"] for f in files if f["filename"].endswith(f"-{version}.tar.gz"))
    data = urllib.request.urlopen(url, timeout=120).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers()}
        info = tar.extractfile(members["PKG-INFO"]).read().decode()
        project = tar.extractfile(members["pyproject.toml"]).read().decode() if "pyproject.toml" in members else ""
    requires = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Requires-Dist:")]
    stub = next((ln.split("=", 1)[1].strip().strip('"') for ln in project.splitlines() if ln.startswith("index_url")), None)
    return requires, stub


def links(spec: str) -> dict[str, list[str]]:
    """The shared libraries each GPU provider of the onnxruntime-gpu wheel needs (readelf -d)."""
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, *WHEEL, spec], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.endswith(("providers_cuda.so", "providers_tensorrt.so")):
                    lib = Path(tmp) / Path(member).name
                    lib.write_bytes(z.read(member))
                    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
                    found[member] = sorted(ln.split("[")[1].rstrip("]") for ln in out.splitlines() if "(NEEDED)" in ln)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-links", action="store_true", help="keep the recorded links of onnxruntime-gpu")
    args = ap.parse_args()
    old = json.loads((ROOT / RECORD).read_text()) if (ROOT / RECORD).is_file() else {"wheels": {}}
    wanted = gpu_pins(pins(ROOT / "pyproject.toml"))
    wheels = {}
    for name, pin in sorted(wanted.items()):
        entry = {"version": pin.version}
        if name.startswith("tensorrt-cu"):
            entry["requires"], _ = sdist_requires(name, pin.version)
            for part in ("libs", "bindings"):
                sub = f"{name}-{part}"
                requires, stub = sdist_requires(sub, pin.version) if part == "libs" else (wheel_requires(f"{sub}=={pin.version}"), None)
                wheels[sub] = {"version": pin.version, "requires": requires, **({"stub_of": stub} if stub else {})}
        else:
            entry["requires"] = wheel_requires(str(pin))
        if name == "onnxruntime-gpu":
            entry["links"] = old["wheels"].get(name, {}).get("links", {}) if args.no_links else links(str(pin))
        wheels[name] = entry
    doc = {"about": "What the pinned GPU wheels declare on PyPI (CPython 3.12, manylinux x86_64); written by "
                    "scripts/refresh_gpu_wheels.py, checked against pyproject.toml by tests/test_pins.py.",
           "wheels": {canonical(n): wheels[n] for n in sorted(wheels)}}
    (ROOT / RECORD).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}: " + ", ".join(f"{n}=={e['version']}" for n, e in sorted(doc["wheels"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
