"""The training run behind ``python train.py``: up-front checks, the epoch loop, the checkpoints and
metrics it writes, and the one-sentence errors. Its command line (and the usage text ``--help``
prints) is :mod:`snn.cli.train_args`; the run's files and ``--resume`` are :mod:`snn.cli.train_state`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import sys
import time
from pathlib import Path

import torch

from snn.augment import PRESETS
from snn.checkpoint import save_checkpoint, versions
from snn.cli import run_script
from snn.cli.train_args import RESUME_ARGS, model_config, parse_args
from snn.cli.train_state import Paths, RunState, load_resume_state, refuse_to_replace, restore, rng_state, sidecar
from snn.csnn import SpikingCSNN
from snn.data import load_dataset, load_mnist
from snn.device import resolve_device
from snn.distributed import SINGLE, World
from snn.distributed import setup as setup_distributed
from snn.distributed import teardown as teardown_distributed
from snn.errors import UserError, run_cli
from snn.model import SpikingMLP
from snn.monitor import format_rates
from snn.safe_files import RunLock, append_line, deferred_interrupt, remove_stale_temp_files
from snn.training import Diverged, evaluate, make_optimizer, train_one_epoch

log = logging.getLogger("train")
ACTIVITY_SAMPLES = 1000  # test images over which each epoch's firing rates and synaptic operations are measured


def divergence_advice(args: argparse.Namespace) -> str:
    """What to change after a divergence: the neuron flags the user set away from their defaults
    are suspects as much as the learning rate."""
    changed = [f"--{name.replace('_', '-')} {getattr(args, name):g}" for name in ("alpha", "v_reset")
               if getattr(args, name) not in (None, 0.0)]
    if not changed:
        return f"use a lower --lr than {args.lr:g}"
    return f"check {' and '.join(changed)} (an extreme surrogate or reset value makes the gradients or potentials non-finite), or use a lower --lr than {args.lr:g}"


def next_step_command(args: argparse.Namespace, checkpoint: Path) -> str:
    """An inference command that works anywhere (no terminal needed): one random test image, its figure
    saved to inference.png (without --out, infer.py shows a figure only where there is a display)."""
    words = ["python", "infer.py", "--checkpoint", str(checkpoint), "--backend", args.backend, "--random",
             "--out", "inference.png"]
    if args.data_dir != "data":
        words += ["--data-dir", args.data_dir]
    return " ".join(shlex.quote(word) for word in words)


class _DropKernelNotice(logging.Filter):
    """train.py announces the interpreter itself, before the progress bar; the kernel's own notice
    would otherwise appear in the middle of the bar at the first launch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "interpreter" not in record.getMessage()


def interpreter_notice(backend: str, device: torch.device) -> str | None:
    if backend != "triton" or device.type == "cuda":
        return None
    import snn.kernels as kernels

    if not kernels.INTERPRETED:
        return None
    logging.getLogger("snn.kernels.lif.triton_launch").addFilter(_DropKernelNotice())
    return ("note: --backend triton without CUDA runs the kernel in Triton's CPU interpreter: correct, but "
            "roughly 100-200x slower than --backend torch (seconds per batch instead of milliseconds).")


def run(args: argparse.Namespace, status: RunState | None = None) -> int:
    paths = Paths.of(args.checkpoint)
    status = status or RunState(paths.last)
    world, device = setup_distributed(args.device)  # under torchrun: this rank's device
    device = device or resolve_device(args.device)
    try:
        paths.check_writable()  # on every rank: under torchrun each refuses a bad path with the same sentence
        if not world.is_main:  # one voice: rank 0 prints, shows progress and writes every file
            sys.stdout = open(os.devnull, "w")
            args.no_progress = True
            return train(args, paths, device, status, world)
        with RunLock(paths.lock):
            for path in (paths.checkpoint, paths.last):
                remove_stale_temp_files(path)
            return train(args, paths, device, status, world)
    finally:
        teardown_distributed(world)


