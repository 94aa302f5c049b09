"""The GPU pins agree on one CUDA major, judged on what the wheels declare (gpu-wheels.json, no registry needed)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from buildsys.core import pins

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path):
    """A copy of pyproject.toml and the record, to change one of them."""
    for name in ("pyproject.toml", pins.RECORD):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_pinned_gpu_wheels_are_coherent():
    assert pins.coherence_problems(ROOT / "pyproject.toml", pins.load_record(ROOT)) == []


def test_the_record_holds_every_gpu_pin_at_its_version():
    record = pins.load_record(ROOT)["wheels"]
    wanted = pins.gpu_pins(pins.pins(ROOT / "pyproject.toml"))
    assert {"torch", "onnxruntime-gpu", "nvidia-cuda-runtime"} <= set(wanted)
    assert any(n.startswith("tensorrt-cu") for n in wanted)
    assert {n: record[n]["version"] for n in wanted} == {n: p.version for n, p in wanted.items()}
    # one major, told by each wheel
    for name, pin in wanted.items():
        assert set(pins.cuda_majors(name, pin.version, record[name], pin.extras)) == {13}, name


def test_tensorrt_for_cuda_12_beside_onnxruntime_gpu_for_cuda_13_fails(repo):
    # what the gpu extra pinned before: TensorRT and its runtime for CUDA 12
    _edit(repo / "pyproject.toml", '"tensorrt-cu13==10.16.1.11",\n    "nvidia-cuda-runtime==13.0.96",',
          '"tensorrt-cu12==10.16.1.11",\n    "nvidia-cuda-runtime-cu12==12.9.79",')
    record = json.loads((repo / pins.RECORD).read_text())
    record["wheels"]["tensorrt-cu12"] = dict(record["wheels"]["tensorrt-cu13"], requires=[
        "tensorrt_cu12_libs==10.16.1.11", "tensorrt_cu12_bindings==10.16.1.11"])
    record["wheels"]["nvidia-cuda-runtime-cu12"] = {"version": "12.9.79", "requires": []}
    problems = pins.coherence_problems(repo / "pyproject.toml", record)
    assert len(problems) == 1, problems
    assert problems[0].startswith("the GPU pins mix CUDA majors 12 and 13: ")
    assert "tensorrt-cu12==10.16.1.11: CUDA 12 (its name tensorrt-cu12)" in problems[0]
    assert ("onnxruntime-gpu==1.31.1: CUDA 13 (requires nvidia-cuda-nvrtc~=13.0" in problems[0])


def test_a_runtime_outside_what_onnxruntime_gpu_declares_fails(repo):
    _edit(repo / "pyproject.toml", '"nvidia-cuda-runtime==13.0.96"', '"nvidia-cuda-runtime==13.2.51"')
    record = json.loads((repo / pins.RECORD).read_text())
    record["wheels"]["nvidia-cuda-runtime"]["version"] = "13.2.51"
    record["wheels"]["torch"]["requires"].append('nvidia-cuda-runtime==13.0.96.*; platform_system == "Linux"')
    problems = pins.coherence_problems(repo / "pyproject.toml", record)
    assert problems == ['torch==2.13.0 requires nvidia-cuda-runtime==13.0.96.*; platform_system == "Linux", '
                        "but the set has nvidia-cuda-runtime==13.2.51"]


def test_a_tensorrt_major_that_onnxruntime_does_not_link_fails(repo):
    _edit(repo / "pyproject.toml", '"tensorrt-cu13==10.16.1.11"', '"tensorrt-cu13==11.4.0.106"')
    record = json.loads((repo / pins.RECORD).read_text())
    record["wheels"]["tensorrt-cu13"]["version"] = "11.4.0.106"
    record["wheels"]["tensorrt-cu13"]["requires"] = ["tensorrt_cu13_libs==11.4.0.106"]
    record["wheels"]["tensorrt-cu13-libs"]["version"] = "11.4.0.106"
    problems = pins.coherence_problems(repo / "pyproject.toml", record)
    assert problems == ["onnxruntime-gpu==1.31.1 links libnvinfer.so.10 (TensorRT 10), "
                        "but tensorrt-cu13==11.4.0.106 is pinned"]


def test_a_pin_the_record_does_not_match_says_how_to_refresh(repo):
    _edit(repo / "pyproject.toml", "onnxruntime-gpu[cuda,cudnn]==1.31.1", "onnxruntime-gpu[cuda,cudnn]==1.31.0")
    problems = pins.coherence_problems(repo / "pyproject.toml", json.loads((repo / pins.RECORD).read_text()))
    assert problems == ["onnxruntime-gpu==1.31.0 is pinned (onnxruntime-gpu) but gpu-wheels.json records "
                        "onnxruntime-gpu==1.31.1: run python scripts/refresh_gpu_wheels.py"]


def test_the_check_command_exits_1_on_a_mismatch(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert pins.main(["check"]) == 0
    _edit(repo / "pyproject.toml", '"tensorrt-cu13==10.16.1.11"', '"tensorrt-cu12==10.16.1.11"')
    assert pins.main(["check"]) == 1
    assert "tensorrt-cu12==10.16.1.11 is pinned (gpu) but gpu-wheels.json does not record it" in capsys.readouterr().err


PYPROJECT = """\
[project]
name = "x"
dependencies = ["pyyaml==0.0.1", "numpy", "not-a-package-here==1.0", "onnxruntime==9.9.9"]
[project.optional-dependencies]
test = ["pytest==0.1"]
"""


def test_an_interpreter_s_packages_against_the_pins(tmp_path, monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "1.31.1" if d == "onnxruntime-gpu" else
                        (_ for _ in ()).throw(metadata.PackageNotFoundError(d)) if d == "onnxruntime" else real(d))
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    missing, differ = pins.installed(tmp_path / "pyproject.toml", ("dependencies",))
    assert missing == ["not-a-package-here==1.0"]
    assert differ == [
        "warning: onnxruntime-gpu 1.31.1 is installed, 9.9.9 is pinned (the steps' keys record the installed version)",
        f"warning: pyyaml {real('pyyaml')} is installed, 0.0.1 is pinned (the steps' keys record the installed version)"]
    # groups not asked for are not looked at
    assert pins.installed(tmp_path / "pyproject.toml", ("test",)) == (
        [], [f"warning: pytest {real('pytest')} is installed, 0.1 is pinned (the steps' keys record the installed version)"])


def test_the_installed_command_says_what_is_missing_in_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.replace('"onnxruntime==9.9.9"', '"absent-two==2"'))
    monkeypatch.chdir(tmp_path)
    assert pins.main(["installed", "dependencies"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if ln.startswith("missing")] == [
        f"missing from {pins.sys.executable}: absent-two==2, not-a-package-here==1.0 "
        "(the steps that need them fail or are unavailable)"]
    assert [ln.split(" is installed")[0] for ln in err if ln.startswith("warning")] == [
        f"warning: pyyaml {__import__('importlib.metadata').metadata.version('pyyaml')}"]
