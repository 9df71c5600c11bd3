"""One CPU training pipeline timed in its own process: ``python -m benchmarks.seed_vs_ours seed|ours|ours-aug --data-dir DIR``.

Over the same number of 128-image batches of real MNIST, after a 5-batch warm-up: ``seed``, the plain seed
implementation (torchvision ``MNIST`` + ``ToTensor`` + ``DataLoader(shuffle=True)`` + ``SeedMLP`` + Adam +
cross-entropy); ``ours``, what ``train.py`` runs (the uint8 dataset batched by index, ``SpikingMLP`` torch
backend, ``train_one_epoch``, fused Adam); ``ours-aug``, with train.py's 2-pixel shift augmentation. Separate
processes keep one pipeline's allocator and thread pools out of the other's timings. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PIPELINES = ("seed", "ours", "ours-aug")


def seed_pipeline(data_dir: str, batches: int, batch: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from snn.model import MLPConfig
    from snn.seed_model import SeedMLP

    dataset = datasets.MNIST(data_dir, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True)
    model = SeedMLP(MLPConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()

    def run(n_batches: int) -> None:
        for _, (images, labels) in zip(range(n_batches), loader):
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    run(5)
    start = time.perf_counter()
    run(batches)
    return batches * batch / (time.perf_counter() - start)


def our_pipeline(data_dir: str, batches: int, batch: int, max_shift: int) -> float:
    from snn.data import load_mnist
    from snn.model import MLPConfig, SpikingMLP
    from snn.training import make_adam, train_one_epoch

    data = load_mnist(data_dir, download=False)
    n = batches * batch
    images, labels = data.train_images[:n], data.train_labels[:n]
    model = SpikingMLP(MLPConfig(), backend="torch")
    optimizer = make_adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, optimizer, None, images[: 5 * batch], labels[: 5 * batch],
                    batch_size=batch, seed=0, epoch=0, max_shift=max_shift)
    start = time.perf_counter()
    train_one_epoch(model, optimizer, None, images, labels, batch_size=batch, seed=0, epoch=1, max_shift=max_shift)
    return n / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", choices=PIPELINES)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.pipeline == "seed":
        sps = seed_pipeline(args.data_dir, args.batches, args.batch)
    else:
        sps = our_pipeline(args.data_dir, args.batches, args.batch, max_shift=2 if args.pipeline == "ours-aug" else 0)
    print(json.dumps({"pipeline": args.pipeline, "samples_per_s": sps, "batches": args.batches, "batch": args.batch}))


if __name__ == "__main__":
    main()
