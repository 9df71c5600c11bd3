"""Checkpoint I/O: atomic writes, safe loads (``weights_only=True``), and validation of what was read.

A checkpoint is a plain dict of tensors and primitives::

    {"format": "snn-lif-mnist-mlp", "format_version": 1,
     "model_state": {...}, "config": MLPConfig as dict,
     "meta": {"epoch", "accuracy", "dataset", "backend", "versions", ...},
     "train_state": {... optimizer, scheduler and RNG state, for --resume; optional}}

It never contains pickled objects, so ``torch.load(weights_only=True)`` reads it and refuses any
file that would run code when unpickled. A file that parses is still checked before use: every
config value against :data:`CONFIG_RULES` (type and range), every weight for a floating dtype,
the shape the config implies and finite values (:func:`model_from_checkpoint`).

Writes are atomic (temp file in the same folder, fsync, rename) and turn a full disk or any other
I/O error into one :class:`UserError` sentence with the previous file intact and the temp file
removed. Temp files of a save that was killed outright (SIGKILL, power loss) are named
``.<name>.<random>.tmp`` and are removed by :func:`remove_stale_temp_files` at the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import pickle
import platform
import signal
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Callable

import torch

from snn.errors import UserError
from snn.csnn import CSNNConfig, SpikingCSNN
from snn.memory import MEMORY_MODES
from snn.model import MLPConfig, SpikingMLP
from snn.lif.spec import OPTION_FIELDS

FORMAT = "snn-lif-mnist-mlp"
FORMAT_VERSION = 1
TEMP_SUFFIX = ".tmp"
MAX_TIME_STEPS = 1000  # simulation steps; more is a typo or a hostile file, not a model of this project
MAX_HIDDEN = 16384  # neurons per hidden layer (16384^2 fp32 weights are already 1 GiB)
MAX_CHANNELS = 1024  # CSNN channels (fc1 then has 1024*49 x 1024*16 weights: 3.3 GB)


def versions() -> dict:
    """Library versions recorded in every checkpoint."""
    info = {"python": platform.python_version(), "torch": str(torch.__version__)}  # TorchVersion is not weights-only safe
    try:
        import triton

        info["triton"] = str(triton.__version__)
    except ImportError:
        info["triton"] = None
    return info


# ---------------------------------------------------------------------------- config validation


def _integer(low: int, high: int) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        if not low <= value <= high:
            return f"must be in {low}..{high}, got {value}"
        return None
    return check


def _exactly(expected) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        return None if value == expected and type(value) is type(expected) else f"must be {expected!r}, got {value!r}"
    return check


def _finite_float(nonzero: bool = False, positive: bool = False) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        if nonzero and value == 0:
            return "must not be 0"
        if positive and value <= 0:
            return f"must be positive, got {value}"
        return None
    return check


def _of_type(kind: type) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        return None if type(value) is kind else f"must be a {kind.__name__}, got {type(value).__name__}"
    return check


def _one_of(choices: tuple) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        return None if isinstance(value, str) and value in choices else f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
    return check


def _optional(rule: Callable[[object], str | None]) -> Callable[[object], str | None]:
    return lambda value: None if value is None else rule(value)


def option_rule(option: dataclasses.Field) -> Callable[[object], str | None]:
    """The check of one neuron option, from its definition in :class:`snn.lif.spec.LIFOptions`."""
    if "choices" in option.metadata:
        rule = _one_of(option.metadata["choices"])
    elif isinstance(option.default, bool):
        rule = _of_type(bool)
    else:
        rule = _finite_float(positive=option.metadata.get("positive", False))
    return _optional(rule) if option.default is None else rule


# The rules of the fields every model config shares: T, tau, thresh and the neuron's options.
NEURON_RULES: dict[str, Callable[[object], str | None]] = {
    "time_steps": _integer(1, MAX_TIME_STEPS),
    "tau": _finite_float(),
    "thresh": _finite_float(),
    **{option.name: option_rule(option) for option in OPTION_FIELDS},
}

# One rule per MLPConfig field. A field added to MLPConfig without a rule here is checked by its
# annotated type (see config_rule), so new neuron options are validated from the day they exist.
CONFIG_RULES: dict[str, Callable[[object], str | None]] = {
    "in_features": _exactly(784),  # 28x28 MNIST images
    "hidden": _integer(1, MAX_HIDDEN),
    "num_classes": _exactly(10),
    **NEURON_RULES,
    "learn_tau": _of_type(bool),
    "learn_thresh": _of_type(bool),
    "memory": _one_of(MEMORY_MODES),  # how training steps keep activations (snn.memory): not the function
}


# One rule per CSNNConfig field (snn.csnn), like CONFIG_RULES.
CSNN_CONFIG_RULES: dict[str, Callable[[object], str | None]] = {
    "channels": _integer(1, MAX_CHANNELS),
    "num_classes": _exactly(10),
    **NEURON_RULES,
    "memory": _one_of(MEMORY_MODES),
}

# The models a checkpoint can hold: its "model" entry (absent in checkpoints written before the
# CSNN existed: "mlp") -> (config class, its rules, module class).
MODELS = {"mlp": (MLPConfig, CONFIG_RULES, SpikingMLP), "csnn": (CSNNConfig, CSNN_CONFIG_RULES, SpikingCSNN)}
MODEL_NAMES = {"mlp": "spiking MLP", "csnn": "convolutional SNN (CSNN)"}


def model_kind(checkpoint: dict, path: str | Path = "checkpoint") -> str:
    """Which model a checkpoint holds (``"mlp"`` for checkpoints written before there was a choice)."""
    kind = checkpoint.get("model", "mlp")
    if kind not in MODELS:
        raise UserError(f"checkpoint {path} holds a model of unknown kind {kind!r}; this project builds "
                        f"{' and '.join(map(repr, MODELS))}.")
    return kind


def config_rule(field: dataclasses.Field, rules: dict | None = None) -> Callable[[object], str | None]:
    """The check for one config field: from ``rules`` (default :data:`CONFIG_RULES`), else from its annotated type."""
    rules = CONFIG_RULES if rules is None else rules
    if field.name in rules:
        return rules[field.name]
    kind = {"int": int, "float": float, "bool": bool, "str": str}.get(str(field.type).replace("builtins.", ""))
    if kind is int:
        return _integer(0, 2**31 - 1)
    if kind is float:
        return _finite_float()
    if kind is not None:
        return _of_type(kind)
    raise TypeError(f"MLPConfig.{field.name} has type {field.type}, which CONFIG_RULES does not know; add a rule")


def validate_config(config: object, path: str | Path = "checkpoint", model: str = "mlp") -> MLPConfig | CSNNConfig:
    """An :class:`MLPConfig` (or, for ``model="csnn"``, a :class:`CSNNConfig`) from a checkpoint's
    ``config`` dict, every value checked.

    Missing fields take MLPConfig's defaults (checkpoints written before a field existed);
    unknown fields and values of the wrong type or out of range raise :class:`UserError`.
    """
    if not isinstance(config, dict):
        raise UserError(f"checkpoint {path} has no valid model config (got {type(config).__name__}).")
    if "gamma" in config and "alpha" not in config:  # written before the neuron options: the triangle's alpha
        config = {("alpha" if key == "gamma" else key): value for key, value in config.items()}
    config_class, rules, _ = MODELS[model]
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(str(key) for key in config if key not in fields)
    if unknown:
        raise UserError(f"checkpoint {path} has unknown config fields {', '.join(unknown)}; it was written by another version.")
    for name, value in config.items():
        problem = config_rule(fields[name], rules)(value)
        if problem:
            raise UserError(f"checkpoint {path} has an invalid config: {name} {problem}.")
    try:
        return config_class(**config).checked()
    except ValueError as exc:  # options valid one by one but not together (e.g. v_reset with a soft reset)
        raise UserError(f"checkpoint {path} has an invalid config: {exc}.") from None


def validate_weights(state: object, config: MLPConfig | CSNNConfig, path: str | Path = "checkpoint") -> None:
    """Check a state dict against the model ``config`` describes, without allocating that model:
    the same keys and shapes, floating dtypes, finite values."""
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} has no model weights (got {type(state).__name__}).")
    with torch.device("meta"):  # shapes only: a hostile config cannot make us allocate gigabytes
        module = SpikingCSNN if isinstance(config, CSNNConfig) else SpikingMLP
        expected = {key: tuple(value.shape) for key, value in module(config).state_dict().items()}
    architecture = "convolutional SNN (CSNN)" if isinstance(config, CSNNConfig) else "spiking MLP"
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = "; ".join(part for part in (missing and f"missing {', '.join(missing)}",
                                             unexpected and f"unexpected {', '.join(map(str, unexpected))}") if part)
        raise UserError(f"checkpoint {path} does not match the {architecture} architecture ({detail}).")
    for key, shape in expected.items():
        tensor = state[key]
        if isinstance(tensor, torch.Tensor) and key.endswith("num_batches_tracked"):  # BatchNorm's step counter
            if tensor.dtype != torch.int64 or tensor.numel() != 1 or int(tensor) < 0:
                raise UserError(f"checkpoint {path} has an invalid {key} (a non-negative int64 count is expected).")
            continue
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"checkpoint {path} has non-float weights: {key} is {kind}.")
        if tuple(tensor.shape) != shape:
            raise UserError(f"checkpoint {path} does not match the {architecture} architecture "
                            f"({key} has shape {list(tensor.shape)}, the config implies {list(shape)}).")
        if not bool(torch.isfinite(tensor).all()):
            raise UserError(f"checkpoint {path} has non-finite weights (NaN or inf in {key}); it cannot be used.")


# ---------------------------------------------------------------------------- writing


@contextlib.contextmanager
def deferred_interrupt():
    """Let a save finish before Ctrl-C takes effect: a SIGINT inside the block is held and raised
    as :class:`KeyboardInterrupt` at its end; a second one interrupts at once (the temp file is
    still removed). Only in the main thread, where Python delivers signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); harmless where directories cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _ErrorRecordingFile:
    """A binary file that remembers the first :class:`OSError` of a write or flush (see :func:`atomic_write`)."""

    def __init__(self, raw):
        self._raw = raw
        self.error: OSError | None = None

    def _recorded(self, method, *args):
        try:
            return method(*args)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def write(self, data):
        return self._recorded(self._raw.write, data)

    def flush(self):
        return self._recorded(self._raw.flush)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def atomic_write(path: str | Path, write: Callable, what: str = "file") -> None:
    """Call ``write(handle)`` on a temp file beside ``path``, fsync it and rename it over ``path``.

    On any failure, Ctrl-C included, the temp file is removed and ``path`` keeps its previous
    content; an :class:`OSError` (full disk, I/O error, permissions) becomes a :class:`UserError`.
    """
    path = Path(path)
    tmp_name = None
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # the mode open() would give: mkstemp's is always 0600
        with os.fdopen(fd, "wb") as raw:
            handle = _ErrorRecordingFile(raw)
            write(handle)
            handle.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        # A writer in C++ (torch.save's zip writer) turns the OSError of a full disk into its own
        # RuntimeError ("unexpected pos ..."): the OSError the file recorded is the real cause.
        cause = exc if isinstance(exc, OSError) else getattr(handle, "error", None)
        if cause is None:
            raise
        raise UserError(f"cannot write the {what} {path}: {_describe(cause)}; "
                        f"the previous {path.name} (if any) is unchanged.") from cause
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, handle),
                 what="checkpoint")


