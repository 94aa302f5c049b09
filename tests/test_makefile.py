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
    from buildsys import gpu

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
