"""Issue 15: faults tested the way a user meets them (a fresh process, a real full filesystem).

Each case ends in one ``error: ...`` sentence and exit status 2, or in the right result, with
nothing lost. The training runs use the tiny random MNIST of tests/cli_helpers.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from snn import LIFSpike, lif_spike
from snn.checkpoint import load_checkpoint, save_checkpoint
from snn.cli import train
from cli_helpers import assert_one_error, ctrl_c_in_epoch, make_mnist, run_train, train_argv
from snn.model import MLPConfig, SpikingMLP


def script(name: str, *argv, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / name), *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_error_line(result: subprocess.CompletedProcess, phrase: str) -> None:
    assert_one_error(result.returncode, result.stderr, phrase)


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 6 MB tmpfs (the best checkpoint fits, the .last.pth with Adam's state does not); skips
    with the reason where this process may not mount one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", f"snn-test-{uuid.uuid4().hex[:8]}",
                             str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'mount failed'}); "
                    "run as root (or with CAP_SYS_ADMIN) to test a real full disk")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_real_full_disk_while_saving_is_one_sentence_and_keeps_what_was_saved(small_filesystem, tmp_path):
    data = make_mnist(tmp_path / "data")
    checkpoint = small_filesystem / "m.pth"
    result = script("train.py", *train_argv(data, checkpoint, "--epochs", "4"))
    assert_one_error_line(result, "the disk is full")
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    left = sorted(p.name for p in small_filesystem.iterdir())
    assert not [name for name in left if name.endswith(".tmp")], f"a temp file was left: {left}"
    assert load_checkpoint(checkpoint)["meta"]["epoch"] == 1, "the best checkpoint saved before the fault is intact"


def test_files_are_written_with_the_umask_not_always_0600(tmp_path):
    code = ("import os, sys; os.umask(0o022); from snn.safe_files import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: f.write(b'x'))")
    target = tmp_path / "out.bin"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=REPO_ROOT)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    code = code.replace("0o022", "0o077")
    subprocess.run([sys.executable, "-c", code, str(target)], check=True, cwd=REPO_ROOT)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("flag, value, phrase", [
    ("--max-shift", "5000", "--max-shift: must be a whole number from 0 to 8"),
    ("--max-shift", "1e22", "--max-shift: must be a whole number from 0 to 8"),
    ("--seed", "18446744073709551616", "--seed: must be a whole number from 0 to"),
    ("--epochs", "1000000000000", "--epochs: must be a whole number from 1 to 10000"),
    ("--epochs", "1e12", "--epochs: must be a whole number from 1 to 10000"),
    ("--batch-size", "0", "--batch-size: must be a whole number from 1 to"),
    ("--alpha", "1e-300", "--alpha: must be a number from 0.001 to 1000"),
    ("--alpha", "1e300", "--alpha: must be a number from 0.001 to 1000"),
    ("--v-reset", "1e30", "--v-reset: must be a number from -1000 to 1000"),
    ("--v-reset", "nan", "--v-reset: must be a number from -1000 to 1000"),
    ("--lr", "100", "--lr must be a finite positive number, at most 10"),
])
def test_numeric_flags_have_ranges(flag, value, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args([flag, value])
    assert exit_info.value.code == 2
    assert phrase in capsys.readouterr().err


def test_every_numeric_flag_states_its_range_in_help():
    text = script("train.py", "--help").stdout
    for fragment in ("1..10000", "0..8", "0..9223372036854775807", "-1000..1000", "0.001..1000", "at most 10"):
        assert fragment in " ".join(text.split()), fragment
    assert "0..9223372036854775807" in " ".join(script("infer.py", "--help").stdout.split())


def test_infer_seed_is_bounded():
    result = script("infer.py", "--random", "--seed", "1e23")
    assert result.returncode == 2 and "--seed: must be a whole number" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_output_cache_size_is_one_error_sentence_in_train_py(tmp_path):
    data = make_mnist(tmp_path / "data")
    result = script("train.py", *train_argv(data, tmp_path / "m.pth", "--epochs", "1"), env={"SNN_OUTPUT_CACHE_MB": "abc"})
    assert_one_error_line(result, "SNN_OUTPUT_CACHE_MB must be a whole number of MiB")


def test_a_file_that_is_not_ours_is_never_called_a_model_nor_overwritten(tmp_path, capsys):
    data = make_mnist(tmp_path / "data")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for extra in ((), ("--overwrite",)):
        code, out, err = run_train(capsys, *train_argv(data, notes, *extra))
        assert_one_error(code, err, "is not a checkpoint written by train.py, so it is never replaced")
        assert "holds a model" not in err
    assert notes.read_text() == "my notes"


def test_resume_after_the_best_file_was_deleted_does_not_claim_it_was_saved(tmp_path, capsys, monkeypatch):
    data = make_mnist(tmp_path / "data")
    checkpoint = tmp_path / "m.pth"
    ctrl_c_in_epoch(monkeypatch, 2)
    code, out, err = run_train(capsys, *train_argv(data, checkpoint, "--epochs", "2"))
    assert code == 130, err
    monkeypatch.undo()
    # a stored best of 1.0 cannot be beaten: the resumed epoch does not write the best file again
    last = tmp_path / "m.last.pth"
    state = load_checkpoint(last)
    state["train_state"]["best_accuracy"] = 1.0
    save_checkpoint(last, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    checkpoint.unlink()
    code, out, err = run_train(capsys, *train_argv(data, checkpoint, "--epochs", "2", "--resume"))
    assert code == 0, err
    assert not checkpoint.exists()
    assert f"saved to {checkpoint}" not in out and f"its checkpoint {checkpoint} no longer exists" in out, out
    assert f"--checkpoint {last}" in out


def test_the_printed_next_step_saves_a_figure(tmp_path, capsys):
    data = make_mnist(tmp_path / "data")
    code, out, err = run_train(capsys, *train_argv(data, tmp_path / "m.pth", "--epochs", "1"))
    assert code == 0, err
    assert "--random --out inference.png" in out


@pytest.mark.parametrize("backend", ["torch", "eager", "reference"])
def test_no_time_steps_give_an_empty_result_on_every_backend(backend):
    x = torch.rand(2, 0, 5, requires_grad=True)
    v0 = torch.rand(2, 5)
    out = lif_spike(x, 0.5, 1.0, backend=backend, v0=v0, return_v=True)
    assert out.spikes.shape == (2, 0, 5) and torch.equal(out.v, v0)
    out.spikes.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("backend", ["torch", "eager", "reference"])
def test_a_tau_of_the_wrong_length_is_our_sentence(backend):
    with pytest.raises(ValueError, match=r"tau of shape \(4,\) does not broadcast over the neuron dimensions \(5,\)"):
        lif_spike(torch.rand(2, 3, 5), torch.full((4,), 0.5), 1.0, backend=backend)
    layer = LIFSpike(tau=torch.full((4,), 0.5), learn_tau=True)
    with pytest.raises(ValueError, match="tau of shape"):
        layer(torch.rand(2, 3, 5))


def test_divergence_names_the_neuron_flag_the_user_changed():
    args = train.parse_args(["--alpha", "0.001"])
    assert "--alpha 0.001" in train.divergence_advice(args)
    assert train.divergence_advice(train.parse_args([])) == "use a lower --lr than 0.001"


def test_readme_backend_table_lists_every_backend():
    from snn.lif.backends import BACKENDS

    readme = (REPO_ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `--backend"))
    for name in BACKENDS:
        assert name in row, f"--backend {name} is accepted but missing from the README's flag table"