def train(args: argparse.Namespace, paths: Paths, device: torch.device, status: RunState, world: World = SINGLE) -> int:
    config = model_config(args)
    resume_state = None
    if args.resume:
        resume_state = load_resume_state(paths, args, config, device)
        stored_world = resume_state["train_state"].get("world_size", 1)
        if stored_world != world.size:
            raise UserError(f"--resume: {paths.last} was trained by {stored_world} process(es) (torchrun "
                            f"--nproc_per_node), not {world.size}; resume with the same number (it fixes the global batch).")
    else:
        refuse_to_replace(paths, args.overwrite)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    data = (load_mnist(args.data_dir) if args.dataset == "mnist" else load_dataset(args.dataset, args.data_dir))
    data = data.limit_train(args.train_samples)
    full_test = len(data.test_labels)
    data = data.limit_test(args.test_samples)
    print(f"dataset: {data.source}")
    data_info = {"name": data.name, "train": len(data.train_labels), "test": len(data.test_labels)}
    if resume_state is not None:
        stored = resume_state["train_state"].get("data")
        if stored is not None and stored != data_info:
            raise UserError(f"--resume: {paths.last} was trained on the {stored['name']} ({stored['train']} train / "
                            f"{stored['test']} test images), but this run found the {data.name} ({data_info['train']} / "
                            f"{data_info['test']}); point --data-dir at the data the run started with.")
    data = data.to(device)
    model = (SpikingCSNN if args.model == "csnn" else SpikingMLP)(config, backend=args.backend).to(device)
    steps_per_epoch = -(-len(data.train_labels) // (args.batch_size * world.size))
    optimizer, scheduler = make_optimizer(model.parameters(), args.lr, args.epochs * steps_per_epoch,
                                          args.optimizer, args.schedule, args.momentum)

    start_epoch, best_accuracy = 1, -1.0
    if resume_state is not None:
        restore(resume_state, paths.last, model, optimizer, scheduler)
        train_state = resume_state["train_state"]
        start_epoch, best_accuracy = resume_state["meta"]["epoch"] + 1, train_state["best_accuracy"]
        status.last_epoch = resume_state["meta"]["epoch"]
        print(f"resuming after epoch {status.last_epoch} (best test accuracy so far {best_accuracy:.4f})")
        if start_epoch > args.epochs:
            print(f"nothing to do: all {args.epochs} epochs are complete.")
            return 0
    status.started = True
    trained = model  # what is saved: the module itself, never the DDP wrapper
    if world.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        print(f"data parallel: {world.size} processes, batch {args.batch_size} each ({args.batch_size * world.size} per step)")
    print(f"backend: {args.backend}   device: {device}   amp: {args.amp}   epochs: {args.epochs}   batch: {args.batch_size}")
    notice = interpreter_notice(args.backend, device)
    if notice:
        print(notice, flush=True)

    if world.is_main:
        append_line(paths.metrics, json.dumps({"event": "start", "dataset": data.source, "backend": args.backend,
                                               "device": str(device), "args": vars(args), "versions": versions()}))
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
                max_shift=args.max_shift, progress=progress, world=world, loss=args.loss,
                augment=PRESETS[args.augment],
            )
        except Diverged as exc:
            kept = (f"{paths.last} still holds epoch {status.last_epoch}" if status.last_epoch is not None
                    else "nothing was saved")
            raise UserError(f"training diverged in epoch {epoch}: {exc.what}; nothing from this epoch was saved "
                            f"({kept}); {divergence_advice(args)}.") from exc
        finally:
            if progress is not None:
                progress.close()
        accuracy, activity = evaluate(trained, data.test_images, data.test_labels, amp=args.amp, world=world,
                                      activity_samples=ACTIVITY_SAMPLES)  # and the firing rates, synaptic ops
        seconds = time.perf_counter() - epoch_start
        meta = {"epoch": epoch, "accuracy": accuracy, "dataset": data.source, "backend": args.backend,
                "versions": versions(), "train_samples": len(data.train_labels)}
        meta["dataset_name"] = data.name
        payload = {"model_state": trained.state_dict(), "config": config.to_dict(), "meta": meta}
        if args.model != "mlp":  # absent = the MLP, so checkpoints stay what older versions wrote
            payload["model"] = args.model
        improved = accuracy > best_accuracy
        best_accuracy = max(best_accuracy, accuracy)
        record = {"event": "epoch", "epoch": epoch, "train_loss": loss, "train_accuracy": train_accuracy,
                  "test_accuracy": accuracy, "lr": scheduler.get_last_lr()[0], "samples_per_s": samples_per_s,
                  "epoch_seconds": seconds, "best": improved, "firing_rates": activity["firing_rates"],
                  "synops_per_sample": {"MAC": activity["MAC"], "AC": activity["AC"], "layers": activity["synops"]}}
        if not world.is_main:
            continue
        with deferred_interrupt():  # Ctrl-C here lets the three writes finish, then stops
            if improved:
                save_checkpoint(paths.checkpoint, payload)
            save_checkpoint(paths.last, {**payload, "train_state": {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "best_accuracy": best_accuracy, "epochs": args.epochs, "batch_size": args.batch_size,
                "args": {name: getattr(args, name) for name in RESUME_ARGS}, "data": data_info,
                "world_size": world.size}})
            status.last_epoch = epoch
            append_line(paths.metrics, json.dumps(record))
        print(f"epoch {epoch:3d}/{args.epochs}  loss {loss:.4f}  train acc {train_accuracy:.4f}  "
              f"test acc {accuracy:.4f}{'  *best*' if improved else ''}  {samples_per_s:,.0f} samples/s  {seconds:.1f} s"
              f"  firing {format_rates(activity['firing_rates'])}")
    if world.enabled:
        difference = world.max_parameter_difference(trained)
        print(f"weights identical on all {world.size} ranks" if difference == 0 else
              f"warning: the ranks' weights differ by up to {difference:.3g}")
    tested = len(data.test_labels)
    which = (f"all {tested:,} images of {data.test_set}" if tested == full_test
             else f"the first {tested:,} of the {full_test:,} images of {data.test_set}")
    if not paths.checkpoint.exists():  # a resumed run whose best epoch came earlier, its file since deleted
        print(f"best test accuracy {best_accuracy:.4f} on {which}; its checkpoint {paths.checkpoint} no longer "
              f"exists (no epoch of this run beat it); the last epoch's model is in {paths.last}")
        print(f"run inference: {next_step_command(args, paths.last)}")
        return 0
    print(f"best test accuracy {best_accuracy:.4f} on {which}, saved to {paths.checkpoint}")
    print(f"run inference: {next_step_command(args, paths.checkpoint)}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    status = RunState(sidecar(Path(args.checkpoint), ".last.pth"))
    return run_cli(lambda parsed: run(parsed, status), args, status.interrupted_message)



def script() -> None:
    """Entry point of ``python train.py`` and of the installed ``snn-train`` command."""
    run_script(main)
