"""Train the spiking MLP on MNIST and keep the best checkpoint.

    python train.py                         # torch backend, 20 epochs, checkpoints/mnist_mlp.pth
    python train.py --backend triton --batch-size 1024 --amp     # fused kernel, bf16 autocast (GPU)
    python train.py --resume                # continue from the last completed epoch

Writes, beside ``--checkpoint``: the best checkpoint (``mnist_mlp.pth``), the last completed epoch
for ``--resume`` (``mnist_mlp.last.pth``) and one JSON line per epoch (``mnist_mlp.metrics.jsonl``).
A new run refuses to start over the checkpoints of an earlier one: continue it with ``--resume``,
replace it with ``--overwrite`` or pass another ``--checkpoint``. While a run trains it holds
``mnist_mlp.lock``, so a second run on the same checkpoint is refused instead of interleaving.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from snn.lif.backends import BACKENDS
from snn.checkpoint import load_checkpoint, save_checkpoint, versions
from snn.config_checks import MAX_CHANNELS, MAX_TIME_STEPS, model_kind, validate_config, validate_weights
from snn.safe_files import RunLock, append_line, check_output_file, deferred_interrupt, remove_stale_temp_files
from snn.augment import PRESETS
from snn.csnn import CSNNConfig, SpikingCSNN
from snn.data import DATASETS, load_dataset, load_mnist
from snn.device import DEVICE_CHOICES, resolve_device
from snn.memory import MEMORY_MODES
from snn.distributed import SINGLE, World
from snn.distributed import setup as setup_distributed
from snn.distributed import teardown as teardown_distributed
from snn.cli import MAX_SEED, bounded, run_script
from snn.errors import UserError, run_cli
from snn.model import MLPConfig, SpikingMLP
from snn.lif.spec import OPTION_FIELDS, OPTION_NAMES
from snn.monitor import format_rates
from snn.training import LOSSES, OPTIMIZERS, SCHEDULES, Diverged, evaluate, make_optimizer, train_one_epoch

log = logging.getLogger("train")
DEFAULT_AUGMENT = "full"  # chosen by measurement: README, section "Augmentation"

# The ranges of the numeric flags (stated in --help): beyond them a value is a typo, an overflow
# (seeds are 64-bit) or a run that could not finish (a shift past MNIST's margin trains on blank images).
MAX_EPOCHS = 10_000
MAX_BATCH = 1 << 20
MAX_SAMPLES = 1 << 31
MAX_SHIFT = 8
MAX_LR = 10.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="LIF implementation: torch, triton (fused kernel) or reference (the seed's loop); default: torch")
    parser.add_argument("--epochs", type=bounded(int, 1, MAX_EPOCHS), default=None,
                        help=f"total epochs to train, 1..{MAX_EPOCHS} (default: 20 for the MLP, {CPU_EPOCHS} for the CSNN)")
    parser.add_argument("--batch-size", type=bounded(int, 1, MAX_BATCH), default=128, help=f"training batch size, 1..{MAX_BATCH} (default: 128)")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate of the schedule, above 0 and at most 10 (default: 1e-3 for the MLP, 3e-3 for the CSNN)")
    parser.add_argument("--time-steps", type=bounded(int, 1, MAX_TIME_STEPS), default=None,
                        help=f"simulation steps T, 1..{MAX_TIME_STEPS} (default: 6 for the MLP, 4 for the CSNN)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="default: cuda if available")
    parser.add_argument("--data-dir", default="data", help="MNIST root in torchvision's layout (default: data/)")
    parser.add_argument("--checkpoint", default="checkpoints/mnist_mlp.pth", help="best checkpoint path")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the last completed epoch")
    start.add_argument("--overwrite", action="store_true",
                       help="start a new run even though --checkpoint holds an earlier run's model (it is replaced)")
    parser.add_argument("--seed", type=bounded(int, 0, MAX_SEED), default=0, help=f"random seed, 0..{MAX_SEED} (runs are deterministic on CPU)")
    parser.add_argument("--train-samples", type=bounded(int, 1, MAX_SAMPLES), default=None, metavar="N", help="use only the first N training images (N >= 1)")
    parser.add_argument("--test-samples", type=bounded(int, 1, MAX_SAMPLES), default=None, metavar="N", help="evaluate on the first N test images only (N >= 1)")
    parser.add_argument("--max-shift", type=bounded(int, 0, MAX_SHIFT), default=2, metavar="PX",
                        help=f"random translation of training images by up to PX pixels, 0..{MAX_SHIFT} "
                             "(0 = off; MNIST's digits sit in a 20x20 box with a 4-pixel margin; default: 2)")
    parser.add_argument("--augment", choices=tuple(PRESETS), default=None,
                        help="random slant, scale, rotation, elastic wobble and stroke width of training images "
                             f"(snn/augment.py; none = off; default: {DEFAULT_AUGMENT} for the MLP, none for the CSNN)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA; CPU where supported)")
    parser.add_argument("--memory", choices=MEMORY_MODES, default="plain",
                        help="low: save spikes as bits and recompute blocks in the backward (same model and "
                             "gradients, far fewer saved bytes, more time; README 'Memory'); default: plain")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    neuron = parser.add_argument_group("neuron options (snn/lif/spec.py; the defaults are the seed's neuron)")
    add_option_flags(neuron)
    neuron.add_argument("--learn-tau", action="store_true", help="one learnable tau per hidden neuron")
    neuron.add_argument("--learn-thresh", action="store_true", help="one learnable threshold per hidden neuron")
    workload = parser.add_argument_group("model, data and recipe (defaults: the seed's MLP on MNIST)")
    workload.add_argument("--model", choices=("mlp", "csnn"), default="mlp",
                          help="mlp: 784-512-512-10; csnn: SpikingJelly's convolutional SNN (snn/csnn.py); default: mlp")
    workload.add_argument("--dataset", choices=tuple(DATASETS), default="mnist", help="default: mnist")
    workload.add_argument("--channels", type=bounded(int, 1, MAX_CHANNELS), default=None, metavar="C",
                          help=f"CSNN channels C, 1..{MAX_CHANNELS} (default: {CPU_CHANNELS}; SpikingJelly's is 128)")
    workload.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="default: adam (SpikingJelly's CSNN: sgd)")
    workload.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, 0..1 (default: 0.9)")
    workload.add_argument("--schedule", choices=SCHEDULES, default="onecycle",
                          help="LR schedule over all epochs (default: onecycle; SpikingJelly's CSNN: cosine)")
    workload.add_argument("--loss", choices=LOSSES, default=None,
                          help="ce: cross-entropy of the outputs; mse: MSE of the firing rates against one-hot "
                               "(default: ce for the MLP, mse for the CSNN, as SpikingJelly)")
    args = parser.parse_args(argv)
    resolve_model_defaults(args)
    if args.channels is not None and args.model != "csnn":
        parser.error("--channels applies to --model csnn only")
    if args.model == "csnn" and (args.learn_tau or args.learn_thresh):
        parser.error("--learn-tau and --learn-thresh apply to --model mlp only")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum <= 1):
        parser.error(f"--momentum must be in 0..1, got {args.momentum}")
    # (the integer flags' ranges are checked by their bounded() types as they are parsed)
    if not (math.isfinite(args.lr) and 0 < args.lr <= MAX_LR):
        parser.error(f"--lr must be a finite positive number, at most {MAX_LR:g}, got {args.lr}")
    try:
        model_config(args)
    except ValueError as exc:  # LIFSpec's sentence, e.g. a v_reset with a soft reset: it starts with the option
        name, _, rest = str(exc).partition(" ")
        parser.error(f"{option_flag(name)} {rest}" if name in OPTION_NAMES else str(exc))
    return args


MODEL_CONFIGS = {"mlp": MLPConfig, "csnn": CSNNConfig}
MODEL_NAMES_IN_HELP = {"mlp": "the MLP", "csnn": "the CSNN"}


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_defaults(name: str) -> dict:
    """``{model: default}`` of one neuron option, as each model's config class defines it."""
    return {model: getattr(config(), name) for model, config in MODEL_CONFIGS.items()}


