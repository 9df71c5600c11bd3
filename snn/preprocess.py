"""Turn a photo or drawing of one digit into a 28x28 MNIST-style image, the way MNIST was made.

:func:`preprocess_image` (a path) and :func:`preprocess_pil` (an image in memory) run these steps:

1. **Load** with PIL, following the EXIF orientation (phone photos); the first frame of an
   animation. Missing, empty, truncated and non-image files raise :class:`UserError`.
2. **Grayscale, respecting alpha.** Transparent pixels are composited over a paper colour. If the
   opaque pixels cover less than half the image they are the ink, and the paper is the colour
   that contrasts with them (white under dark ink, black under light ink), so a digit drawn in any
   colour on a transparent background works; otherwise the opaque pixels are the paper and
   transparent ones take its median grey. Luminance is ITU-R 601 (PIL's ``"L"``), in [0, 1].
3. **Polarity.** The paper level is the median of the border pixels. If it is closer to the
   brightest pixel than to the darkest, the digit is dark on light and the image is inverted, so
   ink is bright on dark paper, as in MNIST.
4. **Levels and noise.** Subtract the paper level and divide by the ink's peak, so paper is 0 and
   the strongest ink 1. A page whose ink stands less than :data:`MIN_CONTRAST` above the paper is
   blank (``UserError``). Levels below :data:`INK_THRESHOLD` are paper noise (grain, JPEG
   ringing, uneven light) and are mapped to 0 by ``(x - t) / (1 - t)``, which keeps the
   anti-aliased edge of the stroke continuous.
5. **Crop** to the bounding box of the remaining ink.
6. **Scale to fit 20x20**, keeping the aspect ratio (the long side becomes 20 px), with PIL's
   Lanczos filter, which low-passes when shrinking (anti-aliased, like MNIST's grey edges). The
   result is rescaled so its brightest pixel is 1: MNIST digits all peak at 254-255, and thin
   strokes shrunk from a large photo would otherwise be faint.

   One addition to MNIST's recipe: a pen stroke that would end up thinner than
   :data:`MIN_STROKE` output pixels (a fine pen on a large page; MNIST's own strokes are
   1.2-2.9 px wide from the 5th to the 95th percentile, median 1.8) is first widened to
   :data:`TARGET_STROKE` by grey-level dilation (a max filter), at the input resolution or at 4x
   the output's if the input is smaller. Without it such digits fall outside what the network
   was trained on: 300 MNIST test digits redrawn with hairline strokes, on a checkpoint that
   gets 90 % of the originals right, were 60 % right without this step and 87 % with it.
   A crop longer than :data:`WORK_SIDE` is first max-pooled to that size (every hairline keeps
   its full strength), so the widening costs the same for any input, however long and thin.
7. **Centre by mass.** Paste the 20x20 box into a 28x28 field, shifted by whole pixels so its
   centre of mass lands on pixel (14, 14) (where MNIST's lies, +-0.5 px). If that would push ink
   off the field, the shift is clamped so all ink stays inside.
8. **Quantise** to ``uint8 [28, 28]`` (0 = paper, 255 = ink), the layout of ``MNIST.test_images``;
   :func:`snn.data.to_float_images` then gives exactly the network's input scaling.

**Limits.** Images of more than :data:`MAX_PIXELS` (40 million) pixels are refused from their
header, before decoding: at that size the whole pipeline takes about 3 s and under 1 GB of memory
on a 2-core CPU; every step after cropping is bounded by the 20x20 box or :data:`WORK_SIDE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from snn.errors import UserError

FIELD = 28  # output side, pixels
BOX = 20  # the digit's bounding box is scaled to fit BOX x BOX, as in MNIST
CENTRE = 14.0  # row and column of the centre of mass in the output (MNIST's mean is 14.0 +- 0.3)
INK_THRESHOLD = 0.2  # levels below this fraction of the ink's peak are paper noise
MIN_CONTRAST = 0.08  # ink must stand this far (of full scale) from the paper, or the page is blank
RESAMPLE = Image.Resampling.LANCZOS  # anti-aliased when shrinking
MIN_STROKE = 1.25  # output pixels; thinner strokes are thickened (MNIST test digits: 5th percentile 1.2)
TARGET_STROKE = 1.5  # output pixels they are thickened to (MNIST: ~15th percentile; median 1.8)
OVERSAMPLE = 4  # inputs smaller than this many times the output are thickened at that size
WORK_SIDE = 1024  # larger crops are max-pooled to at most this long side before thickening
MAX_STROKE = 5.0  # output pixels; thicker strokes are thinned (MNIST training digits: 99.9th percentile 4.9; 3.3-3.9 lost 1-9 points on benchmarks/robustness_set.py's thick class)
THIN_STROKE = 2.1  # output pixels they are thinned to (MNIST: median 2.1 by stroke_width's measure)
THIN_WORK_SIDE = OVERSAMPLE * BOX  # thinning works at this long side (80 px): bounded, fine enough
FLAG_FRACTION = 0.6  # skeleton branches thinner than this share of the pen (the corners of a block) are dropped
SKEW_RANGE = (-0.77, 0.53)  # MNIST's slant dx/dy by moments, 1st-99th percentile (training digits)
MAX_PIXELS = 40_000_000  # larger images are refused (about 0.9 GB and 6 s of preprocessing at this size)
HALF_INK = (0.5 - INK_THRESHOLD) / (1.0 - INK_THRESHOLD)  # half the ink peak, after the noise mapping
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand ``paths`` in order: a file stands for itself, a folder for its image files sorted by name.

    A folder contributes the (non-hidden) files whose extension is in :data:`IMAGE_EXTENSIONS`;
    it does not recurse. Raises :class:`UserError` for a missing path or a folder with no images.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                images = sorted(
                    child for child in path.iterdir()
                    if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in IMAGE_EXTENSIONS
                )
            except OSError as exc:
                raise UserError(f"cannot list folder {path}: {exc.strerror or exc}.") from exc
            if not images:
                raise UserError(
                    f"folder {path} contains no image files (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})."
                )
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"image {path} does not exist.")
    return found


def check_size(size: tuple[int, int], name: str) -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels: it may be small on disk (a PNG of
    one colour compresses a thousandfold), but every step below holds it in memory as floats."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise UserError(f"image {name} has {width}x{height} pixels, more than the {MAX_PIXELS // 10**6} million "
                        "this program handles; scale it down (a digit needs far fewer).")


def open_image(path: str | Path) -> Image.Image:
    """Step 1: the fully decoded image at ``path``, upright per its EXIF orientation."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image {path} does not exist.")
    if path.is_dir():
        raise UserError(f"image {path} is a folder, not an image file.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}.") from exc
    if size == 0:
        raise UserError(f"image {path} is an empty file (0 bytes).")
    try:  # PIL's default (ImageFile.LOAD_TRUNCATED_IMAGES off) makes a cut-off file an error
        with Image.open(path) as image:
            check_size(image.size, str(path))  # before decoding: the header is enough
            image.load()
            upright = ImageOps.exif_transpose(image)
            upright.load()
    except UnidentifiedImageError as exc:
        raise UserError(f"{path} is not an image file that PIL can read.") from exc
    except Image.DecompressionBombError as exc:
        raise UserError(f"image {path} is too large to load safely ({exc}).") from exc
    except PermissionError as exc:
        raise UserError(f"cannot read image {path}: permission denied.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        # PIL reports cut-off and damaged data as OSError ("image file is truncated"),
        # SyntaxError ("broken PNG file"), ValueError or EOFError depending on the format.
        detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
        raise UserError(f"image {path} is truncated or corrupt ({detail}).") from exc
    return upright


def _finite_levels(values: np.ndarray) -> np.ndarray:
    """A float image (TIFF mode ``"F"``) may hold NaN (no data) and +-inf: NaN takes the median of
    the finite pixels (the paper, as a rule), +-inf the brightest / darkest finite level."""
    finite = np.isfinite(values)
    if finite.all():
        return values
    if not finite.any():
        return np.zeros_like(values)  # nothing to see: blank, refused by ink_levels
    real = values[finite]
    filled = np.where(np.isnan(values), float(np.median(real)), values)
    return np.clip(filled, real.min(), real.max())


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Step 2: luminance in [0, 1] as ``float32 [H, W]``, transparent pixels composited over paper."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # 16/32-bit gray has no "L" conversion worth trusting
        values = np.asarray(image, dtype=np.float64)
        values = _finite_levels(values)
        full_scale = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F":
            full_scale = max(1.0, float(values.max(initial=0)))
        return np.clip(values / full_scale, 0.0, 1.0).astype(np.float32)
    has_alpha = mode in _ALPHA_MODES or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    rgba = image.convert("RGBA")
    luminance = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32) / 255.0
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    opaque = alpha >= 0.5
    if alpha.min() >= 1.0 or not opaque.any():
        return luminance  # nothing transparent to composite, or nothing visible (blank, caught later)
    if opaque.mean() < 0.5:  # the opaque pixels are the ink: paper contrasts with it
        ink = float(np.average(luminance, weights=alpha))
        paper = 1.0 if ink < 0.5 else 0.0
    else:  # the opaque pixels are the paper: fill the holes with its own grey
        paper = float(np.median(luminance[opaque]))
    return luminance * alpha + paper * (1.0 - alpha)


