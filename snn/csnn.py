"""The convolutional SNN of SpikingJelly's Fashion-MNIST tutorial (its ``CSNN``), on our LIF layer.

    Conv2d(1, C, 3, pad 1, no bias) - BatchNorm2d(C) - IF - MaxPool2d(2)        28x28 -> 14x14
    Conv2d(C, C, 3, pad 1, no bias) - BatchNorm2d(C) - IF - MaxPool2d(2)        14x14 -> 7x7
    Flatten - Linear(C*49, C*16, no bias) - IF - Linear(C*16, 10, no bias) - IF
    output: the firing rate of the last layer (mean over T), T = 4

SpikingJelly's ``IFNode`` is our LIF with ``tau = 1`` (``h = v * 1.0 + x`` is ``v + x`` to the bit),
hard reset to 0, not detached, and the ``atan`` surrogate with alpha 2 (the same formula,
:mod:`snn.lif.spec`). One difference is definitional: SpikingJelly spikes at ``h >= thresh``, ours at
``h > thresh`` (the seed's strict threshold), so the two disagree exactly where a potential lands
on the threshold; elsewhere the outputs are equal (``tests/test_csnn.py`` measures both).

:class:`SpikingCSNN` computes that function with less work, like :class:`snn.model.SpikingMLP`:

* Direct encoding shows the same image at every step, so ``bn1(conv1(x))`` is computed once per
  sample and handed to the first LIF as a stride-0 view over T (T times fewer conv1/BN1 FLOPs, no
  copy). In training mode this is exact too: the batch statistics over T identical copies of a
  batch are those of the batch (the mean and the biased variance do not change when every sample
  is repeated). Only the running variance's unbiased correction ``n / (n - 1)`` depends on the
  count, so :class:`RepeatedInputBatchNorm2d` updates it with the count SpikingJelly sees (T x).
* Every later layer works per step by folding T into the batch (``[B*T, ...]``), as
  SpikingJelly's ``SeqToANNContainer`` does; tensors are ``[B, T, ...]`` (time on dim 1).
* Each conv block's LIF and 2x2 max-pooling run as one pass (:func:`snn.lif.pool.lif_max_pool2d`:
  the fused C kernel on the CPU, torch backend): the full-resolution spikes, the pooling's indices
  and the full-resolution spike gradient are never stored, and the spikes and gradients are those of
  the two layers one after the other, bit for bit. :meth:`SpikingCSNN.forward_with_spikes`, which
  returns those spikes (firing rates, figures), runs the layers unfused.

Parameter and buffer names are those of nn.Conv2d/BatchNorm2d/Linear, so SpikingJelly weights map
one to one (``conv_fc.0`` -> ``conv1``, ``conv_fc.1`` -> ``bn1``, ... see :data:`SPIKINGJELLY_NAMES`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from snn.lif.layers import LIFSpike
from snn.lif.pool import lif_max_pool2d, unfused
from snn.lif.spec import LIFOptions
from snn.memory import check_memory, csnn_forward_low
from snn.time_distributed import direct_encode, fold_time, unfold_time

IF_TAU = 1.0  # SpikingJelly's IFNode: no leak


@dataclass(frozen=True)
class CSNNConfig(LIFOptions):
    """Everything that fixes the CSNN's function (stored in checkpoints, flat): the neuron's options
    (:class:`snn.lif.spec.LIFOptions`; ``.spec`` is the layers' spec) and the fields below. Defaults:
    SpikingJelly's tutorial network (C = 128, T = 4, IF neurons with the atan surrogate)."""

    channels: int = 128
    num_classes: int = 10
    time_steps: int = 4
    tau: float = IF_TAU
    thresh: float = 1.0
    surrogate: str = "atan"  # SpikingJelly's ATan() (alpha None = its default, 2)
    memory: str = "plain"  # "low": bits and recomputed blocks in training (snn.memory; same function)

    def to_dict(self) -> dict:
        return asdict(self)

    def checked(self) -> "CSNNConfig":
        """Self, once the neuron options are known to go together (else LIFSpec's ValueError)."""
        self.spec  # noqa: B018  (constructing the spec validates it)
        if self.channels < 1 or self.time_steps < 1:
            raise ValueError(f"channels and time_steps must be >= 1, got {self.channels} and {self.time_steps}")
        check_memory(self.memory)
        return self


class RepeatedInputBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d of a batch that stands for ``repeats`` identical copies of itself.

    The output (batch mean, biased variance) is that of the repeated batch; the running variance
    is updated with the unbiased correction of the repeated count, ``n*r / (n*r - 1)``, so the
    running statistics are those nn.BatchNorm2d keeps when it sees the copies. Same parameters and
    buffers as nn.BatchNorm2d. With ``repeats = 1`` it is nn.BatchNorm2d.
    """

    def __init__(self, num_features: int, repeats: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats) or self.repeats == 1:
            return super().forward(x)
        # Normalise with the batch statistics (no running-stat update inside the native kernel, the
        # kernel F.batch_norm calls on the CPU) ...
        out, mean, invstd = torch.native_batch_norm(x, self.weight, self.bias, None, None, True, 0.0, self.eps)
        # ... and update the running statistics with the count of the repeated batch, from the
        # statistics the kernel computed (no second pass over x: var = invstd**-2 - eps).
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
            var = invstd.double().pow(-2).sub(self.eps).float()
            count = x.numel() // x.shape[1] * self.repeats
            self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            self.running_var.mul_(1 - factor).add_(var, alpha=factor * count / max(count - 1, 1))
        return out


class SpikingCSNN(nn.Module):
    """SpikingJelly's CSNN on images ``[B, 1, 28, 28]`` (or ``[B, 28, 28]``, ``[B, 784]``).

    ``forward`` returns the firing rate of the 10 output neurons ``[B, 10]`` (mean over T), which
    the training loss and the prediction (argmax) use as the network's scores.
    """

    spiking_layers = ("lif1", "lif2", "lif3", "lif4")

    def __init__(self, config: CSNNConfig = CSNNConfig(), backend: str = "torch"):
        super().__init__()
        self.config = config.checked()
        spec, channels = config.spec, config.channels

        def lif() -> LIFSpike:
            return LIFSpike(tau=config.tau, thresh=config.thresh, spec=spec, backend=backend)

        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = RepeatedInputBatchNorm2d(channels, repeats=config.time_steps)
        self.lif1 = lif()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.lif2 = lif()
        self.fc1 = nn.Linear(channels * 7 * 7, channels * 4 * 4, bias=False)
        self.lif3 = lif()
        self.fc2 = nn.Linear(channels * 4 * 4, config.num_classes, bias=False)
        self.lif4 = lif()

    def forward_with_spikes(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output firing rates ``[B, 10]`` and the spikes of the four LIF layers: ``[B, T, C, 28, 28]``,
        ``[B, T, C, 14, 14]``, ``[B, T, C*16]``, ``[B, T, 10]``."""
        return self._run(images, keep_spikes=True)

    def _run(self, images: torch.Tensor, keep_spikes: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The network; ``keep_spikes=False`` lets each conv block's LIF and max-pooling run as one
        fused pass (:func:`snn.lif.pool.lif_max_pool2d`: the same function, without storing the
        full-resolution spikes), and returns None for the spikes."""
        batch, steps = images.shape[0], self.config.time_steps

        def lif_pool(lif: LIFSpike, x: torch.Tensor):
            return unfused(lif, x) if keep_spikes else (lif_max_pool2d(lif, x), None)

        current = self.bn1(self.conv1(images.reshape(batch, 1, 28, 28)))  # once per sample
        x, spikes1 = lif_pool(self.lif1, direct_encode(current, steps))  # stride-0 time dim
        x, spikes2 = lif_pool(self.lif2, unfold_time(self.bn2(self.conv2(fold_time(x))), batch))
        spikes3 = self.lif3(self.fc1(x.flatten(2)))  # Linear acts on the last dim
        spikes4 = self.lif4(self.fc2(spikes3))
        return spikes4.mean(dim=1), [spikes1, spikes2, spikes3, spikes4] if keep_spikes else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.memory == "low":

            return csnn_forward_low(self, images)
        return self._run(images, keep_spikes=False)[0]


# SpikingJelly's CSNN (examples/conv_fashion_mnist.py) state-dict prefixes -> ours.
SPIKINGJELLY_NAMES = {"conv_fc.0": "conv1", "conv_fc.1": "bn1", "conv_fc.4": "conv2", "conv_fc.5": "bn2",
                      "conv_fc.9": "fc1", "conv_fc.11": "fc2"}


def state_dict_from_spikingjelly(state: dict) -> dict:
    """Rename a SpikingJelly ``CSNN`` state dict to :class:`SpikingCSNN`'s names (tensors shared)."""
    renamed = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in SPIKINGJELLY_NAMES:
            raise KeyError(f"{key} is not a parameter of SpikingJelly's CSNN")
        renamed[f"{SPIKINGJELLY_NAMES[prefix]}.{leaf}"] = value
    return renamed