def append_line(path: str | Path, line: str, what: str = "metrics file") -> None:
    """Append one line to ``path`` and fsync it; on an I/O error the file is cut back to its
    previous length (no half line) and a :class:`UserError` names what failed."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise UserError(f"cannot write the {what} {path}: {_describe(exc)}.") from exc
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise UserError(f"cannot write the {what} {path}: {_describe(exc)}; its earlier lines are unchanged.") from exc
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- output locations, lock


def check_output_file(path: str | Path, what: str) -> None:
    """Refuse, before any work, a ``path`` that cannot be written: a folder, under a file, in a
    read-only or missing-and-uncreatable folder. Creates the parent folders."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"the {what} {path} is a folder; pass a file path.")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot write the {what} {path}: {parent} is a file, not a folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write the {what} {path}: {_describe(exc)} in {path.parent}.") from exc
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write the {what} {path}: the file is read-only.")


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files that a killed save of ``path`` left behind (call under the lock)."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for candidate in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


class RunLock:
    """An exclusive lock on ``<path>`` (e.g. ``mnist_mlp.lock``) for the life of one training run.

    POSIX ``flock``: the kernel releases it when the process ends, however it ends, so a killed run
    never leaves a stale lock. Where ``fcntl`` is missing (Windows) the lock file itself is the
    lock (created exclusively, removed on exit).
    """

    def __init__(self, path: str | Path, what: str = "checkpoint"):
        self.path, self.what, self._fd = Path(path), what, None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            fcntl = None
        message = (f"another training run is writing this {self.what} (it holds the lock {self.path}); "
                   "wait for it to finish or pass another --checkpoint.")
        try:
            if fcntl is None:
                try:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    raise UserError(message + f" (if no run is going, delete {self.path})") from None
                return self
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise UserError(message) from None
                # the holder before us may have removed the file between our open and our lock
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self._fd = fd
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return self
                os.close(fd)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {self.path}: {_describe(exc)}.") from exc

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # unlink while still holding the lock (see the inode check above)
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------------- reading


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint of this project, refusing missing, corrupt, foreign or unsafe files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; train one with 'python train.py' or pass --checkpoint PATH.")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # garbage bytes, not a refused class or function
            raise UserError(f"checkpoint {path} is not a readable PyTorch checkpoint (corrupt pickle data).") from exc
        raise UserError(
            f"checkpoint {path} was refused: it holds objects that would run code when loaded "
            "(only weights-only checkpoints written by train.py are accepted)."
        ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, TypeError, KeyError,
            IndexError, AttributeError, MemoryError) as exc:
        raise UserError(f"checkpoint {path} is not a readable PyTorch checkpoint ({type(exc).__name__}).") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a {FORMAT} checkpoint written by this project's train.py.")
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {checkpoint.get('format_version')}; "
            f"this version of the project reads version {FORMAT_VERSION}."
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict, backend: str, path: str | Path = "checkpoint") -> SpikingMLP | SpikingCSNN:
    """Build the model described by ``checkpoint`` with any backend and load its (validated) weights."""
    kind = model_kind(checkpoint, path)
    config = validate_config(checkpoint.get("config"), path, kind)
    state = checkpoint.get("model_state")
    validate_weights(state, config, path)
    model = MODELS[kind][2](config, backend=backend)
    try:
        model.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"checkpoint {path} does not match the {MODEL_NAMES[kind]} architecture "
                        f"({exc}).".replace("\n", " ")) from exc
    return model
