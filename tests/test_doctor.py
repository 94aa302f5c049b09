"""`buildsys doctor`: one line without a GPU; with one, a table of each library's CUDA runtime, tiny run and fix."""
from __future__ import annotations

import subprocess
import sys

import pytest

from buildsys.core import gpu
from buildsys.tools import doctor

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "driver": "575.57.08", "cuda": "12.9"}


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(gpu, "absent_reason", lambda: "no NVIDIA GPU on this machine (no /dev/nvidiactl)")
    monkeypatch.setattr(doctor, "run_probe", lambda lib: pytest.fail("nothing is probed without a GPU"))
    assert doctor.doctor() == 0
    assert capsys.readouterr().out.splitlines() == [
        "doctor: no NVIDIA GPU on this machine (no /dev/nvidiactl); nothing to check (the GPU steps are unavailable here)"]


@pytest.mark.skipif(gpu.absent_reason() is None, reason="this machine has a GPU")
def test_the_command_on_a_machine_without_a_gpu_imports_no_gpu_library(tmp_path):
    code = ("import sys; from buildsys.cli import main; rc = main(['-C', sys.argv[1], 'doctor']); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules)); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line, imported = r.stdout.splitlines()
    assert line.startswith("doctor: no NVIDIA GPU") and imported == "[]"


def _faked(monkeypatch, found: dict[str, dict]) -> None:
    monkeypatch.setattr(gpu, "absent_reason", lambda: None)
    monkeypatch.setattr(gpu, "gpu", lambda: H100)
    monkeypatch.setattr(doctor, "run_probe", lambda lib: found[lib])


def test_a_table_with_the_fix_for_each_problem(monkeypatch, capsys):
    _faked(monkeypatch, {
        "torch": {"version": "2.13.0+cu130", "cuda": "13.0", "works": False,
                  "detail": "RuntimeError: The NVIDIA driver on your system is too old"},
        "onnxruntime": {"version": "1.32.0", "cuda": "", "works": False,
                        "detail": "no CUDA provider (this is the CPU wheel; providers: CPUExecutionProvider)"},
        "tensorrt": {"version": "", "cuda": "", "works": False, "detail": "not installed (tensorrt)"},
    })
    assert doctor.doctor() == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "GPU: NVIDIA H100 80GB HBM3, compute capability 9.0, driver 575.57.08 (CUDA 12.9)"
    assert lines[2].split() == ["library", "version", "CUDA", "runtime", "tiny", "run", "fix"]
    rows = {ln.split()[0]: ln for ln in lines[4:]}
    assert set(rows) == {"torch", "onnxruntime", "tensorrt"}
    assert "FAILED: RuntimeError: The NVIDIA driver on your system is too old" in rows["torch"]
    assert rows["torch"].endswith("the driver supports CUDA 12.9 and torch loads CUDA 13: update the NVIDIA driver "
                                  "to 580.65.06 or newer, or install torch's CUDA 12 build")
    assert rows["onnxruntime"].endswith("pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1' after pip uninstall "
                                        "onnxruntime")
    assert "not installed" in rows["tensorrt"] and "https://pypi.nvidia.com" in rows["tensorrt"]


def test_every_library_working_exits_0_and_shows_no_fix(monkeypatch, capsys):
    ok = {"version": "1", "cuda": "13.0", "works": True, "detail": "a tiny run"}
    _faked(monkeypatch, {lib: dict(ok) for lib in doctor.LIBRARIES})
    monkeypatch.setattr(gpu, "gpu", lambda: {**H100, "cuda": "13.0"})
    assert doctor.doctor() == 0
    rows = capsys.readouterr().out.splitlines()[4:]
    assert len(rows) == 3 and all("ok: a tiny run" in r and r.rstrip().endswith("—") for r in rows)


def test_an_out_of_memory_run_gets_its_fix():
    row = doctor.diagnose("tensorrt", {"version": "10.16.1.11", "cuda": "13.0", "works": False,
                                       "detail": "RuntimeError: CUDA error 2: out of memory"}, {**H100, "cuda": "13.0"})
    assert row.fix == "free the GPU: nvidia-smi lists what holds it"


def test_the_cuda_runtime_a_process_maps_is_read_from_its_library_name():
    maps = ("7f00-7f01 r-xp 0 08:01 1 /usr/lib/python3/site-packages/nvidia/cu13/lib/libcudart.so.13\n"
            "7f02-7f03 r-xp 0 08:01 2 /opt/torch/lib/libcudart-5a3f9e1c.so.12.8.90\n")
    assert sorted({m[1] for m in doctor._CUDART.finditer(maps)}) == ["12.8.90", "13"]
