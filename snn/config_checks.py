"""The checks a checkpoint's config and weights pass before a model is built from them.

Every config value is checked against a rule (type and range: :data:`CONFIG_RULES`,
:data:`CSNN_CONFIG_RULES`; the neuron options' rules follow from their definition in
:class:`snn.lif.spec.LIFOptions`), every weight for a floating dtype, the shape the config implies
and finite values. A failure is one :class:`UserError` sentence that names the file.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import torch

from snn.csnn import CSNNConfig, SpikingCSNN
from snn.errors import UserError
from snn.lif.spec import OPTION_FIELDS
from snn.memory import MEMORY_MODES
from snn.model import MLPConfig, SpikingMLP

MAX_TIME_STEPS = 1000  # simulation steps; more is a typo or a hostile file, not a model of this project
MAX_HIDDEN = 16384  # neurons per hidden layer (16384^2 fp32 weights are already 1 GiB)
MAX_CHANNELS = 1024  # CSNN channels (fc1 then has 1024*49 x 1024*16 weights: 3.3 GB)


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
