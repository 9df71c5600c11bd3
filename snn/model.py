"""The spiking MLP: 784 -> Linear 512 -> LIF -> Linear 512 -> LIF -> Linear 10, mean over T.

:class:`SpikingMLP` computes the seed's function with about half the work, using two identities:

* Direct encoding presents the same image at every step, so ``fc1(x_t)`` is the same for all t:
  compute it once per sample and broadcast it over T as a stride-0 view (the LIF layer reads it
  in place; its gradient is summed over T).
* ``fc3`` is affine and the output is the mean over T, so ``mean_t fc3(s_t) = fc3(mean_t s_t)``:
  average the spikes first and apply ``fc3`` once per sample.

Parameters and state-dict keys are those of the literal per-step model in ``snn.seed_model``, so
weights move freely between the two (a test checks they compute the same outputs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from snn.lif.layers import LIFSpike, direct_encode
from snn.memory import check_memory
from snn.lif.spec import DEFAULT_TAU, DEFAULT_THRESH, LIFOptions


@dataclass(frozen=True)
class MLPConfig(LIFOptions):
    """Everything that fixes the network's function (stored in checkpoints, flat): the neuron's
    options (inherited from :class:`snn.lif.spec.LIFOptions`, the seed's neuron by default; ``.spec``
    is the layers' :class:`LIFSpec`) and the fields below."""

    in_features: int = 784
    hidden: int = 512
    num_classes: int = 10
    time_steps: int = 6
    tau: float = DEFAULT_TAU  # initial value when learn_tau
    thresh: float = DEFAULT_THRESH  # initial value when learn_thresh
    learn_tau: bool = False  # one learnable tau per hidden neuron and layer
    learn_thresh: bool = False  # one learnable thresh per hidden neuron and layer
    # "low": training saves spikes as bits and recomputes blocks (snn.memory); same function and
    # parameters, bit-identical gradients. Not part of the function: a checkpoint trains either way.
    memory: str = "plain"

    def to_dict(self) -> dict:
        return asdict(self)

    def checked(self) -> "MLPConfig":
        """Self, once the neuron options are known to go together (else LIFSpec's ValueError)."""
        self.spec  # noqa: B018  (constructing the spec validates it)
        check_memory(self.memory)
        return self


class SpikingMLP(nn.Module):
    """Spiking MLP on images ``[B, 1, 28, 28]`` (or ``[B, 784]``); returns logits ``[B, 10]``."""

    def __init__(self, config: MLPConfig = MLPConfig(), backend: str = "torch"):
        super().__init__()
        self.config = config
        lif_args = dict(tau=config.tau, thresh=config.thresh, spec=config.spec, learn_tau=config.learn_tau,
                        learn_thresh=config.learn_thresh, param_shape=(config.hidden,), backend=backend)
        self.fc1 = nn.Linear(config.in_features, config.hidden)
        self.lif1 = LIFSpike(**lif_args)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.lif2 = LIFSpike(**lif_args)
        self.fc3 = nn.Linear(config.hidden, config.num_classes)

    def forward_with_spikes(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the spike trains ``[B, T, hidden]`` of both LIF layers (for figures)."""
        current = self.fc1(images.flatten(1))  # [B, hidden], once per sample
        spikes1 = self.lif1(direct_encode(current, self.config.time_steps))  # stride-0 time dim
        spikes2 = self.lif2(self.fc2(spikes1))  # Linear acts on the last dim of [B, T, hidden]
        logits = self.fc3(spikes2.mean(dim=1))  # mean over T before the affine output layer
        return logits, [spikes1, spikes2]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.memory == "low":
            from snn.memory import mlp_forward_low

            return mlp_forward_low(self, images)
        return self.forward_with_spikes(images)[0]