def add_option_flags(group) -> None:
    """One flag per neuron option, generated from :class:`snn.lif.spec.LIFOptions` (choices, range,
    help); an option whose default differs between the models is filled in by
    :func:`resolve_model_defaults` from the chosen model's config."""
    for option in OPTION_FIELDS:
        rules, help = option.metadata, option.metadata["help"]
        defaults = option_defaults(option.name)
        if isinstance(option.default, bool):
            assert not any(defaults.values()), "a bool option's flag switches it on"
            group.add_argument(option_flag(option.name), action="store_true", help=help)
            continue
        kind = {"choices": rules["choices"]} if "choices" in rules else {"type": bounded(float, *rules["range"])}
        if "range" in rules:
            help += ", {:g}..{:g}".format(*rules["range"])
        if len(set(defaults.values())) > 1:
            default, said = None, ", ".join(f"{value} for {MODEL_NAMES_IN_HELP[model]}" for model, value in defaults.items())
        else:
            default = defaults["mlp"]
            said = rules.get("default_help", f"{default:g}" if isinstance(default, float) else default)
        group.add_argument(option_flag(option.name), default=default, help=f"{help} (default: {said})", **kind)


# Config fields set from the command line (flag name = field name): the neuron's options and these.
CONFIG_ARGS = ("time_steps", *OPTION_NAMES, "learn_tau", "learn_thresh", "memory")
CSNN_CONFIG_ARGS = ("channels", "time_steps", *OPTION_NAMES, "memory")
CPU_CHANNELS = 32  # the CSNN's default --channels: sized for a 2-core CPU (benchmarks/RESULTS.md)
CPU_EPOCHS = 10  # the CSNN's default --epochs: 91.80 % on Fashion-MNIST in ~16 min at C=32 on the quiet 2-core CPU (benchmarks/RESULTS.md)
MODEL_DEFAULTS = {"mlp": {"epochs": 20, "lr": 1e-3, "time_steps": 6, "loss": "ce", "augment": DEFAULT_AUGMENT},
                  # the CSNN's recipe was measured without the digit augmentation (README, "CSNN")
                  "csnn": {"epochs": CPU_EPOCHS, "lr": 3e-3, "time_steps": 4, "loss": "mse", "channels": CPU_CHANNELS,
                           "augment": "none"}}


