"""What ``pip install .`` (not editable) puts on sys.path, and that the installed commands run from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project installed with pip into a folder of its own (dependencies come from this environment)."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a copy, so that the build leaves nothing behind in the checkout
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(".git", "data", "checkpoints", ".benchmarks",
                                                                      "__pycache__", "*.egg-info", "build"))
    target = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-compile", "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def test_only_the_snn_package_lands_on_sys_path(installed):
    top_level = sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin")
    assert top_level == ["snn"], f"pip install put {top_level} on sys.path"
    assert (installed / "snn" / "kernels" / "lif" / "triton_launch.py").is_file(), "the Triton kernels are snn.kernels.lif"
    assert (installed / "snn" / "kernels" / "lif" / "lif_cpu.c").is_file(), "the fused CPU kernel's source is packaged"


def test_installed_commands_and_imports_work_from_another_directory(installed, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed))
    for command in ("snn-train", "snn-infer"):
        proc = subprocess.run([str(installed / "bin" / command), "--help"], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)
        assert proc.returncode == 0 and f"usage: {command}" in proc.stdout, proc.stderr[-2000:]
    code = ("import snn, snn.kernels.lif.triton_launch as L; from snn import LIFSpike; import torch; "
            "assert L.__file__.startswith(snn.__path__[0]), L.__file__; "
            "print(LIFSpike(backend='triton')(torch.rand(2, 3, 4) * 2).shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0 and "torch.Size([2, 3, 4])" in proc.stdout, proc.stderr[-2000:]
