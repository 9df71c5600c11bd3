"""infer.py end to end, in-process: JSON and human output, figures, backends, the menu, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from snn.cli import infer
from cli_helpers import model_payload, run_infer, write_idx
from snn.checkpoint import save_checkpoint
from snn.data import IDX_FILES, read_idx, to_float_images
from snn.model import MLPConfig, SpikingMLP

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- fixtures


# the metadata of this file's untrained checkpoints (cli_helpers.model_payload's defaults are a trained run's)
FIXTURE_META = {"epoch": 0, "accuracy": 0.0, "dataset": "test fixture"}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained but deterministic spiking MLP in the train.py checkpoint format."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "untrained.pth"
    save_checkpoint(path, model_payload(SpikingMLP(MLPConfig()), **FIXTURE_META))
    return path


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    """A tiny MNIST in torchvision's layout: 5 training and 7 test images (random strokes)."""
    root = tmp_path_factory.mktemp("fake_mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = np.zeros((12, 28, 28), np.uint8)
    images[:, 6:22, 10:18] = rng.integers(0, 256, (12, 16, 8))
    labels = np.arange(12) % 10
    write_idx(raw / IDX_FILES["train_images"], images[:5])
    write_idx(raw / IDX_FILES["train_labels"], labels[:5])
    write_idx(raw / IDX_FILES["test_images"], images[5:])
    write_idx(raw / IDX_FILES["test_labels"], labels[5:])
    return root


def draw_digit(path: Path, shape: str, dark_on_light: bool = True, alpha: bool = False) -> Path:
    """A thick '1' or a ring '0', off-centre on a larger page."""
    if alpha:
        image, ink = Image.new("RGBA", (160, 200), (0, 0, 0, 0)), (10, 10, 10, 255)
    else:
        image, ink = Image.new("L", (160, 200), 255 if dark_on_light else 0), 0 if dark_on_light else 255
    pen = ImageDraw.Draw(image)
    if shape == "one":
        pen.line([(50, 20), (50, 170)], fill=ink, width=16)
    else:
        pen.ellipse((20, 30, 110, 170), outline=ink, width=14)
    image.save(path)
    return path


@pytest.fixture
def digits_dir(tmp_path) -> Path:
    """A folder of three digit images (and a text file that must be ignored)."""
    folder = tmp_path / "digits"
    folder.mkdir()
    draw_digit(folder / "a_one.png", "one")
    draw_digit(folder / "b_zero.png", "zero", dark_on_light=False)
    draw_digit(folder / "c_zero_alpha.png", "zero", alpha=True)
    (folder / "notes.txt").write_text("not an image")
    return folder


def json_lines(out: str) -> list[dict]:
    """Every stdout line must be one JSON object of exactly the documented shape."""
    records = [json.loads(line) for line in out.splitlines()]
    for record in records:
        assert set(record) == {"image", "prediction", "probabilities", "label", "dataset", "prediction_name",
                               "label_name", "firing_rates", "confidence", "low_confidence"}, record
        probs = record["probabilities"]
        assert len(probs) == 10 and all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs), record
        assert abs(sum(probs) - 1.0) < 1e-9, f"probabilities sum to {sum(probs)}"
        assert record["prediction"] == int(np.argmax(probs)), record
    return records


# ---------------------------------------------------------------------------- output


def test_json_folder_gives_one_line_per_image_and_nothing_else(checkpoint, digits_dir, tmp_path, capsys):
    figure = tmp_path / "figs" / "batch.png"
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", digits_dir, "--json", "--out", figure)
    assert code == 0, err
    records = json_lines(out)
    assert [r["image"] for r in records] == [str(digits_dir / n) for n in ("a_one.png", "b_zero.png", "c_zero_alpha.png")]
    assert "figure saved to" in err and "Traceback" not in err, "notices go to stderr in --json mode"
    assert figure.read_bytes().startswith(PNG_MAGIC) and figure.stat().st_size > 10_000


def test_files_and_folders_form_one_batch_in_order(checkpoint, digits_dir, tmp_path, capsys):
    single = draw_digit(tmp_path / "z_first.png", "one", dark_on_light=False)
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", single, digits_dir, "--json")
    assert code == 0, err
    records = json_lines(out)
    assert [Path(r["image"]).name for r in records] == ["z_first.png", "a_one.png", "b_zero.png", "c_zero_alpha.png"]
    # batching changes nothing: each image alone gives the same probabilities
    for record in records:
        code, alone, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", record["image"], "--json")
        assert code == 0, err
        (only,) = json_lines(alone)
        assert only["prediction"] == record["prediction"]
        np.testing.assert_allclose(only["probabilities"], record["probabilities"], rtol=0, atol=1e-6)


