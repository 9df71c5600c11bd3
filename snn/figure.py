"""The inference figure: one row per image, showing what the network saw and how it spiked.

Each row has four panels:

1. the input exactly as the network saw it (the preprocessed 28x28, 0 = black, 1 = white);
2. the class probabilities (softmax of the logits) as bars, the predicted class highlighted;
3. and on: the spike raster of each LIF layer: time step t (rows) by neuron (columns), black where
   the neuron spiked; the title gives the share of neuron-steps that spiked and how many neurons
   fired at least once. A convolutional LIF layer (spikes ``[B, T, C, H, W]``) shows instead the
   spike maps of its first channels, one row per channel and one column per step, and its rate.

A batch of more than :data:`MAX_ROWS` images is split over several figures ("pages"), so no
figure outgrows what a PNG viewer (or Agg's 2**16-pixel limit) can show; see :func:`page_paths`.

Figures are built on :class:`matplotlib.figure.Figure` without pyplot, so building and saving
one needs no display and changes no global state; ``infer.py`` passes a pyplot figure in when it
wants a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

MAX_ROWS = 8  # images per figure; larger batches are split over pages
ROW_HEIGHT = 2.3  # inches
WIDTH = 15.0  # inches
EXTRA_LAYER_WIDTH = 3.0  # inches per LIF layer beyond two (the CSNN has four)
DPI = 120  # the raster panels get ~560 px for 512 neurons, so no neuron is dropped
BAR_COLOUR = "#b8c0c8"
PREDICTED_COLOUR = "#d9480f"


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def _short(name: str, limit: int = 28) -> str:
    """A title-sized name: the file name for paths, trimmed from the left when too long."""
    short = Path(name).name if ("/" in name or "\\" in name) else name
    return short if len(short) <= limit else "..." + short[-(limit - 3):]


def _named(index: int, class_names: Sequence[str] | None) -> str:
    """``3``, or ``3 Dress`` where the classes have names other than their numbers."""
    if class_names is None or class_names[index] == str(index):
        return str(index)
    return f"{index} {class_names[index]}"


def inference_figure(
    images,
    probabilities,
    spikes: Sequence,
    names: Sequence[str],
    labels: Sequence[int | None] | None = None,
    fig: Figure | None = None,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Draw one row per image into ``fig`` (a new :class:`Figure` when ``None``) and return it.

    ``images``: ``[B, 28, 28]`` in [0, 1] (what the network saw); ``probabilities``: ``[B, C]``;
    ``spikes``: one ``[B, T, N]`` tensor per LIF layer; ``names``: B strings for the titles;
    ``labels``: the true class of each image where known (test-set images), else ``None``;
    ``class_names``: names of the classes (Fashion-MNIST's) for the titles, else the numbers alone.
    """
    images, probabilities = _as_numpy(images), _as_numpy(probabilities)
    layers = [_as_numpy(layer) for layer in spikes]
    batch, num_classes = probabilities.shape
    labels = list(labels) if labels is not None else [None] * batch
    width = WIDTH + EXTRA_LAYER_WIDTH * max(len(layers) - 2, 0)  # the MLP's two layers: WIDTH
    compact = len(layers) > 2  # titles on two lines, so that six panels' titles do not run into each other
    if fig is None:
        fig = Figure(figsize=(width, ROW_HEIGHT * batch + (0.5 if title else 0.0)), dpi=DPI, layout="constrained")
    else:
        fig.set_size_inches(width, ROW_HEIGHT * batch + (0.5 if title else 0.0))
        fig.set_layout_engine("constrained")
    if title:
        fig.suptitle(title)
    grid = fig.add_gridspec(batch, 2 + len(layers), width_ratios=[1.0, 1.5] + [3.0] * len(layers))
    classes = np.arange(num_classes)
    for row in range(batch):
        probs = probabilities[row]
        predicted = int(probs.argmax())

        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(images[row], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        label = labels[row]
        ax.set_title(_short(names[row]) + ("" if label is None else f"\nlabel {_named(label, class_names)}"), fontsize=9)

        ax = fig.add_subplot(grid[row, 1])
        colours = [PREDICTED_COLOUR if k == predicted else BAR_COLOUR for k in classes]
        ax.bar(classes, probs, color=colours)
        ax.set_ylim(0.0, 1.0)
        ax.set_xticks(classes)
        ax.tick_params(labelsize=8)
        ax.set_ylabel("probability", fontsize=8)
        verdict = "" if label is None else ("  correct" if label == predicted else "  WRONG")
        ax.set_title(f"predicted {_named(predicted, class_names)} ({probs[predicted]:.1%})"
                     + ("\n" + verdict.strip() if compact and verdict else verdict), fontsize=9)

        for index, layer in enumerate(layers):
            if layer.ndim == 5:  # a convolutional LIF layer [B, T, C, H, W]: spike maps
                _spike_maps(fig.add_subplot(grid[row, 2 + index]), layer[row], index + 1, row == batch - 1)
                continue
            raster = layer[row]  # [T, N]
            steps, neurons = raster.shape
            ax = fig.add_subplot(grid[row, 2 + index])
            ax.imshow(raster, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest",
                      extent=(-0.5, neurons - 0.5, steps + 0.5, 0.5))
            ax.set_yticks(range(1, steps + 1))
            ax.tick_params(labelsize=8)
            ax.set_ylabel("step t", fontsize=8)
            if row == batch - 1:
                ax.set_xlabel("neuron", fontsize=8)
            active = int((raster.sum(axis=0) > 0).sum())
            ax.set_title(f"LIF layer {index + 1}: {raster.mean():.1%} of neuron-steps spike,{chr(10) if compact else ' '}"
                         f"{active}/{neurons} neurons fire", fontsize=9)
    return fig


MAP_CHANNELS = 4  # channels shown per convolutional LIF layer


def _spike_maps(ax, maps: np.ndarray, number: int, last_row: bool = True) -> None:
    """The spike maps ``[T, C, H, W]`` of the first :data:`MAP_CHANNELS` channels: one row per
    channel, one column per step (black = spike), with the layer's firing rate in the title."""
    steps, channels = maps.shape[:2]
    shown = maps[:, :MAP_CHANNELS]
    tiles = np.pad(shown, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=0.5)  # grey frame per map
    mosaic = np.concatenate([np.concatenate(list(tiles[:, c]), axis=1) for c in range(shown.shape[1])], axis=0)
    ax.imshow(mosaic, cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([(t + 0.5) * tiles.shape[-1] for t in range(steps)], [str(t + 1) for t in range(steps)], fontsize=7)
    ax.set_yticks([(c + 0.5) * tiles.shape[-2] for c in range(shown.shape[1])],
                  [f"ch {c}" for c in range(shown.shape[1])], fontsize=7)
    if last_row:
        ax.set_xlabel("step t", fontsize=8)
    ax.set_title(f"LIF layer {number} (conv, {channels} channels, first {shown.shape[1]} shown):\n"
                 f"{maps.mean():.1%} of neuron-steps spike", fontsize=9)


def page_paths(out: str | Path, pages: int) -> list[Path]:
    """Where the figure pages go: ``out`` itself for one page, else ``<stem>-1<suffix>``, ``-2``, ..."""
    out = Path(out)
    if pages == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{page}{out.suffix}") for page in range(1, pages + 1)]


def save_inference_figures(out: str | Path, images, probabilities, spikes, names, labels=None, title=None,
                           class_names=None) -> list[Path]:
    """Save the figure of a batch to ``out`` (split into pages of :data:`MAX_ROWS`); return the paths."""
    batch = len(names)
    pages = max(1, -(-batch // MAX_ROWS))
    paths = page_paths(out, pages)
    for page, path in enumerate(paths):
        rows = slice(page * MAX_ROWS, (page + 1) * MAX_ROWS)
        fig = inference_figure(
            images[rows], probabilities[rows], [layer[rows] for layer in spikes], names[rows],
            None if labels is None else labels[rows], title=title, class_names=class_names,
        )
        save_figure(fig, path)
    return paths


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` to ``path`` atomically (format from the suffix): a full disk or Ctrl-C leaves
    no half-written image, and an I/O error is one :class:`~snn.errors.UserError` sentence."""
    from snn.safe_files import atomic_write

    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=DPI, format=fmt), what="figure")
