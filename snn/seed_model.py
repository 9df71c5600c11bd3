"""The seed's model, literally: every layer runs at every time step, the output is averaged last.

Kept as the specification :class:`snn.model.SpikingMLP` is tested against, and as the "plain
implementation" the benchmarks compare with. Same parameters and state-dict keys as SpikingMLP.
"""

from __future__ import annotations

import torch
from torch import nn

from snn.lif.layers import apply_per_step
from snn.lif.reference import lif_reference
from snn.model import MLPConfig


def add_dimension(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """The seed's ``add_dimention``: a materialised copy of ``x`` for each of T steps."""
    return x.unsqueeze(1).repeat(1, time_steps, *([1] * (x.dim() - 1)))


class SeedLIF(nn.Module):
    """The seed's ``LIFSpike``: :func:`snn.lif.reference.lif_reference`, differentiated by autograd."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.tau, self.thresh, self.spec = config.tau, config.thresh, config.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lif_reference(x, self.tau, self.thresh, spec=self.spec)


class SeedMLP(nn.Module):
    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.in_features, config.hidden)
        self.lif1 = SeedLIF(config)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.lif2 = SeedLIF(config)
        self.fc3 = nn.Linear(config.hidden, config.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = add_dimension(images.flatten(1), self.config.time_steps)  # [B, T, 784]
        x = self.lif1(apply_per_step(self.fc1, x))
        x = self.lif2(apply_per_step(self.fc2, x))
        x = apply_per_step(self.fc3, x)  # [B, T, 10]
        return x.mean(dim=1)
