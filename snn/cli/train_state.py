"""The files of one training run: their paths, the refusal to replace an earlier run's, and the
state ``--resume`` continues from, checked against the command line before any work."""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from snn.checkpoint import load_checkpoint
from snn.cli.train_args import CONFIG_ARGS, CSNN_CONFIG_ARGS, RESUME_ARGS, flag
from snn.config_checks import model_kind, validate_config, validate_weights
from snn.csnn import CSNNConfig
from snn.errors import UserError
from snn.model import MLPConfig
from snn.safe_files import check_output_file


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
