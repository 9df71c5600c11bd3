"""Train the spiking MLP on MNIST and keep the best checkpoint.

    python train.py                         # torch backend, 20 epochs, checkpoints/mnist_mlp.pth
    python train.py --backend triton --batch-size 1024 --amp     # fused kernel, bf16 autocast (GPU)
    python train.py --resume                # continue from the last completed epoch

Writes, beside ``--checkpoint``: the best checkpoint (``mnist_mlp.pth``), the last completed epoch
for ``--resume`` (``mnist_mlp.last.pth``) and one JSON line per epoch (``mnist_mlp.metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch

from snn.backends import BACKENDS
from snn.checkpoint import load_checkpoint, save_checkpoint, versions
from snn.data import load_mnist
from snn.device import DEVICE_CHOICES, resolve_device
from snn.errors import UserError, run_cli
from snn.model import MLPConfig, SpikingMLP
from snn.training import evaluate, make_optimizer, train_one_epoch

log = logging.getLogger("train")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="LIF implementation (default: torch)")
    parser.add_argument("--epochs", type=int, default=20, help="total epochs to train (default: 20)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate of the one-cycle schedule (default: 1e-3)")
    parser.add_argument("--time-steps", type=int, default=6, help="simulation steps T (default: 6)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="default: cuda if available")
    parser.add_argument("--data-dir", default="data", help="MNIST root in torchvision's layout (default: data/)")
    parser.add_argument("--checkpoint", default="checkpoints/mnist_mlp.pth", help="best checkpoint path")
    parser.add_argument("--resume", action="store_true", help="continue from the last completed epoch")
    parser.add_argument("--seed", type=int, default=0, help="random seed (runs are deterministic on CPU)")
    parser.add_argument("--train-samples", type=int, default=None, metavar="N", help="use only the first N training images")
    parser.add_argument("--test-samples", type=int, default=None, metavar="N", help="evaluate on the first N test images only")
    parser.add_argument("--max-shift", type=int, default=2, metavar="PX",
                        help="random translation of training images by up to PX pixels (0 = off; default: 2)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA; CPU where supported)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "time_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_shift < 0:
        parser.error("--max-shift must be 0 or more")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    return args


def sidecar(checkpoint: Path, suffix: str) -> Path:
    """``checkpoints/mnist_mlp.pth`` -> ``checkpoints/mnist_mlp<suffix>``."""
    return checkpoint.with_name(checkpoint.stem + suffix)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    checkpoint_path = Path(args.checkpoint)
    last_path = sidecar(checkpoint_path, ".last.pth")
    metrics_path = sidecar(checkpoint_path, ".metrics.jsonl")
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    data = load_mnist(args.data_dir).limit_train(args.train_samples).limit_test(args.test_samples)
    print(f"dataset: {data.source}")
    data = data.to(device)
    config = MLPConfig(time_steps=args.time_steps)
    model = SpikingMLP(config, backend=args.backend).to(device)
    steps_per_epoch = -(-len(data.train_labels) // args.batch_size)
    optimizer, scheduler = make_optimizer(model.parameters(), args.lr, args.epochs * steps_per_epoch)

    start_epoch, best_accuracy = 1, -1.0
    if args.resume:
        state = load_checkpoint(last_path, map_location=device)
        if state["config"] != config.to_dict():
            raise UserError(f"--resume: {last_path} was trained with {state['config']}, not {config.to_dict()}; pass the same --time-steps.")
        train_state = state["train_state"]
        if train_state["epochs"] != args.epochs or train_state["batch_size"] != args.batch_size:
            raise UserError(
                f"--resume: {last_path} was started with --epochs {train_state['epochs']} --batch-size "
                f"{train_state['batch_size']}; resume with the same values (the LR schedule depends on them)."
            )
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        set_rng_state(train_state["rng"])
        start_epoch, best_accuracy = state["meta"]["epoch"] + 1, train_state["best_accuracy"]
        print(f"resuming after epoch {state['meta']['epoch']} (best test accuracy so far {best_accuracy:.4f})")
        if start_epoch > args.epochs:
            print(f"nothing to do: all {args.epochs} epochs are complete.")
            return 0
    print(f"backend: {args.backend}   device: {device}   amp: {args.amp}   epochs: {args.epochs}   batch: {args.batch_size}")

    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    with metrics_path.open("a") as metrics:
        metrics.write(json.dumps({"event": "start", "dataset": data.source, "backend": args.backend,
                                  "device": str(device), "args": vars(args), "versions": versions()}) + "\n")
        for epoch in range(start_epoch, args.epochs + 1):
            progress = None
            if not args.no_progress:
                from tqdm import tqdm

                progress = tqdm(total=len(data.train_labels), desc=f"epoch {epoch}/{args.epochs}", unit="img", leave=False)
            epoch_start = time.perf_counter()
            try:
                loss, train_accuracy, samples_per_s = train_one_epoch(
                    model, optimizer, scheduler, data.train_images, data.train_labels,
                    batch_size=args.batch_size, seed=args.seed, epoch=epoch, amp=args.amp,
                    max_shift=args.max_shift, progress=progress,
                )
            finally:
                if progress is not None:
                    progress.close()
            accuracy = evaluate(model, data.test_images, data.test_labels, amp=args.amp)
            seconds = time.perf_counter() - epoch_start
            meta = {"epoch": epoch, "accuracy": accuracy, "dataset": data.source, "backend": args.backend,
                    "versions": versions(), "train_samples": len(data.train_labels)}
            payload = {"model_state": model.state_dict(), "config": config.to_dict(), "meta": meta}
            improved = accuracy > best_accuracy
            best_accuracy = max(best_accuracy, accuracy)
            if improved:
                save_checkpoint(checkpoint_path, payload)
            save_checkpoint(last_path, {**payload, "train_state": {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "best_accuracy": best_accuracy, "epochs": args.epochs, "batch_size": args.batch_size}})
            record = {"event": "epoch", "epoch": epoch, "train_loss": loss, "train_accuracy": train_accuracy,
                      "test_accuracy": accuracy, "lr": scheduler.get_last_lr()[0], "samples_per_s": samples_per_s,
                      "epoch_seconds": seconds, "best": improved}
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            print(f"epoch {epoch:3d}/{args.epochs}  loss {loss:.4f}  train acc {train_accuracy:.4f}  "
                  f"test acc {accuracy:.4f}{'  *best*' if improved else ''}  {samples_per_s:,.0f} samples/s  {seconds:.1f} s")
    print(f"best test accuracy {best_accuracy:.4f}, saved to {checkpoint_path}")
    print(f"run inference: python infer.py --checkpoint {checkpoint_path} --backend {args.backend}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    return run_cli(run, args, f"interrupted: the last completed epoch is in {sidecar(Path(args.checkpoint), '.last.pth')} "
                              "(continue with --resume); the best checkpoint is unchanged.")


if __name__ == "__main__":
    sys.exit(main())