def test_polarity_does_not_change_the_prediction(checkpoint, tmp_path, capsys):
    paths = [draw_digit(tmp_path / "dark.png", "zero"), draw_digit(tmp_path / "light.png", "zero", dark_on_light=False),
             draw_digit(tmp_path / "alpha.png", "zero", alpha=True)]
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", *paths, "--json")
    assert code == 0, err
    probs = [r["probabilities"] for r in json_lines(out)]
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-6, err_msg="light-on-dark differs from dark-on-light")
    np.testing.assert_allclose(probs[2], probs[0], atol=1e-6, err_msg="transparent background differs")


def test_human_output_names_prediction_and_confidence(checkpoint, digits_dir, capsys):
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--image", digits_dir / "a_one.png")
    assert code == 0, err
    (line,) = out.splitlines()
    assert line.startswith(f"{digits_dir / 'a_one.png'}: predicted ") and "(confidence " in line and (line.endswith("%)") or line.endswith("doubt this answer"))


def test_test_set_images_by_index_and_seeded_random(checkpoint, fake_mnist, capsys):
    common = ("--checkpoint", checkpoint, "--data-dir", fake_mnist)
    code, out, err = run_infer(capsys, *common, "--index", "0", "6", "--json")
    assert code == 0, err
    records = json_lines(out)
    assert [r["image"] for r in records] == ["mnist-test[0]", "mnist-test[6]"]
    assert [(r["label"], r["dataset"]) for r in records] == [(5, "MNIST"), (1, "MNIST")], "true label and dataset"
    code, out, err = run_infer(capsys, *common, "--index", "3")
    assert code == 0 and out.startswith("mnist-test[3]: predicted ") and "label 8" in out, out
    picks = set()
    for _ in range(2):
        code, out, err = run_infer(capsys, *common, "--random", "--seed", "5", "--json")
        assert code == 0, err
        (record,) = json_lines(out)
        picks.add(record["image"])
    assert len(picks) == 1, f"--random --seed 5 must pick the same image every time, got {picks}"


def test_large_batch_figure_is_split_into_pages(checkpoint, fake_mnist, tmp_path, capsys):
    out_path = tmp_path / "pages.png"
    indices = [str(i % 7) for i in range(9)]  # 9 rows: pages of 8 and 1
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--data-dir", fake_mnist, "--index", *indices,
                               "--out", out_path)
    assert code == 0, err
    pages = [tmp_path / "pages-1.png", tmp_path / "pages-2.png"]
    assert f"figure saved to {pages[0]}, {pages[1]}" in out
    assert all(page.read_bytes().startswith(PNG_MAGIC) for page in pages) and not out_path.exists()


@pytest.mark.skipif(not (REPO_ROOT / "kernels" / "__init__.py").exists(),
                    reason="the kernels package (Triton LIF) is not written yet: kernels/__init__.py is missing")
