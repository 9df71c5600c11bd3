"""train.py end to end on real MNIST subsets: accuracy, determinism, resume after Ctrl-C, bad input;
and what it prints (on the tiny MNIST of tests/cli_helpers.py): the interpreter notice, the next step."""

import json
import os
import shlex

import pytest
import torch

import snn.training
from cli_helpers import ctrl_c_in_epoch, run_infer, run_train, train_argv
from snn.cli import train
from snn.checkpoint import load_checkpoint


def train_args(mnist_dir, checkpoint, *extra):
    return ["--data-dir", str(mnist_dir), "--checkpoint", str(checkpoint), "--no-progress",
            "--device", "cpu", *extra]


def test_short_training_reaches_stated_accuracy(mnist_dir, tmp_path, capsys):
    checkpoint = tmp_path / "m.pth"
    assert train.main(train_args(mnist_dir, checkpoint, "--train-samples", "5000", "--epochs", "4")) == 0
    out = capsys.readouterr().out
    assert "dataset: MNIST IDX files" in out and "python infer.py --checkpoint" in out
    best = load_checkpoint(checkpoint)
    # 5,000 images, 4 epochs (with the default shift augmentation): 90.7 % on the full 10,000-image
    # test set when measured; 0.89 leaves room for BLAS rounding differences between machines
    assert best["meta"]["accuracy"] >= 0.89, best["meta"]
    assert best["meta"]["dataset"].startswith("MNIST IDX files") and best["meta"]["backend"] == "torch"
    assert best["meta"]["versions"]["torch"] == torch.__version__
    records = [json.loads(line) for line in (tmp_path / "m.metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and "MNIST IDX" in records[0]["dataset"]
    assert [r["epoch"] for r in records[1:]] == [1, 2, 3, 4]
    assert max(r["test_accuracy"] for r in records[1:]) == best["meta"]["accuracy"]


def final_weights(path):
    return load_checkpoint(path.with_name(path.stem + ".last.pth"))["model_state"]


def test_deterministic_and_resume_after_interrupt_replays_exactly(mnist_dir, tmp_path, monkeypatch, capsys):
    common = ("--train-samples", "600", "--epochs", "2", "--batch-size", "100")
    straight = tmp_path / "straight" / "m.pth"
    again = tmp_path / "again" / "m.pth"
    assert train.main(train_args(mnist_dir, straight, *common)) == 0
    assert train.main(train_args(mnist_dir, again, *common)) == 0
    for key, value in final_weights(straight).items():
        assert torch.equal(value, final_weights(again)[key]), f"same seed on CPU must be bit-identical ({key})"

    # Ctrl-C in the middle of epoch 2: the epoch-1 checkpoints stay intact, exit status 130.
    interrupted = tmp_path / "interrupted" / "m.pth"
    ctrl_c_in_epoch(monkeypatch, 2)
    assert train.main(train_args(mnist_dir, interrupted, *common)) == 130
    assert "continue with --resume" in capsys.readouterr().err
    assert load_checkpoint(interrupted.with_name("m.last.pth"))["meta"]["epoch"] == 1
    assert load_checkpoint(interrupted)["meta"]["epoch"] == 1

    monkeypatch.setattr(train, "train_one_epoch", snn.training.train_one_epoch)
    assert train.main(train_args(mnist_dir, interrupted, *common, "--resume")) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    for key, value in final_weights(straight).items():
        assert torch.equal(value, final_weights(interrupted)[key]), f"resume must replay exactly ({key})"
    assert train.main(train_args(mnist_dir, interrupted, *common, "--resume")) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys, monkeypatch):
    data_dir = tmp_path / "data"
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08")  # truncated headers
    checkpoint = tmp_path / "m.pth"
    assert train.main(train_args(data_dir, checkpoint)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST file") and "is truncated" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: False)
    assert train.main(["--device", "cuda", "--data-dir", str(data_dir)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_resume_without_a_previous_run(mnist_dir, tmp_path, capsys):
    assert train.main(train_args(mnist_dir, tmp_path / "m.pth", "--train-samples", "100", "--resume")) == 2
    err = capsys.readouterr().err
    assert "m.last.pth does not exist" in err and "Traceback" not in err


def test_invalid_flags_exit_2(capsys):
    for argv in (["--epochs", "0"], ["--backend", "jax"], ["--max-shift", "-1"], ["--lr", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_neuron_options_are_trained_stored_and_honoured_by_infer(mnist_dir, tmp_path, capsys):
    """--reset/--surrogate/--alpha/--learn-tau/--learn-thresh reach the model, the checkpoint and infer.py."""
    from snn.cli import infer
    from snn.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = tmp_path / "opts.pth"
    argv = ["--data-dir", str(mnist_dir), "--checkpoint", str(checkpoint), "--no-progress", "--device", "cpu",
            "--train-samples", "256", "--test-samples", "64", "--epochs", "1", "--batch-size", "64",
            "--reset", "soft", "--surrogate", "atan", "--alpha", "3", "--learn-tau", "--learn-thresh",
            "--backend", "reference"]
    assert train.main(argv) == 0
    state = load_checkpoint(checkpoint)
    config = state["config"]
    assert (config["reset"], config["surrogate"], config["alpha"], config["learn_tau"], config["learn_thresh"]) == (
        "soft", "atan", 3.0, True, True)
    assert state["model_state"]["lif1.tau"].shape == (512,), "learnable tau is one parameter per hidden neuron"
    assert not torch.equal(state["model_state"]["lif1.tau"], torch.full((512,), 0.5)), "tau was trained"
    model = model_from_checkpoint(state, "torch")
    assert model.lif1.spec.reset == "soft" and model.lif2.spec.surrogate == "atan"
    capsys.readouterr()
    assert infer.main(["--checkpoint", str(checkpoint), "--data-dir", str(mnist_dir), "--index", "0", "1",
                       "--json", "--device", "cpu", "--backend", "torch"]) == 0
    assert capsys.readouterr().out.count('"prediction"') == 2


@pytest.mark.parametrize("argv, words", [
    (["--reset", "soft", "--v-reset", "0.5"], "--v-reset applies to reset='hard' only"),
    (["--alpha", "0"], "--alpha: must be a number from 0.001 to 1000"),
    (["--surrogate", "erf"], "invalid choice: 'erf'"),
])
def test_bad_neuron_options_are_one_sentence(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        train.parse_args(argv)
    assert info.value.code == 2 and words in capsys.readouterr().err


# ---------------------------------------------------------------------------- what it prints


def test_interpreter_notice_comes_before_training_on_its_own_line(tiny_mnist, tmp_path, capsys):
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("the notice is for the CPU interpreter")
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, tmp_path / "m.pth", "--backend", "triton",
                                                   "--epochs", "1", "--train-samples", "16", "--test-samples", "8",
                                                   "--batch-size", "16"))
    assert code == 0, err
    lines = out.splitlines()
    (notice,) = [i for i, line in enumerate(lines) if "Triton's CPU interpreter" in line]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert notice < first_epoch and lines[notice].startswith("note: ") and "slower" in lines[notice]
    assert "runs in the Triton interpreter" not in err, "the kernel's own notice would land in the progress bar"


def test_printed_next_step_command_works_without_a_terminal(tiny_mnist, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "my models" / "m.pth"  # a space: the command must be quoted
    code, out, err = run_train(capsys, *train_argv(tiny_mnist, checkpoint, "--epochs", "1"))
    assert code == 0, err
    assert "images of the MNIST test set" in out
    (command,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("run inference: ")]
    words = shlex.split(command)
    assert words[:2] == ["python", "infer.py"] and "--random" in words
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # no terminal
    code, out, err = run_infer(capsys, *words[2:])
    assert code == 0, err
    assert out.startswith("mnist-test[") and "predicted" in out

