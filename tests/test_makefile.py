"""The set-up of the two commands, without a GPU: a fake nvidia-smi and a pip that logs what it is asked."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A stand-in for the venv's python: `python -m pip ARGS` logs ARGS and fails where NVIDIA's index is needed.
PYTHON = """#!/bin/sh
shift 2
echo "$*" >> "{log}"
case "$*" in
  *"[samples,test,cluster,gpu]"*) echo "ERROR: Failed to build tensorrt-cu13-libs (pypi.nvidia.com unreachable)" >&2; exit 1 ;;
  *"onnxruntime-gpu["*) {ort} ;;
  *",tensorflow]"*) echo "ERROR: No matching distribution found for tensorflow-cpu" >&2; exit 1 ;;
  "freeze "*) echo "numpy==2.4.6" ;;
  *"dvc=="*) {dvc} ;;
esac
exit 0
"""


def _exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def machine(tmp_path):
    """make in a copy of the Makefile and pyproject, with a fake venv python and, on request, a fake nvidia-smi."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    log = tmp_path / "pip.log"

    def make(*args: str, gpu: bool, ort_ok: bool = False, dvc_ok: bool = True) -> subprocess.CompletedProcess:
        _exe(tmp_path / "venv" / "bin" / "python", PYTHON.format(log=log, ort="exit 0" if ort_ok else "exit 1",
                                                                 dvc="exit 0" if dvc_ok else "exit 1"))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        smi = bin_dir / "nvidia-smi"
        if gpu:
            _exe(smi, "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1111)'\n")
        elif smi.exists():
            smi.unlink()
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
        env.pop("GPU", None)
        env.pop("MAKEFLAGS", None)
        return subprocess.run(["make", "--no-print-directory", "-C", str(repo), "install",
                               f"VENV={tmp_path / 'venv'}", "PYTHON=python3", "TF=0", *args],
                              capture_output=True, text=True, env=env, timeout=60)

    make.log = log
    make.note = tmp_path / "venv" / ".gpu-packages-missing"
    return make


def test_without_a_gpu_only_the_cpu_packages_are_installed(machine):
    r = machine(gpu=False)
    assert r.returncode == 0, r.stderr
    assert machine.log.read_text().splitlines() == [
        "install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e .[samples,test,cluster]"]
    assert not machine.note.exists()


def test_a_gpu_whose_packages_cannot_be_installed_still_sets_up_and_says_so_in_one_line(machine):
    r = machine(gpu=True)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "GPU" in ln]
    assert len(lines) == 1, r.stdout
    assert lines[0].startswith("GPU packages not installed (TensorRT (the gpu extra) and "
                               "onnxruntime-gpu[cuda,cudnn]==1.31.1; pip's output in ")
    assert lines[0].endswith("GPU steps are unavailable; to add them: "
                             "PIP_EXTRA_INDEX_URL=https://pypi.nvidia.com make GPU=1")
    assert machine.note.read_text().strip() == lines[0]  # the reason the GPU steps give
    calls = machine.log.read_text().splitlines()
    assert calls[1].endswith("-e .[samples,test,cluster,gpu]")
    assert calls[2] == "uninstall --yes --quiet onnxruntime onnxruntime-gpu"
    # the GPU wheel failed: the CPU wheel is put back
    assert calls[-1].endswith("-e .[samples,test,cluster]") and "uninstall --yes --quiet onnxruntime-gpu" in calls


def test_onnxruntime_gpu_replaces_the_cpu_wheel_where_it_installs(machine):
    r = machine(gpu=True, ort_ok=True)
    assert r.returncode == 0, r.stderr
    calls = machine.log.read_text().splitlines()
    assert calls[2:4] == ["uninstall --yes --quiet onnxruntime onnxruntime-gpu",
                          "install --disable-pip-version-check onnxruntime-gpu[cuda,cudnn]==1.31.1"]
    assert len(calls) == 4
    assert "TensorRT (the gpu extra);" in machine.note.read_text()


def test_gpu_1_by_hand_insists(machine):
    r = machine("GPU=1", gpu=True)
    assert r.returncode != 0
    assert "error: GPU packages not installed" in r.stderr


def test_the_note_is_the_reason_of_the_gpu_steps(tmp_path, monkeypatch):
    from buildsys.core import gpu

    monkeypatch.setattr(gpu.sys, "prefix", str(tmp_path))
    assert gpu.packages_note() is None
    (tmp_path / gpu.PACKAGES_NOTE).write_text("GPU packages not installed (x), GPU steps are unavailable\n")
    assert gpu.packages_note() == "GPU packages not installed (x), GPU steps are unavailable"


