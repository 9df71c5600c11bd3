"""infer.py on real files in a fresh process, the way a user meets it (issue 15 "Images", issue 21 confidence)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from snn.checkpoint import save_checkpoint, versions
from snn.model import MLPConfig, SpikingMLP

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SpikingMLP(MLPConfig())
    path = tmp_path_factory.mktemp("ckpt") / "m.pth"
    save_checkpoint(path, {"model_state": model.state_dict(), "config": model.config.to_dict(),
                           "meta": {"epoch": 0, "accuracy": 0.0, "dataset": "fixture", "backend": "torch",
                                    "versions": versions()}})
    return path


def one(path: Path) -> Path:
    image = Image.new("L", (100, 120), 255)
    ImageDraw.Draw(image).line([(50, 10), (50, 110)], fill=0, width=10)
    image.save(path)
    return path


def infer(checkpoint: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "infer.py"), "--checkpoint", str(checkpoint), *map(str, args)],
                          capture_output=True, text=True, errors="replace", timeout=120, cwd=REPO_ROOT)


def test_float_tiff_with_nan_and_inf_is_classified(checkpoint, tmp_path):
    values = np.asarray(Image.open(one(tmp_path / "one.png")), np.float32)
    values[0, 0], values[3, 3], values[60, 50] = np.nan, np.inf, -np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    run = infer(checkpoint, "--image", tmp_path / "nan.tif", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["prediction"] in range(10)


def test_blank_image_in_a_folder_is_reported_and_the_others_kept(checkpoint, tmp_path):
    one(tmp_path / "a.png")
    Image.new("L", (80, 80), 255).save(tmp_path / "b_blank.png")
    one(tmp_path / "c.png")
    run = infer(checkpoint, "--image", tmp_path, "--json")
    assert run.returncode == 1, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(line["image"]).name for line in lines if "prediction" in line] == ["a.png", "c.png"]
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and "blank" in errors[0]["error"] and Path(errors[0]["image"]).name == "b_blank.png"
    assert "error: " in run.stderr and "b_blank.png" in run.stderr and "Traceback" not in run.stderr


def test_out_that_is_the_input_image_is_refused(checkpoint, tmp_path):
    image = one(tmp_path / "x.png")
    before = image.read_bytes()
    run = infer(checkpoint, "--image", image, "--out", image)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "input" in run.stderr, run.stderr
    assert image.read_bytes() == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_non_utf8_file_name_with_out(checkpoint, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    one(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png")))
    run = infer(checkpoint, "--image", folder, "--out", tmp_path / "fig.png")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")


def test_json_reports_confidence_and_flags_doubtful_answers(checkpoint, tmp_path):
    run = infer(checkpoint, "--image", one(tmp_path / "a.png"), "--json")
    line = json.loads(run.stdout)
    assert line["confidence"] == pytest.approx(max(line["probabilities"]))
    assert line["low_confidence"] == (line["confidence"] < 0.8)


@pytest.mark.slow
def test_long_run_shows_progress_and_states_the_figure_cost(checkpoint, tmp_path):
    for index in range(60):
        one(tmp_path / f"d{index:02d}.png")
    run = infer(checkpoint, "--image", tmp_path, "--json", "--out", tmp_path / "out" / "fig.png")
    assert run.returncode == 0, run.stderr
    assert "preprocessing" in run.stderr and "60/60" in run.stderr
    assert "writing 8 figure pages" in run.stderr
    assert len(run.stdout.splitlines()) == 60
