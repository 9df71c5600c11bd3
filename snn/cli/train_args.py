"""train.py's command line: its flags (the neuron options' generated from :class:`snn.lif.spec.LIFOptions`),
their ranges, the defaults that depend on ``--model``, and the model config they build."""

from __future__ import annotations

import argparse
import math

from snn.augment import PRESETS
from snn.cli import MAX_SEED, bounded
from snn.config_checks import MAX_CHANNELS, MAX_TIME_STEPS
from snn.csnn import CSNNConfig
from snn.data import DATASETS
from snn.device import DEVICE_CHOICES
from snn.lif.backends import BACKENDS
from snn.lif.spec import OPTION_FIELDS, OPTION_NAMES
from snn.memory import MEMORY_MODES
from snn.model import MLPConfig
from snn.training import LOSSES, OPTIMIZERS, SCHEDULES

USAGE = """Train a spiking network (the MLP on MNIST by default; --model csnn, --dataset fashion-mnist) and keep
the best checkpoint.

    python train.py                         # torch backend, 20 epochs, checkpoints/mnist_mlp.pth
    python train.py --backend triton --batch-size 1024 --amp     # fused kernel, bf16 autocast (GPU)
    python train.py --resume                # continue from the last completed epoch

Writes, beside ``--checkpoint``: the best checkpoint (``mnist_mlp.pth``), the last completed epoch
for ``--resume`` (``mnist_mlp.last.pth``) and one JSON line per epoch (``mnist_mlp.metrics.jsonl``).
A new run refuses to start over the checkpoints of an earlier one: continue it with ``--resume``,
replace it with ``--overwrite`` or pass another ``--checkpoint``. While a run trains it holds
``mnist_mlp.lock``, so a second run on the same checkpoint is refused instead of interleaving.
"""

DEFAULT_AUGMENT = "full"  # chosen by measurement: README, section "Augmentation"

# The ranges of the numeric flags (stated in --help): beyond them a value is a typo, an overflow
# (seeds are 64-bit) or a run that could not finish (a shift past MNIST's margin trains on blank images).
MAX_EPOCHS = 10_000
MAX_BATCH = 1 << 20
MAX_SAMPLES = 1 << 31
MAX_SHIFT = 8
MAX_LR = 10.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="LIF implementation: torch (the fused C kernel on the CPU), eager (plain PyTorch), triton (the fused "
                             "Triton kernel) or reference (the seed's loop); default: torch")
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
    parser.add_argument("--max-shift", type=bounded(int, 0, MAX_SHIFT), default=None, metavar="PX",
                        help=f"random translation of training images by up to PX pixels, 0..{MAX_SHIFT} "
                             "(0 = off; MNIST's digits sit in a 20x20 box with a 4-pixel margin, Fashion-MNIST's items fill "
                             "the frame; default: 2 on MNIST, 0 on Fashion-MNIST)")
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
CPU_EPOCHS = 10  # the CSNN's default --epochs: 92.65 % on Fashion-MNIST in 14 min at C=32 on the 2-core CPU (benchmarks/RESULTS.md)
MODEL_DEFAULTS = {"mlp": {"epochs": 20, "lr": 1e-3, "time_steps": 6, "loss": "ce", "augment": DEFAULT_AUGMENT},
                  # the CSNN's recipe was measured without the digit augmentation (README, "CSNN")
                  "csnn": {"epochs": CPU_EPOCHS, "lr": 3e-3, "time_steps": 4, "loss": "mse", "channels": CPU_CHANNELS,
                           "augment": "none"}}
# Shifts suit MNIST's digits (centred in a margin) but not Fashion-MNIST's frame-filling items: the CSNN on
# Fashion-MNIST reached 91.80 % with 2-pixel shifts and 92.65 % without (10 epochs, benchmarks/RESULTS.md).
DATASET_DEFAULTS = {"mnist": {"max_shift": 2}, "fashion-mnist": {"max_shift": 0}}



def resolve_model_defaults(args: argparse.Namespace) -> None:
    """Fill the flags whose default depends on --model or --dataset (left None by the parser): the
    recipe's (``MODEL_DEFAULTS``, ``DATASET_DEFAULTS``) and the neuron options' (the model config's defaults)."""
    model = getattr(args, "model", "mlp")
    options = {name: option_defaults(name)[model] for name in OPTION_NAMES}
    dataset = DATASET_DEFAULTS[getattr(args, "dataset", "mnist")]
    for name, value in {**options, **MODEL_DEFAULTS[model], **dataset}.items():
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


def flag(name: str, value) -> str:
    """``("train_samples", 2000)`` -> ``--train-samples 2000`` (``None`` reads as "all")."""
    return f"--{name.replace('_', '-')} {'all' if value is None else value}"