def test_a_tensorflow_extra_that_does_not_install_leaves_a_note_and_the_rest_set_up(machine):
    r = machine("TF=1", gpu=False)
    assert r.returncode == 0, r.stderr
    assert "note: the tensorflow extra did not install here; its tests are skipped" in r.stderr
    calls = machine.log.read_text().splitlines()
    assert calls[0].endswith("-e .[samples,test,cluster]")
    assert calls[1].endswith("-e .[samples,test,cluster,tensorflow]")


def test_bench_build_installs_the_pinned_bench_extra_without_changing_installed_packages(machine, tmp_path):
    r = machine("bench-build", "BENCH_ARGS=--recipes 5", gpu=False)
    assert r.returncode == 0, r.stderr
    calls = machine.log.read_text().splitlines()
    constraints = tmp_path / "venv" / "bench-constraints.txt"
    assert calls[1:] == ["freeze --exclude-editable --disable-pip-version-check",
                         f"install --quiet --disable-pip-version-check -c {constraints} dvc==3.67.1",
                         "--recipes 5"]  # python -m benchmarks --recipes 5
    assert constraints.read_text() == "numpy==2.4.6\n"  # what was installed before stays as it is


def test_a_bench_extra_that_does_not_install_leaves_a_note_and_the_benchmark_runs(machine):
    r = machine("bench-build", gpu=False, dvc_ok=False)
    assert r.returncode == 0, r.stderr
    assert "note: the bench extra (dvc==3.67.1) did not install here; the benchmark leaves DVC out" in r.stderr
    assert machine.log.read_text().splitlines()[-1] == ""  # python -m benchmarks, no arguments


def _fresh_clone(dest: Path) -> Path:
    """The working tree's files as a clone would hold them (tracked and not ignored), without .venv or out/."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.slow
def test_system_1_builds_from_an_interpreter_s_own_packages_without_a_registry(tmp_path):
    import sys

    from tests.e2e.conftest import tiny_recipe

    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("make and git are needed")
    clone = _fresh_clone(tmp_path / "clone")
    for recipe in (clone / "recipes").glob("*.yaml"):  # one tiny recipe keeps it cheap
        recipe.unlink()
    (clone / "recipes" / "tiny.yaml").write_text(tiny_recipe())
    shutil.copytree(ROOT / "tests" / "fixtures" / "models", clone / "tm")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "GPU", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_CONFIG_FILE=os.devnull)
    # the interpreter that already holds the packages: the one running these tests (the worktree's .venv)
    make = ["make", "--no-print-directory", "-C", str(clone), "SYSTEM=1", f"PYTHON={sys.executable}", "GPU=0"]
    r = subprocess.run([*make, "engines"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (clone / "out" / "tiny" / "engines" / "onnxruntime-fp32.ort").is_file()
    assert "missing from" not in r.stderr  # the interpreter holds every pinned package
    # nothing was installed: the venv holds the path file and no package
    site = next((clone / ".venv-system" / "lib").glob("python3*/site-packages"))
    assert sorted(p.name for p in site.iterdir()) == ["buildsys-system.pth"]
    assert [p.name for p in (clone / ".venv-system").glob(".installed-*")] == [
        ".installed-system-" + sys.executable.replace(".", "_").replace("/", "_")]
    assert not (clone / ".venv").exists()
    r = subprocess.run([*make, "test", "PYTEST_ARGS=tests/test_pins.py -q -p no:cacheprovider"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout


def test_system_1_lists_what_is_missing_in_one_line_and_warns_per_version(machine, tmp_path):
    repo = tmp_path / "repo"
    text = (repo / "pyproject.toml").read_text()
    (repo / "pyproject.toml").write_text(text.replace('"pyyaml==6.0.3"', '"pyyaml==0.0.1"').replace(
        '"rich==15.0.0"', '"rich==15.0.0",\n    "no-such-package-anywhere==1.0"'))
    shutil.copytree(ROOT / "buildsys", repo / "buildsys")
    shutil.copytree(ROOT / "schemas", repo / "schemas")
    (repo / "recipes").mkdir()
    (repo / "m.py").write_text("def f():\n    return None\n")
    (repo / "recipes" / "r.yaml").write_text("version: 1\nmodel: {factory: m:f}\ninputs: [{name: x, dtype: float32, "
                                             "shape: [2]}]\noutputs: [{name: y}]\n")
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "GPU", "PYTHONPATH")}
    r = subprocess.run(["make", "--no-print-directory", "-C", str(repo), "validate", "SYSTEM=1", "GPU=0",
                        f"PYTHON={sys.executable}"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stderr.splitlines() if "missing" in ln] == [
        f"missing from {repo}/.venv-system/bin/python: no-such-package-anywhere==1.0 "
        "(the steps that need them fail or are unavailable)"]
    assert "warning: pyyaml 6.0.3 is installed, 0.0.1 is pinned" in r.stderr