def ink_levels(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Steps 3-4: ink bright on dark paper, paper 0, ink peak 1, noise below the threshold removed."""
    border = np.concatenate([gray[0, :], gray[-1, :], gray[1:-1, 0], gray[1:-1, -1]])
    paper = float(np.median(border))
    darkest, brightest = float(gray.min()), float(gray.max())
    if brightest - paper < paper - darkest:  # paper nearer the bright end: dark ink on light paper
        gray, paper = 1.0 - gray, 1.0 - paper
    ink = np.clip(gray - paper, 0.0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise UserError(
            f"image {name} looks blank: nothing stands out from the paper by more than {MIN_CONTRAST:.0%} of full scale."
        )
    ink = ink / peak
    return np.clip((ink - INK_THRESHOLD) / (1.0 - INK_THRESHOLD), 0.0, 1.0)


def stroke_width(mask: np.ndarray) -> float:
    """Mean width of the strokes in a boolean ``mask``, in pixels: ``2 * area / boundary length``.

    A stroke of width w and length L has area wL and two long sides, so 2wL / 2L = w. The boundary
    is counted in pixel edges, which overstates it for diagonal strokes (by up to sqrt(2)), so the
    estimate errs on the thin side.
    """
    padded = np.pad(mask, 1)
    edges = np.count_nonzero(padded[:, 1:] != padded[:, :-1]) + np.count_nonzero(padded[1:, :] != padded[:-1, :])
    return 2.0 * np.count_nonzero(padded) / max(edges, 1)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a float image to ``size`` = (width, height) with :data:`RESAMPLE`, clipped at 0."""
    resized = Image.fromarray(image.astype(np.float32), mode="F").resize(size, RESAMPLE)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)  # Lanczos rings slightly below 0


