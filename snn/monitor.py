"""What researchers report about a spiking network: per-layer firing rates and synaptic operations.

:func:`layer_activity` runs a model's ``forward_with_spikes`` over some images (no gradient) and
returns, per sample:

* ``firing_rates``: for each LIF layer, the share of neuron-steps that spiked;
* ``synops``: the synaptic operations each weight layer performs. A layer fed by spikes does one
  accumulate (AC) per spike and outgoing synapse; the first layer, fed by the real-valued image,
  does multiply-accumulates (MACs). Counted as our models compute: the first layer runs once per
  sample (its input is the same at every step), the others once per step. The usual energy
  estimate is ``E = MACs * E_MAC + ACs * E_AC`` (e.g. 4.6 pJ and 0.9 pJ for fp32 at 45 nm,
  Horowitz 2014); ``energy_pj`` gives it with those numbers.

:class:`ActivityMeter` holds the running sums, so a test pass can meter the batches it runs anyway
(:func:`snn.training.evaluate` with ``activity_samples``; under torchrun the ranks' sums are added).

Convolutions count exactly, borders included: an input pixel of a 3x3 convolution with padding 1
reaches 9, 6 or 4 output positions per output channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from snn.csnn import SpikingCSNN
from snn.data import to_float_images
from snn.model import SpikingMLP

E_MAC_PJ, E_AC_PJ = 4.6, 0.9  # fp32 multiply-accumulate / accumulate at 45 nm (Horowitz, ISSCC 2014)


def _conv_fanout(spikes: torch.Tensor, out_channels: int, kernel: int = 3, padding: int = 1) -> torch.Tensor:
    """ACs of a stride-1 convolution fed ``spikes [N, C, H, W]``: each spike times the number of
    output positions that see it, times the output channels."""
    ones = torch.ones(1, 1, kernel, kernel, dtype=spikes.dtype, device=spikes.device)
    reach = F.conv_transpose2d(torch.ones(1, 1, *spikes.shape[-2:], dtype=spikes.dtype, device=spikes.device),
                               ones, padding=padding)  # how many outputs each input position feeds
    return (spikes.sum(dim=(0, 1)) * reach[0, 0]).sum() * out_channels


def _synops(model, images: torch.Tensor, spikes: list[torch.Tensor]) -> dict[str, dict[str, float]]:
    batch = images.shape[0]
    if isinstance(model, SpikingCSNN):
        channels = model.config.channels
        pooled1 = F.max_pool2d(spikes[0].flatten(0, 1), 2)  # what conv2 sees
        pooled2 = F.max_pool2d(spikes[1].flatten(0, 1), 2)  # what fc1 sees
        return {
            "conv1": {"MAC": 9 * channels * 28 * 28 * batch, "AC": 0.0},
            "conv2": {"MAC": 0.0, "AC": float(_conv_fanout(pooled1.double(), channels))},
            "fc1": {"MAC": 0.0, "AC": float(pooled2.double().sum()) * model.fc1.out_features},
            "fc2": {"MAC": 0.0, "AC": float(spikes[2].double().sum()) * model.fc2.out_features},
        }
    if isinstance(model, SpikingMLP):
        return {
            "fc1": {"MAC": model.fc1.in_features * model.fc1.out_features * batch, "AC": 0.0},
            "fc2": {"MAC": 0.0, "AC": float(spikes[0].double().sum()) * model.fc2.out_features},
            # fc3 acts once on the spike counts' mean: as many ACs as the per-step layer it replaces
            "fc3": {"MAC": 0.0, "AC": float(spikes[1].double().sum()) * model.fc3.out_features},
        }
    raise TypeError(f"layer_activity: no synaptic-operation count for {type(model).__name__}")


class ActivityMeter:
    """Sums of spikes, neuron-steps and synaptic operations over the batches it is shown
    (:meth:`add`), turned into per-sample figures by :meth:`result`. Under torchrun each rank
    meters its images and :meth:`all_reduce` sums the ranks' counts (float64, so the spike counts,
    whole numbers, add up exactly)."""

    def __init__(self):
        self.spike_sums: dict[str, float] = {}
        self.neuron_steps: dict[str, float] = {}
        self.ops: dict[str, dict[str, float]] = {}
        self.count = 0

    def add(self, model, images: torch.Tensor, spikes: list[torch.Tensor]) -> None:
        """One batch: ``images`` the float images it saw, ``spikes`` its ``forward_with_spikes`` spikes."""
        for index, layer in enumerate(spikes, start=1):
            name = f"lif{index}"
            self.spike_sums[name] = self.spike_sums.get(name, 0.0) + float(layer.double().sum())
            self.neuron_steps[name] = self.neuron_steps.get(name, 0) + layer.numel()
        for name, counts in _synops(model, images, spikes).items():
            total = self.ops.setdefault(name, {"MAC": 0.0, "AC": 0.0})
            total["MAC"] += float(counts["MAC"])
            total["AC"] += float(counts["AC"])
        self.count += len(images)

    def all_reduce(self, world) -> None:
        """Sum the counts of all ranks (every rank must call it, with the same layers seen)."""
        if not world.enabled:
            return
        names, ops = sorted(self.spike_sums), sorted(self.ops)
        flat = torch.tensor([self.spike_sums[n] for n in names] + [float(self.neuron_steps[n]) for n in names]
                            + [self.ops[n][k] for n in ops for k in ("MAC", "AC")] + [float(self.count)],
                            dtype=torch.float64)
        world.all_reduce_sum(flat)
        values = flat.tolist()
        for i, name in enumerate(names):
            self.spike_sums[name], self.neuron_steps[name] = values[i], values[len(names) + i]
        for i, name in enumerate(ops):
            self.ops[name] = {"MAC": values[2 * len(names) + 2 * i], "AC": values[2 * len(names) + 2 * i + 1]}
        self.count = int(values[-1])

    def result(self) -> dict:
        count = max(self.count, 1)
        synops = {name: {kind: value / count for kind, value in counts.items()} for name, counts in self.ops.items()}
        macs = sum(counts["MAC"] for counts in synops.values())
        acs = sum(counts["AC"] for counts in synops.values())
        return {
            "firing_rates": {name: self.spike_sums[name] / max(self.neuron_steps[name], 1) for name in self.spike_sums},
            "synops": synops,
            "MAC": macs,
            "AC": acs,
            "energy_pj": macs * E_MAC_PJ + acs * E_AC_PJ,
            "samples": count,
        }


@torch.no_grad()
def layer_activity(model, images_u8: torch.Tensor, batch_size: int = 500) -> dict:
    """Firing rate of each LIF layer and synaptic operations per sample over ``images_u8``
    (uint8 ``[N, 28, 28]`` on the model's device), in eval mode (the mode it is restored to after).
    (train.py measures the same during its test pass: :func:`snn.training.evaluate`.)"""
    was_training = model.training
    model.eval()
    meter = ActivityMeter()
    try:
        for first in range(0, len(images_u8), batch_size):
            images = to_float_images(images_u8[first:first + batch_size])
            _, spikes = model.forward_with_spikes(images.unsqueeze(1))
            meter.add(model, images, spikes)
    finally:
        model.train(was_training)
    return meter.result()


def format_rates(rates: dict[str, float]) -> str:
    """``lif1 12.3%  lif2 4.5%`` for the progress line."""
    return "  ".join(f"{name} {rate:.1%}" for name, rate in rates.items())


class SpikeMonitor:
    """Spike counts and firing rates of every :class:`~snn.lif.layers.LIFSpike` in *any* network.

    ``layer_activity`` above knows the two workloads' models (and their synaptic operations); this
    works on any ``nn.Module`` holding our layers, by forward hooks::

        with SpikeMonitor(model) as monitor:
            model(x)                    # any number of calls, with or without gradients
        monitor.firing_rates()          # {"lif1": 0.12, ...}: spikes / neuron-steps, per layer name

    Counts are sums of the spike tensors (detached, fp64), so graded spikes count by their value.
    The hooks are removed on leaving the ``with`` block.
    """

    def __init__(self, model: torch.nn.Module):
        from snn.lif.layers import LIFSpike

        self.layers = {name or type(model).__name__: m for name, m in model.named_modules() if isinstance(m, LIFSpike)}
        if not self.layers:
            raise ValueError(f"SpikeMonitor: {type(model).__name__} holds no LIFSpike layer")
        self.spikes = {name: 0.0 for name in self.layers}
        self.neuron_steps = {name: 0 for name in self.layers}
        self._handles = []

    def _hook(self, name: str):
        def record(_module, _inputs, output):
            spikes = output.spikes if hasattr(output, "spikes") else output
            self.spikes[name] += float(spikes.detach().double().sum())
            self.neuron_steps[name] += spikes.numel()
        return record

    def __enter__(self) -> "SpikeMonitor":
        self._handles = [layer.register_forward_hook(self._hook(name)) for name, layer in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def firing_rates(self) -> dict[str, float]:
        return {name: self.spikes[name] / max(self.neuron_steps[name], 1) for name in self.layers}