ACTIVITY_SAMPLES = 1000  # test images over which each epoch's firing rates and synaptic operations are measured


def resolve_model_defaults(args: argparse.Namespace) -> None:
    """Fill the flags whose default depends on --model (left None by the parser): the recipe's
    (``MODEL_DEFAULTS``) and the neuron options' (the model config's defaults)."""
    model = getattr(args, "model", "mlp")
    options = {name: option_defaults(name)[model] for name in OPTION_NAMES}
    for name, value in {**options, **MODEL_DEFAULTS[model]}.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def model_config(args: argparse.Namespace) -> MLPConfig | CSNNConfig:
    if getattr(args, "model", "mlp") == "csnn":
        return CSNNConfig(**{name: getattr(args, name) for name in CSNN_CONFIG_ARGS}).checked()
    return MLPConfig(**{name: getattr(args, name) for name in CONFIG_ARGS}).checked()


# Arguments that fix the LR schedule, the data order or the data itself: a resumed run must use the
# values the run started with (they are stored in the .last.pth) or it would silently train a
# different schedule. --backend, --device, --amp, --no-progress and --data-dir may change.
RESUME_ARGS = ("epochs", "batch_size", "lr", "time_steps", "seed", "train_samples", "test_samples", "max_shift",
               "model", "dataset", "channels", "optimizer", "momentum", "schedule", "loss", "augment")


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


def flag(name: str, value) -> str:
    """``("train_samples", 2000)`` -> ``--train-samples 2000`` (``None`` reads as "all")."""
    return f"--{name.replace('_', '-')} {'all' if value is None else value}"


@dataclass
class RunState:
    """What this run has on disk, for the message when Ctrl-C stops it."""

    last_path: Path
    last_epoch: int | None = None  # the epoch in last_path that this run wrote or resumed from
    started: bool = False  # past the up-front checks, so the files in last_path belong to this run

    def interrupted_message(self) -> str:
        if not self.started:
            return "interrupted before training started; no file was changed."
        if self.last_epoch is None:
            return "interrupted during the first epoch; this run saved nothing yet (start it again)."
        return (f"interrupted: epoch {self.last_epoch} is the last completed one, saved in {self.last_path} "
                "(continue with --resume); the best checkpoint is intact.")


@dataclass
class Paths:
    checkpoint: Path
    last: Path
    metrics: Path
    lock: Path

    @classmethod
    def of(cls, checkpoint: str) -> "Paths":
        path = Path(checkpoint)
        for suffix in (".last.pth", ".metrics.jsonl", ".lock"):
            if path.name.endswith(suffix):
                best = path.name[: -len(suffix)] + ".pth"
                raise UserError(f"--checkpoint {path} names a file that train.py writes beside the best checkpoint; "
                                f"pass the best checkpoint's path instead (--checkpoint {path.with_name(best)}).")
        return cls(path, sidecar(path, ".last.pth"), sidecar(path, ".metrics.jsonl"), sidecar(path, ".lock"))

    def check_writable(self) -> None:
        check_output_file(self.checkpoint, "checkpoint")
        check_output_file(self.last, "checkpoint")
        check_output_file(self.metrics, "metrics file")