def _max_filter(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a ``(2r+1)``-square; the result is ``r`` pixels larger on every side.

    Separable, and each axis takes O(log r) passes (a window of width w is the max of two
    overlapping windows of width <= w/2), so the cost does not grow with the square's area as a
    rank filter's does.
    """
    size = 2 * radius + 1
    out = np.pad(image, 2 * radius)  # paper around the image; each axis shrinks by 2r below
    for axis in (0, 1):
        window = 1
        while window < size:  # out[i] = max of the `window` padded values starting at i
            step = min(window, size - window)
            length = out.shape[axis]
            out = np.maximum(out.take(range(0, length - step), axis), out.take(range(step, length), axis))
            window += step
    return out


def _block_max(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink by an integer ``factor`` keeping the maximum of each ``factor x factor`` block: a
    one-pixel stroke survives at full strength (an average would fade it by ``factor``)."""
    height, width = image.shape
    padded = np.pad(image, ((0, -height % factor), (0, -width % factor)))
    rows, cols = padded.shape[0] // factor, padded.shape[1] // factor
    return padded.reshape(rows, factor, cols, factor).max(axis=(1, 3))


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The bounding box of the non-zero pixels."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def slant(ink: np.ndarray) -> float:
    """The slant dx/dy of the ink by image moments, ``mu11 / mu02`` (0 = upright; MNIST's digits
    lean right, median -0.13, since rows grow downwards)."""
    mass = float(ink.sum())
    rows = np.arange(ink.shape[0], dtype=np.float64)
    cols = np.arange(ink.shape[1], dtype=np.float64)
    row_mass, col_mass = ink.sum(axis=1, dtype=np.float64), ink.sum(axis=0, dtype=np.float64)
    cy, cx = float(row_mass @ rows) / mass, float(col_mass @ cols) / mass
    mu02 = float(row_mass @ (rows - cy) ** 2)
    mu11 = float((rows - cy) @ ink.astype(np.float64) @ (cols - cx))
    return mu11 / mu02 if mu02 > 0 else 0.0


def deskew(ink: np.ndarray, limits: tuple[float, float] = SKEW_RANGE) -> np.ndarray:
    """Shear a cropped digit horizontally so its slant lies within ``limits`` (MNIST's range).

    The classic MNIST benchmarks deskewed every digit to slant 0 (train and test alike); the
    network here is trained on MNIST's own slants, so only a slant MNIST rarely has (italic
    writing, a tilted photo) is reduced, to the nearest end of the range, and MNIST-like digits
    are left alone. Returns the sheared digit cropped to its ink.
    """
    skew = slant(ink)
    correction = skew - min(max(skew, limits[0]), limits[1])
    if abs(correction) < 1e-3:
        return ink
    height, width = ink.shape
    cy = float(ink.sum(axis=1) @ np.arange(height)) / float(ink.sum())
    margin = abs(correction) * height
    out_width = int(np.ceil(width + 2 * margin))
    # PIL's AFFINE maps each output pixel to an input one: x_in = x_out + correction * (y - cy) - margin.
    sheared = Image.fromarray(ink.astype(np.float32), mode="F").transform(
        (out_width, height), Image.Transform.AFFINE, (1.0, correction, -correction * cy - margin, 0.0, 1.0, 0.0),
        resample=Image.Resampling.BILINEAR)
    sheared = np.clip(np.asarray(sheared, dtype=np.float32), 0.0, 1.0)
    return crop_to_ink(sheared) if sheared.any() else ink


def thin_strokes(crop: np.ndarray, box: int = BOX, target: float = THIN_STROKE) -> np.ndarray:
    """Redraw a digit written with a thick pen (felt tip, marker) with MNIST's pen width.

    At a working size of :data:`THIN_WORK_SIDE`, the ink's medial axis (the ridge of its distance
    to the paper) is redrawn as a stroke that will be ``target`` output pixels wide. Ridge branches
    much thinner than the pen are the corners of a block, not strokes, and are dropped: that is
    what turns the short blocky "1" of a thick pen, which would otherwise be scaled into a wide
    bar, back into a narrow MNIST-like "1".
    """
    from scipy import ndimage  # only for thick strokes

    height, width = crop.shape
    factor = THIN_WORK_SIDE / max(height, width)
    work = _resize(crop, (max(1, round(width * factor)), max(1, round(height * factor))))
    mask = np.pad(work >= 0.5 * float(work.max()), 1)
    depth = ndimage.distance_transform_edt(mask)
    ridge = mask & (depth >= ndimage.maximum_filter(depth, size=3))
    if not ridge.any():
        return crop
    pen = float(np.median(depth[ridge]))  # half the pen's width
    ridge &= depth >= FLAG_FRACTION * pen
    rows, cols = np.nonzero(ridge)
    long_side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    # A stroke of width w around the axis: w * box / (long_side + w) == target output pixels.
    half = 0.5 * target * long_side / (box - target)
    distance = ndimage.distance_transform_edt(~ridge)
    redrawn = np.clip(half + 0.5 - distance, 0.0, 1.0).astype(np.float32)  # anti-aliased edge
    solid = redrawn >= 0.5  # crop to the stroke's half-level edge, so the box is filled as for a drawn digit
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    return redrawn[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Steps 5-6: crop to the ink, limit its slant, bring its strokes to MNIST's width, scale to fit ``box x box``."""
    crop = crop_to_ink(ink)
    long_side = max(crop.shape)
    if long_side > WORK_SIDE:  # a huge input: work at a bounded size (max-pooling keeps every hairline)
        crop = _block_max(crop, -(-long_side // WORK_SIDE))
    crop = deskew(crop)
    long_side = max(crop.shape)
    stroke = stroke_width(crop >= HALF_INK)  # input pixels
    if stroke * box / long_side > MAX_STROKE:
        crop = thin_strokes(crop, box)
    elif stroke * box / long_side < MIN_STROKE:
        if long_side < OVERSAMPLE * box:  # a small input: work at OVERSAMPLE x the output, in finer steps
            factor = OVERSAMPLE * box / long_side
            height, width = crop.shape
            crop = _resize(crop, (max(1, round(width * factor)), max(1, round(height * factor))))
            stroke, long_side = stroke * factor, max(crop.shape)
        # Widen by g input pixels so that (stroke + g) * box / (long_side + g) == TARGET_STROKE:
        # dilation widens the digit's box by g too, which shrinks the final scale a little.
        grow = (TARGET_STROKE * long_side - box * stroke) / (box - TARGET_STROKE)
        crop = _max_filter(crop, max(1, round(grow / 2)))
    height, width = crop.shape
    scale = box / max(height, width)
    size = (max(1, min(box, round(width * scale))), max(1, min(box, round(height * scale))))
    if size != (width, height):
        crop = _resize(crop, size)
    peak = float(crop.max())
    if peak <= 0.0:  # cannot happen for ink that survived step 4, but never divide by zero
        raise UserError("the digit vanished when scaled to 20x20.")
    return np.clip(crop / peak, 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, field: int = FIELD, centre: float = CENTRE) -> np.ndarray:
    """Step 7: paste ``digit`` into a ``field x field`` array with its centre of mass at ``centre``."""
    height, width = digit.shape
    mass = float(digit.sum())
    com_row = float((digit.sum(axis=1) * np.arange(height)).sum()) / mass
    com_col = float((digit.sum(axis=0) * np.arange(width)).sum()) / mass
    top = min(max(round(centre - com_row), 0), field - height)
    left = min(max(round(centre - com_col), 0), field - width)
    out = np.zeros((field, field), dtype=np.float32)
    out[top : top + height, left : left + width] = digit
    return out


def preprocess_pil(image: Image.Image, name: str = "image") -> torch.Tensor:
    """Steps 2-8 on a loaded PIL image: ``uint8 [28, 28]``, ink bright, MNIST-style."""
    check_size(image.size, name)
    gray = to_grayscale(image)
    if gray.size == 0:
        raise UserError(f"image {name} has no pixels.")
    digit = centre_by_mass(fit_box(ink_levels(gray, name)))
    return torch.from_numpy(np.rint(digit * 255.0).astype(np.uint8))


def preprocess_image(path: str | Path) -> torch.Tensor:
    """The whole pipeline (steps 1-8) for the image file at ``path``: ``uint8 [28, 28]``."""
    return preprocess_pil(open_image(path), name=str(path))
