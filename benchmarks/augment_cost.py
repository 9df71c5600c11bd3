"""What ``--augment full`` costs a training run, measured in one process (issue 21's <= 10 % budget).

    python -m benchmarks.augment_cost [--data-dir ../shared/data] [--rounds 60]

Alternates, round by round, 16 training steps of batch 128 (train.py's MLP, torch backend, Adam)
with augmenting those steps' 2048 images: as training does it (one call per batch) and in one
call (fewer, larger ops, but float intermediates that outgrow the caches). Medians; the cost is a
share of the steps' time (a whole run also evaluates and starts up, which are not augmented).
Whole runs of ``train.py`` on a shared VM drift by more than the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import DEFAULT_MNIST_DIR
from snn.augment import PRESETS, augment_batch, epoch_parameters
from snn.data import read_idx
from snn.model import MLPConfig, SpikingMLP
from snn.training import training_step

BATCH, CHUNK = 128, 2048


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SNN_MNIST_DIR") or DEFAULT_MNIST_DIR))
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args(argv)
    raw = args.data_dir / "MNIST" / "raw"
    images, labels = read_idx(raw / "train-images-idx3-ubyte", 3), read_idx(raw / "train-labels-idx1-ubyte", 1).long()
    torch.manual_seed(0)
    model = SpikingMLP(MLPConfig())
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    spec, draws = PRESETS["full"], epoch_parameters(len(labels), 0, 1, torch.device("cpu"))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"16 training steps": [], "augment, one call per batch (training)": [],
                                     "augment, one call for the 2048": []}
    for r in range(args.rounds):
        first = (r * CHUNK) % (len(labels) - CHUNK)
        index = order[first:first + CHUNK]
        chunk, chunk_draws = images[index], draws[index]
        batches = range(0, CHUNK, BATCH)
        calls = {"16 training steps": lambda: [training_step(model, optimizer, chunk[b:b + BATCH], labels[index[b:b + BATCH]])
                                               for b in batches],
                 "augment, one call per batch (training)": lambda: [augment_batch(chunk[b:b + BATCH], chunk_draws[b:b + BATCH], spec)
                                                                    for b in batches],
                 "augment, one call for the 2048": lambda: augment_batch(chunk, chunk_draws, spec)}
        for name in (list(calls) if r % 2 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t[5:]) for name, t in times.items()}  # the first rounds warm up
    steps = median["16 training steps"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    for name, seconds in median.items():
        share = "" if name == "16 training steps" else f"  = +{100 * seconds / steps:.1f} % of the steps' time"
        print(f"{name}: {1e3 * seconds:.1f} ms{share}")


if __name__ == "__main__":
    main()