def refuse_to_replace(paths: Paths, overwrite: bool) -> None:
    """A new run never silently replaces an earlier run's checkpoints, and never replaces a file that
    is not one of our checkpoints (a user's notes.txt is not "a model"), not even with ``--overwrite``."""
    existing = [path for path in (paths.checkpoint, paths.last) if os.path.lexists(path)]
    for path in existing:
        try:
            load_checkpoint(path)
        except UserError:
            raise UserError(f"{path} exists and is not a checkpoint written by train.py, so it is never replaced "
                            "(not even with --overwrite); pass another --checkpoint PATH.") from None
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already holds a model from an earlier run; continue that run with --resume, "
                        "replace it with --overwrite, or pass another --checkpoint PATH.")


TRAIN_STATE_KEYS = {"optimizer": dict, "scheduler": dict, "rng": dict, "best_accuracy": float, "epochs": int, "batch_size": int}


def load_resume_state(paths: Paths, args: argparse.Namespace, config: MLPConfig, device) -> dict:
    """The ``.last.pth`` to resume from, checked against this command line before any work."""
    last = paths.last
    if not os.path.lexists(last):
        hint = (f" ({paths.checkpoint} is a best checkpoint, which holds no training state)"
                if paths.checkpoint.exists() else "")
        raise UserError(f"--resume: {last} does not exist{hint}; start a new run without --resume.")
    state = load_checkpoint(last, map_location=device)
    train_state, meta = state.get("train_state"), state.get("meta")
    if not isinstance(train_state, dict):
        raise UserError(f"--resume: {last} holds no training state: it is a best checkpoint, not the "
                        ".last.pth that train.py writes for --resume.")
    for key, kind in TRAIN_STATE_KEYS.items():
        if not isinstance(train_state.get(key), kind) or isinstance(train_state.get(key), bool):
            raise UserError(f"--resume: {last} has a damaged training state ({key} is missing or not a {kind.__name__}).")
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int) or not 1 <= meta["epoch"] <= train_state["epochs"]:
        raise UserError(f"--resume: {last} has a damaged training state (no valid completed epoch).")
    stored_config = validate_config(state.get("config"), last, model_kind(state, last))
    validate_weights(state.get("model_state"), stored_config, last)
    # --memory is how a step keeps its activations, not the model (same parameters and gradients): a
    # run resumes under either.
    stored_config = dataclasses.replace(stored_config, memory=config.memory)
    stored = dict(train_state.get("args") or {"epochs": train_state["epochs"], "batch_size": train_state["batch_size"]})
    stored.setdefault("time_steps", stored_config.time_steps)
    stored.setdefault("augment", "none")  # runs started before --augment existed trained without it
    ours = {name: getattr(args, name) for name in RESUME_ARGS}
    changed = [name for name in RESUME_ARGS if name in stored and stored[name] != ours[name]]
    if not changed and type(stored_config) is not type(config):
        raise UserError(f"--resume: {last} holds a --model {model_kind(state, last)} run, not --model {args.model}; "
                        "resume with the options the run started with or start a new run with --overwrite.")
    if not changed and stored_config != config:
        differ = [n for n in (CSNN_CONFIG_ARGS if isinstance(config, CSNNConfig) else CONFIG_ARGS)
                  if getattr(stored_config, n) != getattr(config, n)]
        if differ:
            raise UserError(
                f"--resume: {last} holds a model built with {' '.join(flag(n, getattr(stored_config, n)) for n in differ)}, "
                f"not {' '.join(flag(n, getattr(config, n)) for n in differ)}; resume with the options the run started "
                "with or start a new run with --overwrite."
            )
        raise UserError(f"--resume: {last} holds a model with config {stored_config.to_dict()}, which this train.py "
                        f"does not build ({config.to_dict()}); start a new run with --overwrite.")
    if changed:
        names = changed
        raise UserError(
            f"--resume: {last} was started with {' '.join(flag(n, stored.get(n)) for n in names)}, "
            f"not {' '.join(flag(n, ours[n]) for n in names)}; resume with the values the run started with "
            "(they fix the LR schedule and the data order) or start a new run with --overwrite."
        )
    return state


def restore(state: dict, path: Path, model, optimizer, scheduler) -> None:
    train_state = state["train_state"]
    try:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
        set_rng_state(train_state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"--resume: {path} has a damaged training state ({detail}).") from exc


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
