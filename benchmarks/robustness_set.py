"""A robustness set no training image comes from, built at run time, and accuracy on it per distortion.

    python benchmarks/robustness_set.py --checkpoint checkpoints/mnist_mlp.pth [--checkpoint other.pth]
        [--data-dir data] [--per-class 300]

Classes of distortion (each image goes through snn.preprocess, as `infer.py --image` does):

* ``font``: digits 0-9 rendered from every TrueType font found under /usr/share/fonts (Debian's
  fonts-dejavu, fonts-liberation, fonts-freefont, ...; absent fonts are skipped with a note), at
  three sizes and three slants (shear -0.3, 0, 0.3), dark on white;
* ``thick`` / ``thin``: MNIST *test* digits drawn 4x larger, then grey-dilated / eroded by 4-6 px
  (a felt tip; a fine pen);
* ``blur``: 4x larger, Gaussian blur of radius 6 px;
* ``lowres``: downsampled to 10x10 and back up to 56x56 (a low-resolution scan);
* ``paper``: 4x larger, dark on photographed-looking paper: uneven light (a gradient of 60
  levels), grain (Gaussian noise, sigma 12) and a grey ink level.

Everything is a deterministic function of the MNIST test files and the fonts, so nothing binary
is stored in the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snn.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from snn.data import read_idx, to_float_images  # noqa: E402
from snn.preprocess import preprocess_pil  # noqa: E402

FONT_DIRS = [Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype")]
SLANTS = (-0.3, 0.0, 0.3)
SIZES = (40, 80, 160)


def find_fonts() -> list[Path]:
    fonts = sorted(p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    if not fonts:
        print("note: no TrueType fonts found (apt-get install fonts-dejavu fonts-liberation fonts-freefont-ttf); "
              "the font class is skipped", file=sys.stderr)
    return fonts


def font_digits(fonts: list[Path]):
    for path in fonts:
        for size in SIZES:
            try:
                font = ImageFont.truetype(str(path), size)
            except OSError:
                print(f"note: font {path} cannot be read; skipped", file=sys.stderr)
                break
            for digit in range(10):
                for slant in SLANTS:
                    page = Image.new("L", (size * 3, size * 3), 255)
                    ImageDraw.Draw(page).text((size, size // 2), str(digit), fill=0, font=font)
                    page = page.transform(page.size, Image.Transform.AFFINE, (1, slant, -slant * page.size[1] / 2, 0, 1, 0),
                                          resample=Image.Resampling.BILINEAR, fillcolor=255)
                    yield page, digit


def mnist_distortions(digits: np.ndarray, labels: np.ndarray):
    """``{class: [(PIL image, label), ...]}`` from MNIST test digits."""
    rng = np.random.default_rng(0)
    out = {name: [] for name in ("thick", "thin", "blur", "lowres", "paper")}
    for index, (digit, label) in enumerate(zip(digits, labels)):
        big = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
        out["thick"].append((big.filter(ImageFilter.MaxFilter(9 + 2 * (index % 3 == 0))), label))
        out["thin"].append((big.filter(ImageFilter.MinFilter(5)), label))
        out["blur"].append((big.filter(ImageFilter.GaussianBlur(6)), label))
        out["lowres"].append((Image.fromarray(digit).resize((10, 10), Image.Resampling.BOX)
                              .resize((56, 56), Image.Resampling.BILINEAR), label))
        ink = np.asarray(big, np.float64) / 255.0
        light = 200 + 60 * np.linspace(0, 1, 112)[None, :] * np.linspace(0.5, 1, 112)[:, None]
        page = light - ink * (light - 60) + rng.normal(0, 12, ink.shape)
        out["paper"].append((Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)), label))
    return out


def build(data_dir: Path, per_class: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The whole set, preprocessed: ``{class: (uint8 [N, 28, 28], int64 [N])}``."""
    raw = data_dir / "MNIST" / "raw"
    digits = read_idx(raw / "t10k-images-idx3-ubyte", 3).numpy()
    labels = read_idx(raw / "t10k-labels-idx1-ubyte", 1).numpy()
    chosen = np.concatenate([np.flatnonzero(labels == c)[: per_class // 10] for c in range(10)])
    groups = mnist_distortions(digits[chosen], labels[chosen])
    fonts = find_fonts()
    if fonts:
        groups["font"] = list(font_digits(fonts))
    return {name: (torch.stack([preprocess_pil(image) for image, _ in items]),
                   torch.tensor([int(label) for _, label in items]))
            for name, items in groups.items()}


@torch.no_grad()
def accuracy(checkpoint: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    model = model_from_checkpoint(load_checkpoint(checkpoint, map_location="cpu"), "torch", str(checkpoint)).eval()
    logits = model(to_float_images(images).unsqueeze(1))
    return float((logits.argmax(1) == labels).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--per-class", type=int, default=300, help="MNIST test digits per distortion class")
    args = parser.parse_args()
    groups = build(args.data_dir, args.per_class)
    print("| distortion | images | " + " | ".join(p.name for p in args.checkpoint) + " |")
    print("|---|---:|" + "---:|" * len(args.checkpoint))
    for name, (images, labels) in groups.items():
        scores = [accuracy(p, images, labels) for p in args.checkpoint]
        print(f"| {name} | {len(labels)} | " + " | ".join(f"{s:.1%}" for s in scores) + " |")


if __name__ == "__main__":
    main()
