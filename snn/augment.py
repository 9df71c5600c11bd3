"""Training augmentation on uint8 image batches on the device: affine, elastic and stroke-width changes.

Users' digits differ from MNIST's in slant, size, aspect, pen width and wobble. The network only
learns to ignore what it sees varied, so ``train.py --augment`` (see :data:`PRESETS`) varies each
training image by a random

* **affine map** about the image centre: rotation, isotropic scale and horizontal shear;
* **elastic deformation**: a smooth random displacement field (a coarse random grid upsampled
  bilinearly; the same smoothness as Simard et al.'s Gaussian-filtered field at a fraction of
  the cost);
* **stroke width**: grey-level dilation (thicker) or erosion (thinner) by a 2x2 square, each
  with the preset's probability.

Everything runs as a few batched tensor ops on the batch's device (a matmul for the grid, one
``grid_sample`` and four shifted maxima of the images drawn for a stroke change), with parameters
drawn per epoch from a CPU generator that is a pure function of (seed, epoch), so a resumed run
replays an epoch exactly. No PIL on the hot path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ELASTIC_GRID = 4  # the random displacement field is drawn on a 4x4 grid and upsampled: smooth, ~7 px wavelength


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random changes (each drawn uniformly in [-range, range] per image)."""

    rotate_degrees: float = 0.0
    scale: float = 0.0  # relative: 0.1 means a factor in [0.9, 1.1]
    shear: float = 0.0  # horizontal shear dx = shear * dy (a slant)
    elastic_pixels: float = 0.0  # peak displacement of the elastic field, in pixels
    thicken: float = 0.0  # probability of a 2x2 dilation
    thin: float = 0.0  # probability of a 2x2 erosion (exclusive with thickening)

    @property
    def enabled(self) -> bool:
        return any((self.rotate_degrees, self.scale, self.shear, self.elastic_pixels, self.thicken, self.thin))


# The --augment choices. "none" is the run the project had before; the default is chosen by
# measurement (README, section "Augmentation").
PRESETS = {
    "none": Augmentation(),
    "full": Augmentation(rotate_degrees=12.0, scale=0.12, shear=0.25, elastic_pixels=1.2, thicken=0.2, thin=0.2),
}
PARAMETERS = 5 + 2 * ELASTIC_GRID * ELASTIC_GRID  # rotation, scale, shear, thickness draw, (unused), field


