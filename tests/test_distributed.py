"""train.py under torchrun: one data-parallel training (gloo on the CPU), as described in snn/distributed.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snn.cli import train
from snn.checkpoint import load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--no-progress", "--device", "cpu", "--train-samples", "512", "--test-samples", "200", "--epochs", "2"]


def torchrun(args, **popen):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO_ROOT / "train.py"), *args]
    if popen:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True, **popen)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def two_ranks(mnist_dir, tmp_path_factory):
    """One 2-process run (batch 64 each) and one single-process run (batch 128) of the same training."""
    folder = tmp_path_factory.mktemp("ddp")
    proc = torchrun(["--data-dir", str(mnist_dir), "--checkpoint", str(folder / "ddp.pth"), "--batch-size", "64", *COMMON])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert train.main(["--data-dir", str(mnist_dir), "--checkpoint", str(folder / "one.pth"), "--batch-size", "128", *COMMON]) == 0
    return folder, proc.stdout


def test_two_gloo_ranks_train_one_model(two_ranks):
    folder, stdout = two_ranks
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("ddp")) == [
        "ddp.last.pth", "ddp.metrics.jsonl", "ddp.pth"], "one checkpoint, one last, one metrics file, no lock left"
    records = [json.loads(line) for line in (folder / "ddp.metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch"], "one line per epoch, written by rank 0 alone"
    assert stdout.count("epoch   1/2") == 1, "rank 0 alone prints"
    assert "weights identical on all 2 ranks" in stdout
    assert "data parallel: 2 processes, batch 64 each (128 per step)" in stdout


def test_two_ranks_of_64_reach_the_weights_of_one_process_of_128(two_ranks):
    folder, _ = two_ranks
    ddp, one = load_checkpoint(folder / "ddp.last.pth"), load_checkpoint(folder / "one.last.pth")
    for key, value in one["model_state"].items():
        # the same samples and updates; only the order of fp32 reductions differs (GEMM threads, all-reduce)
        torch.testing.assert_close(ddp["model_state"][key], value, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    assert ddp["train_state"]["world_size"] == 2 and one["train_state"]["world_size"] == 1


def test_resume_with_another_number_of_processes_is_refused(two_ranks, mnist_dir, capsys):
    folder, _ = two_ranks
    argv = ["--data-dir", str(mnist_dir), "--checkpoint", str(folder / "ddp.pth"), "--batch-size", "64", *COMMON, "--resume"]
    assert train.main(argv) == 2
    assert "was trained by 2 process(es) (torchrun --nproc_per_node), not 1" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_under_torchrun_replays_exactly(two_ranks, mnist_dir, tmp_path):
    """Ctrl-C after epoch 1, --resume under torchrun: the same weights as the uninterrupted run."""
    folder, _ = two_ranks
    args = ["--data-dir", str(mnist_dir), "--checkpoint", str(tmp_path / "r.pth"), "--batch-size", "64", *COMMON]
    proc = torchrun(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = tmp_path / "r.metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or '"epoch": 1' not in metrics.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    resumed = torchrun([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "r.last.pth"), load_checkpoint(folder / "ddp.last.pth")
    for key, value in b["model_state"].items():
        assert torch.equal(a["model_state"][key], value), key


def test_a_folder_as_checkpoint_gets_the_same_sentence_from_every_rank(tmp_path):
    """Issue 15: with a folder as --checkpoint the ranks printed different errors."""
    folder = tmp_path / "folder.pth"
    folder.mkdir()
    result = torchrun(["--checkpoint", str(folder), "--data-dir", str(tmp_path / "data"), *COMMON])
    assert result.returncode != 0
    errors = sorted({line for line in result.stderr.splitlines() if line.startswith("error: ")})
    assert errors == [f"error: the checkpoint {folder} is a folder; pass a file path."], result.stderr[-3000:]
    # torchrun prints its own ChildFailedError traceback for a rank that exits non-zero; none from our code
    assert not [line for line in result.stderr.splitlines() if line.strip().startswith("File") and "/snn/" in line]


def test_low_memory_under_torchrun_trains_the_plain_runs_weights_to_the_bit(two_ranks, mnist_dir, tmp_path):
    """--memory low under torchrun: the same gradients on every rank, so the same weights as the plain 2-rank run."""
    folder, _ = two_ranks
    proc = torchrun(["--data-dir", str(mnist_dir), "--checkpoint", str(tmp_path / "low.pth"), "--batch-size", "64",
                     "--memory", "low", *COMMON])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "weights identical on all 2 ranks" in proc.stdout
    low, plain = load_checkpoint(tmp_path / "low.last.pth"), load_checkpoint(folder / "ddp.last.pth")
    assert low["config"]["memory"] == "low" and plain["config"].get("memory", "plain") == "plain"
    for key, value in plain["model_state"].items():
        assert torch.equal(low["model_state"][key], value), key