def test_triton_backend_gives_identical_predictions(checkpoint, digits_dir, fake_mnist, capsys):
    """Without a GPU, kernels/ runs the Triton kernel in its interpreter on the CPU."""
    results = {}
    for backend in ("torch", "triton"):
        for source in (("--image", digits_dir), ("--index", *range(7))):
            code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--data-dir", fake_mnist,
                                       "--backend", backend, *source, "--json")
            assert code == 0, f"--backend {backend}: {err}"
            results.setdefault(backend, []).extend(json_lines(out))
    assert [r["prediction"] for r in results["triton"]] == [r["prediction"] for r in results["torch"]]
    np.testing.assert_allclose([r["probabilities"] for r in results["triton"]],
                               [r["probabilities"] for r in results["torch"]], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_real_predictions_of_a_briefly_trained_model(mnist_dir, tmp_path, capsys):
    """Trained for a few seconds on 4,000 real digits: right on most test digits, also when redrawn.

    Measured here: 92.5 % of the first 40 test digits right, and the redrawn digits (dark on white,
    8x larger, through snn.preprocess) get the same prediction as the originals 40 times out of 40.
    """
    raw = mnist_dir / "MNIST" / "raw"
    images = read_idx(raw / IDX_FILES["train_images"], 3)[:4000]
    labels = read_idx(raw / IDX_FILES["train_labels"], 1)[:4000].long()
    torch.manual_seed(0)
    model = SpikingMLP(MLPConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for start in range(0, len(labels), 100):
        loss = torch.nn.functional.cross_entropy(model(to_float_images(images[start:start + 100])), labels[start:start + 100])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path / "trained.pth"
    save_checkpoint(path, model_payload(model, **{**FIXTURE_META, "epoch": 1}))

    count = 40
    test_images = read_idx(raw / IDX_FILES["test_images"], 3)[:count].numpy()
    test_labels = read_idx(raw / IDX_FILES["test_labels"], 1)[:count].tolist()
    code, out, err = run_infer(capsys, "--checkpoint", path, "--data-dir", mnist_dir, "--index", *range(count), "--json")
    assert code == 0, err
    direct = [r["prediction"] for r in json_lines(out)]
    accuracy = np.mean(np.equal(direct, test_labels))
    assert accuracy >= 0.8, f"accuracy {accuracy:.2f} on the first {count} test digits"

    # the same digits as a user would supply them: dark ink on white paper, 8x larger, as PNG files
    folder = tmp_path / "redrawn"
    folder.mkdir()
    for index, digit in enumerate(test_images):
        Image.fromarray(255 - digit).resize((224, 224), Image.Resampling.BICUBIC).save(folder / f"{index:03d}.png")
    code, out, err = run_infer(capsys, "--checkpoint", path, "--image", folder, "--json")
    assert code == 0, err
    redrawn = [r["prediction"] for r in json_lines(out)]
    agreement = np.mean(np.equal(redrawn, direct))
    assert agreement >= 0.9, f"preprocessed redrawn digits agree with the originals on only {agreement:.0%}"


# ---------------------------------------------------------------------------- the menu


class FakeTerminal(io.StringIO):
    """Standard input that claims to be a terminal and answers with the given lines."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_display(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


def test_menu_random_test_image_prints_and_saves_figure(checkpoint, fake_mnist, tmp_path, capsys, monkeypatch, no_display):
    monkeypatch.setattr("sys.stdin", FakeTerminal("1\nq\n"))
    figure = tmp_path / "menu.png"
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--data-dir", fake_mnist, "--out", figure)
    assert code == 0, err
    assert "1) a random test-set image" in out and "2) your own image" in out
    assert "mnist-test[" in out and "predicted " in out and "confidence" in out, out
    assert f"figure saved to {figure} (no display available)" in out
    assert figure.read_bytes().startswith(PNG_MAGIC)


def test_menu_own_image_recovers_from_a_bad_path_and_ends_at_eof(checkpoint, digits_dir, tmp_path, capsys, monkeypatch, no_display):
    image = digits_dir / "a_one.png"
    answers = f"2\n{tmp_path / 'typo.png'}\n7\n2\n'{image}'\n"  # no 'q': the input just ends
    monkeypatch.setattr("sys.stdin", FakeTerminal(answers))
    monkeypatch.chdir(tmp_path)  # the default figure file lands here
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint)
    assert code == 0, err
    assert err.count("error: ") == 1 and "typo.png does not exist" in err and "Traceback" not in err
    assert "please answer 1, 2 or q" in out
    assert f"{image}: predicted " in out
    assert (tmp_path / infer.DEFAULT_FIGURE).read_bytes().startswith(PNG_MAGIC)


def test_menu_shows_a_window_where_there_is_a_display(checkpoint, fake_mnist, capsys, monkeypatch, no_display):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(infer, "display_available", lambda: True)
    monkeypatch.setattr(plt, "show", lambda: shown.append([len(fig.axes) for fig in map(plt.figure, plt.get_fignums())]))
    monkeypatch.setattr("sys.stdin", FakeTerminal("1\n1\nq\n"))
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint, "--data-dir", fake_mnist, "--seed", "0")
    assert code == 0, err
    assert shown == [[4], [4]], "each answer shows one figure (input, probabilities, two rasters), closed afterwards"
    assert out.count("predicted ") == 2 and "figure saved" not in out
    assert not plt.get_fignums(), "figures must be closed after the window is dismissed"


def test_no_arguments_without_a_terminal_prints_usage(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run_infer(capsys, "--checkpoint", checkpoint)
    assert code == 2 and out == ""
    assert err.startswith("usage: ")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--image" in errors[0] and "Traceback" not in err


# ---------------------------------------------------------------------------- bad input


class RunsCode:
    """Unpickling this object calls ``open(path, "w")``: proof that the loader ran foreign code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def bad_setup(kind: str, folder: Path, checkpoint: Path, fake_mnist: Path) -> tuple[list, str]:
    """Arguments that must fail with exit code 2, and a phrase the one-line message must contain."""
    good_image = draw_digit(folder / "good.png", "one")
    with_image = ["--checkpoint", checkpoint, "--image"]
    if kind == "missing-image":
        return [*with_image, folder / "nope.png"], "nope.png does not exist"
    if kind == "folder-without-images":
        (folder / "empty_dir").mkdir()
        (folder / "empty_dir" / "readme.txt").write_text("x")
        return [*with_image, folder / "empty_dir"], "contains no image files"
    if kind == "empty-file":
        (folder / "zero.png").write_bytes(b"")
        return [*with_image, folder / "zero.png"], "empty file (0 bytes)"
    if kind in ("truncated-png", "truncated-jpeg"):
        suffix = "png" if kind == "truncated-png" else "jpg"
        Image.open(good_image).convert("RGB").save(folder / f"whole.{suffix}")
        data = (folder / f"whole.{suffix}").read_bytes()
        (folder / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
        return [*with_image, folder / f"cut.{suffix}"], "truncated or corrupt"
    if kind == "not-an-image":
        (folder / "digit.png").write_text("hello, I am text\n")
        return [*with_image, folder / "digit.png"], "not an image file"
    if kind == "blank-page":
        Image.new("RGB", (300, 200), "white").save(folder / "blank.png")
        return [*with_image, folder / "blank.png"], "looks blank"
    if kind == "missing-checkpoint":
        return ["--checkpoint", folder / "none.pth", "--image", good_image], "does not exist"
    if kind == "foreign-checkpoint":
        torch.save({"weights": torch.zeros(3), "step": 7}, folder / "foreign.pth")
        return ["--checkpoint", folder / "foreign.pth", "--image", good_image], "not a snn-lif-mnist-mlp checkpoint"
    if kind == "corrupt-checkpoint":
        (folder / "garbage.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
        return ["--checkpoint", folder / "garbage.pth", "--image", good_image], "not a readable PyTorch checkpoint"
    if kind == "malicious-checkpoint":
        torch.save({"format": "snn-lif-mnist-mlp", "format_version": 1, "model_state": RunsCode(folder / "pwned")},
                   folder / "evil.pth")
        return ["--checkpoint", folder / "evil.pth", "--image", good_image], "would run code"
    if kind == "wrong-architecture":
        torch.manual_seed(0)
        payload = model_payload(SpikingMLP(MLPConfig()), **FIXTURE_META)
        payload["config"] = {**payload["config"], "hidden": 64}
        save_checkpoint(folder / "other.pth", payload)
        return ["--checkpoint", folder / "other.pth", "--image", good_image], "does not match the spiking MLP"
    if kind in ("index-too-large", "index-negative"):
        index = "7" if kind == "index-too-large" else "-1"
        return ["--checkpoint", checkpoint, "--data-dir", fake_mnist, "--index", "0", index], "out of range"
    if kind == "bad-figure-format":
        return [*with_image, good_image, "--out", folder / "figure.xyz"], "figure format"
    raise ValueError(kind)


BAD_INPUTS = ["missing-image", "folder-without-images", "empty-file", "truncated-png", "truncated-jpeg",
              "not-an-image", "blank-page", "missing-checkpoint", "foreign-checkpoint", "corrupt-checkpoint",
              "malicious-checkpoint", "wrong-architecture", "index-too-large", "index-negative", "bad-figure-format"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_bad_input_is_one_sentence_and_exit_code_2(kind, as_json, checkpoint, fake_mnist, tmp_path, capsys):
    argv, phrase = bad_setup(kind, tmp_path, checkpoint, fake_mnist)
    code, out, err = run_infer(capsys, *argv, *(["--json"] if as_json else []))
    assert code == 2, f"{kind}: exit code {code}, stderr {err!r}"
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, f"{kind}: expected one line on stderr, got {err!r}"
    assert phrase in err, f"{kind}: {phrase!r} not in {err!r}"
    assert out == "", f"{kind}: nothing may reach stdout, got {out!r}"
    if kind == "malicious-checkpoint":
        assert not (tmp_path / "pwned").exists(), "loading the checkpoint ran the code inside it"
        # sanity: the fixture really is a live exploit when loaded without weights_only
        torch.load(tmp_path / "evil.pth", weights_only=False)["model_state"].close()
        assert (tmp_path / "pwned").exists(), "the malicious fixture should run code when unpickled unsafely"