def epoch_parameters(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Uniform draws in [-1, 1] for ``n`` images of one epoch, ``float32 [n, PARAMETERS]``."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + 104_729)
    return (torch.rand((n, PARAMETERS), generator=generator) * 2.0 - 1.0).to(device)


def _base_grid(height: int, width: int, device) -> torch.Tensor:
    """Pixel centres in ``affine_grid``'s normalised coordinates (align_corners=False), ``[H*W, 3]``
    rows of (x, y, 1): the grid is then one batched matmul, much cheaper than ``affine_grid`` on CPU."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.ones(height * width, device=device)], 1)


def _upsample_matrix(size: int, device) -> torch.Tensor:
    """``[size, ELASTIC_GRID]`` linear interpolation weights from the coarse field to ``size`` pixels."""
    position = torch.linspace(0, ELASTIC_GRID - 1, size, device=device)
    return torch.clamp(1 - (position[:, None] - torch.arange(ELASTIC_GRID, device=device)[None, :]).abs(), min=0)


def _grid(draws: torch.Tensor, spec: Augmentation, height: int, width: int) -> torch.Tensor:
    """The sampling grid ``[B, H, W, 2]`` of the affine map plus the elastic field.

    Both are linear in per-image coefficients, so the whole grid is one matmul of the
    coefficients ``[B * 2, 3 + 16]`` with a fixed basis ``[3 + 16, H * W]`` (pixel coordinates and
    the bilinear upsampling of the 4x4 field): ~10x cheaper on CPU than ``affine_grid`` plus
    ``interpolate`` on small batches.
    """
    batch, device = draws.shape[0], draws.device
    angle = draws[:, 0] * math.radians(spec.rotate_degrees)
    scale = 1.0 + draws[:, 1] * spec.scale
    shear = draws[:, 2] * spec.shear
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Output -> input map in normalised coordinates: inverse rotation and scale, and a slant of x by y.
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin + shear * cos, zero], 1),
                         torch.stack([sin, cos + shear * sin, zero], 1)], 1)  # [B, 2, 3]
    field = draws[:, 5:].reshape(batch, 2, ELASTIC_GRID * ELASTIC_GRID) * (2.0 * spec.elastic_pixels / height)
    coefficients = torch.cat([theta, field], 2).reshape(batch * 2, -1)
    return (coefficients @ _basis(height, width, device).T).view(batch, 2, height, width).permute(0, 2, 3, 1)


@functools.lru_cache(maxsize=8)
def _basis(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``[H*W, 3 + 16]``: pixel coordinates and the bilinear upsampling of the coarse field, built once
    per image size and device (building it took a third of an augmented batch's time)."""
    upsample = torch.kron(_upsample_matrix(height, device), _upsample_matrix(width, device))  # [H*W, 16]
    return torch.cat([_base_grid(height, width, device), upsample], 1)


def _morph_2x2(x: torch.Tensor, combine) -> torch.Tensor:
    """Grey-level dilation (``torch.maximum``) or erosion (``torch.minimum``) by a 2x2 square
    (four shifted copies: ~20x cheaper on CPU than ``max_pool2d`` with stride 1 on one channel)."""
    padded = F.pad(x, (0, 1, 0, 1))
    rows = combine(padded[:, :, :-1], padded[:, :, 1:])
    return combine(rows[..., :-1], rows[..., 1:])


def _morph_chosen(x: torch.Tensor, chosen: torch.Tensor, combine, subset: bool | None = None) -> torch.Tensor:
    """``x`` (``[B, 1, H, W]``) with :func:`_morph_2x2` applied to the images where ``chosen``.

    ``subset`` (default: on the CPU) processes only those images, in place: a fifth of the work at
    the presets' 20 %. Elsewhere a whole-batch select, because indexing by a mask reads its count
    back to the host (a sync per batch on a GPU). Both give the same pixels (tests/test_augment.py).
    """
    if subset if subset is not None else x.device.type == "cpu":
        index = chosen.nonzero().squeeze(1)
        x[index] = _morph_2x2(x[index], combine)
        return x
    return torch.where(chosen.view(-1, 1, 1, 1), _morph_2x2(x, combine), x)


def augment_batch(images: torch.Tensor, draws: torch.Tensor, spec: Augmentation) -> torch.Tensor:
    """``images`` (``uint8 [B, H, W]``) changed by ``spec`` using ``draws`` (rows of :func:`epoch_parameters`).

    Each image's result depends only on its own pixels and draws, not on the batch it comes in.
    Training calls it per batch: between training steps, calls on 2048 images at a time were no
    cheaper (-2 % to +13 % dearer in three runs of ``python -m benchmarks.augment_cost``; their float
    intermediates outgrow the caches).
    """
    if not spec.enabled or images.shape[0] == 0:
        return images
    batch, height, width = images.shape
    x = images.unsqueeze(1).float()
    if spec.rotate_degrees or spec.scale or spec.shear or spec.elastic_pixels:
        x = F.grid_sample(x, _grid(draws, spec, height, width), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    if spec.thicken or spec.thin:
        u = (draws[:, 3] + 1.0) * 0.5  # uniform in [0, 1]: thicker below spec.thicken, thinner above 1 - spec.thin
        if spec.thicken:
            x = _morph_chosen(x, u < spec.thicken, torch.maximum)
        if spec.thin:
            x = _morph_chosen(x, u > 1.0 - spec.thin, torch.minimum)
    return x.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)
