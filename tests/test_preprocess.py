"""snn.preprocess: custom images become MNIST-like 28x28 digits; bad files and huge images become one sentence."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

import snn.preprocess as preprocess_module
from cli_helpers import draw_one
from conftest import REPO_ROOT
from snn.data import read_idx
from snn.errors import UserError
from snn.preprocess import (
    BOX, CENTRE, FIELD, find_images, open_image, preprocess_image, preprocess_pil, stroke_width,
    _max_filter,
)

# ---------------------------------------------------------------------------- drawing helpers

RENDERINGS = {
    # name: (mode, paper, ink)
    "dark_on_white": ("L", 255, 0),
    "light_on_black": ("L", 0, 255),
    "dark_on_transparent": ("RGBA", (0, 0, 0, 0), (20, 20, 20, 255)),
    "white_on_transparent": ("RGBA", (255, 255, 255, 0), (250, 250, 250, 255)),
    "blue_on_transparent": ("RGBA", (255, 255, 255, 0), (30, 60, 200, 255)),
    "grey_paper_pencil": ("RGB", (200, 195, 190), (90, 90, 100)),
}


def draw(shape: str, rendering: str, canvas=(600, 400), box=(40, 30, 240, 330), stroke=None) -> Image.Image:
    """A digit ``shape`` ("one" or "zero") inside ``box`` (x0, y0, x1, y1) of a ``canvas``.

    The pen is ``stroke`` pixels wide; by default 1/9 of the height, about MNIST's proportions.
    """
    mode, paper, ink = RENDERINGS[rendering]
    image = Image.new(mode, canvas, paper)
    pen = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    stroke = stroke or max(3, (y1 - y0) // 9)
    if shape == "one":
        mid = (x0 + x1) // 2
        pen.line([(mid, y0), (mid, y1)], fill=ink, width=stroke)
        pen.line([(mid, y0), (mid - (x1 - x0) // 4, y0 + (y1 - y0) // 5)], fill=ink, width=stroke)
    elif shape == "zero":
        pen.ellipse(box, outline=ink, width=stroke)
    else:
        raise ValueError(shape)
    return image


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    mass = digit.sum()
    rows, cols = np.indices(digit.shape)
    return float((rows * digit).sum() / mass), float((cols * digit).sum() / mass)


def bbox_size(digit: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_mnist_like(out: torch.Tensor, what: str) -> np.ndarray:
    assert out.shape == (FIELD, FIELD) and out.dtype == torch.uint8, f"{what}: got {out.dtype} {tuple(out.shape)}"
    digit = out.numpy().astype(np.float64)
    border = np.concatenate([digit[0], digit[-1], digit[:, 0], digit[:, -1]])
    assert border.max() == 0, f"{what}: the paper must be black (0) at the border, got up to {border.max()}"
    assert digit.max() == 255, f"{what}: the ink must peak at 255 (MNIST digits do), got {digit.max()}"
    height, width = bbox_size(digit)
    assert height <= BOX and width <= BOX and max(height, width) >= BOX - 1, f"{what}: ink box {height}x{width}"
    com = centre_of_mass(digit)
    assert abs(com[0] - CENTRE) <= 1.0 and abs(com[1] - CENTRE) <= 1.0, f"{what}: centre of mass {com}"
    return digit


def correlation(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def best_shift_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation allowing a shift of up to 1 px (MNIST's own centring is only exact to +-0.5 px)."""
    return max(correlation(np.roll(a, (dy, dx), axis=(0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


# ---------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("rendering", list(RENDERINGS))
@pytest.mark.parametrize("shape", ["one", "zero"])
def test_off_centre_large_digit_becomes_mnist_like(shape, rendering):
    out = preprocess_pil(draw(shape, rendering), name=f"{shape}/{rendering}")
    digit = assert_mnist_like(out, f"{shape}/{rendering}")
    height, width = bbox_size(digit)
    assert height == BOX, f"{shape}/{rendering}: the long (vertical) side must fill the 20 px box, got {height}"
    if shape == "one":
        assert width <= 12, f"one/{rendering}: aspect ratio lost, a '1' came out {width} px wide"


@pytest.mark.parametrize("shape", ["one", "zero"])
def test_polarity_and_alpha_give_the_same_digit(shape):
    reference = preprocess_pil(draw(shape, "dark_on_white")).numpy().astype(np.int32)
    for rendering in RENDERINGS:
        out = preprocess_pil(draw(shape, rendering)).numpy().astype(np.int32)
        assert np.abs(out - reference).max() <= 2, f"{rendering} differs from dark_on_white by {np.abs(out - reference).max()}"


def test_noisy_shaded_paper_does_not_count_as_ink():
    clean = preprocess_pil(draw("zero", "dark_on_white")).numpy()
    rng = np.random.default_rng(0)
    page = np.asarray(draw("zero", "dark_on_white"), np.float64)
    shading = np.linspace(-12, 12, page.shape[1])[None, :]  # uneven light across the page
    noisy = np.clip(page + shading + rng.normal(0, 6, page.shape), 0, 255).astype(np.uint8)
    out = preprocess_pil(Image.fromarray(noisy), name="noisy")
    digit = assert_mnist_like(out, "noisy paper")
    assert bbox_size(digit) == bbox_size(clean), "paper noise stretched the ink's bounding box"
    assert correlation(digit, clean) > 0.97


def test_small_digit_is_scaled_up_to_the_box():
    out = preprocess_pil(draw("zero", "dark_on_white", canvas=(64, 48), box=(5, 5, 17, 21)))
    assert_mnist_like(out, "small zero")


@pytest.mark.parametrize("shape", ["one", "zero"])
@pytest.mark.parametrize("pen", [1, 3, 6])
def test_hairline_pen_is_thickened_to_an_mnist_stroke(shape, pen):
    # 300 px tall, drawn with a 1-6 px pen: 0.07-0.4 px strokes at 20 px, far thinner than MNIST's.
    # Without thickening such a digit keeps 30-70 % of the ink of one drawn with a normal pen.
    out = preprocess_pil(draw(shape, "dark_on_white", stroke=pen)).numpy().astype(np.float64)
    assert_mnist_like(torch.from_numpy(out.astype(np.uint8)), f"{shape} with a {pen} px pen")
    normal = preprocess_pil(draw(shape, "dark_on_white", stroke=24)).numpy().astype(np.float64)  # 1.6 px strokes
    ratio = out.sum() / normal.sum()
    assert 0.8 <= ratio <= 1.5, f"{shape}, {pen} px pen: {ratio:.2f} of a normal pen's ink after preprocessing"


def test_stroke_width_estimate():
    bar = np.zeros((40, 40), bool)
    bar[5:35, 10:13] = True  # 3 px wide, 30 long: 2 * area / boundary = 2 * 90 / 66
    assert stroke_width(bar) == pytest.approx(180 / 66)


@pytest.mark.parametrize("radius", [1, 2, 5, 13])
def test_max_filter_matches_a_plain_square_maximum(radius):
    image = np.random.default_rng(radius).random((31, 17)).astype(np.float32)
    padded = np.pad(image, 2 * radius)
    expected = np.array([[padded[r:r + 2 * radius + 1, c:c + 2 * radius + 1].max()
                          for c in range(17 + 2 * radius)] for r in range(31 + 2 * radius)])
    np.testing.assert_array_equal(_max_filter(image, radius), expected)


@pytest.mark.parametrize("mode", ["1", "P", "LA", "RGB", "CMYK", "I;16", "I", "F"])
def test_image_modes_match_the_8_bit_gray_result(mode):
    gray = draw("one", "dark_on_white")
    reference = preprocess_pil(gray).numpy().astype(np.int32)
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(gray, np.uint16) * 257)
        assert converted.mode.startswith("I;16")
    elif mode in ("I", "F"):
        converted = Image.fromarray(np.asarray(gray, np.int32 if mode == "I" else np.float32))
    else:
        converted = gray.convert(mode)
    out = preprocess_pil(converted, name=mode).numpy().astype(np.int32)
    assert np.abs(out - reference).max() <= 2, f"mode {mode}: differs by {np.abs(out - reference).max()}"


def test_exif_orientation_is_followed(tmp_path):
    stored = draw("one", "dark_on_white").rotate(90, expand=True)  # stored on its side, as phones do
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    stored.convert("RGB").save(path, exif=exif, quality=95)
    height, width = bbox_size(preprocess_image(path).numpy())
    assert height == BOX and width < BOX, f"the '1' should stand upright after EXIF rotation, box {height}x{width}"


@settings(max_examples=25, deadline=None)
@given(
    canvas=st.tuples(st.integers(40, 300), st.integers(40, 300)),
    frac=st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.floats(0.25, 0.5), st.floats(0.25, 0.5)),
    dark=st.booleans(),
)
def test_any_blob_anywhere_is_boxed_and_centred(canvas, frac, dark):
    width, height = canvas
    x0, y0 = int(frac[0] * width), int(frac[1] * height)
    x1, y1 = x0 + int(frac[2] * width), y0 + int(frac[3] * height)
    image = Image.new("L", canvas, 255 if dark else 0)
    ImageDraw.Draw(image).ellipse((x0, y0, x1, y1), fill=0 if dark else 255)
    assert_mnist_like(preprocess_pil(image), f"ellipse {(x0, y0, x1, y1)} in {canvas}")


def test_real_mnist_digits_survive_the_pipeline(mnist_dir):
    digits = read_idx(mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte", 3)[:60].numpy()
    direct, scanned = [], []
    for index, digit in enumerate(digits):
        out = preprocess_pil(Image.fromarray(digit)).numpy()
        assert best_shift_correlation(out, digit) > 0.9, f"test digit {index} changed through the pipeline"
        direct.append(correlation(out, digit))
        # the same digit as a user would draw it: dark on white, 10x larger
        paper = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.NEAREST)
        out = preprocess_pil(paper).numpy()
        assert best_shift_correlation(out, digit) > 0.9, f"test digit {index}, drawn large dark-on-white, changed"
        scanned.append(correlation(out, digit))
    assert np.median(direct) > 0.95 and np.median(scanned) > 0.95, (np.median(direct), np.median(scanned))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "page",
    [
        Image.new("L", (100, 80), 255),
        Image.new("L", (100, 80), 0),
        Image.new("L", (100, 80), 128),
        Image.new("RGBA", (100, 80), (0, 0, 0, 0)),
        Image.new("RGBA", (100, 80), (255, 255, 255, 255)),
        Image.fromarray(np.random.default_rng(1).normal(240, 2, (80, 100)).clip(0, 255).astype(np.uint8)),
    ],
    ids=["white", "black", "grey", "transparent", "opaque-white-rgba", "faint-noise"],
)
def test_blank_page_is_a_user_error(page):
    with pytest.raises(UserError, match="blank"):
        preprocess_pil(page, name="page.png")


def write_png(path, shape="one"):
    draw(shape, "dark_on_white", canvas=(120, 160), box=(20, 20, 100, 140)).save(path)
    return path


def bad_file(folder, kind):
    """A path that ``open_image`` must refuse, of the given kind."""
    if kind == "missing":
        return folder / "missing.png"
    if kind == "empty":
        (folder / "empty.png").write_bytes(b"")
        return folder / "empty.png"
    if kind == "not-an-image":
        (folder / "notes.png").write_text("not a picture\n")
        return folder / "notes.png"
    if kind == "folder":
        return folder
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [("missing", "does not exist"), ("empty", "empty file"), ("not-an-image", "not an image"), ("folder", "is a folder")],
)
def test_unreadable_files_are_one_sentence(tmp_path, kind, message):
    with pytest.raises(UserError, match=message) as info:
        open_image(bad_file(tmp_path, kind))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_image_is_a_user_error(tmp_path, suffix):
    whole = tmp_path / f"whole.{suffix}"
    draw("zero", "dark_on_white", canvas=(200, 200), box=(20, 20, 180, 180)).convert("RGB").save(whole)
    cut = tmp_path / f"cut.{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        preprocess_image(cut)


def test_find_images_expands_folders_sorted_and_keeps_order(tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for name in ("b.png", "a.PNG", "c.jpg"):
        draw("one", "dark_on_white", canvas=(60, 80), box=(10, 10, 50, 70)).convert("RGB").save(folder / name)
    (folder / "readme.txt").write_text("ignored")
    (folder / ".hidden.png").write_bytes(b"ignored")
    (folder / "sub").mkdir()
    single = write_png(tmp_path / "z.png")
    assert find_images([single, folder]) == [single, folder / "a.PNG", folder / "b.png", folder / "c.jpg"]


def test_folder_without_images_is_a_user_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no digits here")
    with pytest.raises(UserError, match="contains no image files"):
        find_images([tmp_path])
    with pytest.raises(UserError, match="does not exist"):
        find_images([tmp_path / "nowhere"])


# ---------------------------------------------------------------------------- issue 21: pen width and slant


def test_thick_blocky_one_stays_narrow():
    # A short, thick "1" (felt tip): without thinning it is scaled into a 20 px tall, ~8 px wide bar.
    image = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(image).rectangle((120, 80, 180, 230), fill=0)  # 60 x 150 px: stroke 2.5x thinner than tall
    digit = preprocess_pil(image).numpy()
    height, width = bbox_size(digit)
    assert height >= BOX - 1 and width <= 5, f"blocky '1' came out {height}x{width}"
    columns = (digit > 127).sum(axis=0)
    assert columns.max() >= 15 and np.count_nonzero(columns) <= 4


def test_thin_strokes_redraws_a_marker_ring_with_an_mnist_pen():
    from snn.preprocess import fit_box, thin_strokes

    ring = 1.0 - np.asarray(draw("zero", "dark_on_white", stroke=75), np.float32) / 255.0
    crop = ring[30:331, 40:241]
    assert stroke_width(fit_box(crop) >= 0.5) > 3.5  # below the thinning threshold: left as drawn
    thinned = fit_box(thin_strokes(crop))
    assert 1.2 <= stroke_width(thinned >= 0.5) <= 3.0, stroke_width(thinned >= 0.5)
    assert thinned[thinned.shape[0] // 2, thinned.shape[1] // 2] < 0.01, "the hole of the zero must stay open"


def test_strong_slant_is_reduced_to_mnist_range():
    from snn.preprocess import SKEW_RANGE, slant

    image = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(image).line([(30, 270), (270, 50)], fill=0, width=20)  # a "1" leaning right by 1.09
    assert slant(np.asarray(image, np.float64).max() - np.asarray(image, np.float64)) < -1.0
    digit = preprocess_pil(image).numpy().astype(np.float64)
    assert SKEW_RANGE[0] - 0.05 <= slant(digit) <= SKEW_RANGE[1] + 0.05, slant(digit)


def test_upright_digit_is_not_sheared():
    from snn.preprocess import deskew

    ink = np.zeros((40, 20), np.float32)
    ink[:, 8:12] = 1.0
    assert deskew(ink) is ink


# ---------------------------------------------------------------------------- huge images


@pytest.mark.parametrize("size", [(100_000, 3), (2, 60_000)], ids=["wide", "tall"])
def test_long_thin_image_is_preprocessed_in_bounded_memory_and_time(size, tmp_path):
    """A hairline across a 100,000 x 3 canvas: before the fix the stroke widening alone
    allocated about 10 GB and took two minutes; now well under 50 MB and a second."""
    width, height = size
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(width * 0.1, height * 0.1), (width * 0.9, height * 0.9)], fill=0, width=1)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        digit = preprocess_pil(image)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digit.shape == (28, 28) and int(digit.max()) == 255
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert seconds < 5, f"{seconds:.1f} s"


def test_images_beyond_the_stated_limit_are_refused_before_decoding(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preprocess_module, "MAX_PIXELS", 100 * 100)
    big = draw_one(tmp_path / "big.png")  # 120 x 160 > 100 x 100
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(UserError, match="has 120x160 pixels, more than the 0 million"):
        preprocess_image(big)
    assert decoded == [], "the image was decoded before its size was checked"
    with pytest.raises(UserError, match="more than"):
        preprocess_pil(Image.new("L", (200, 200)))
    assert preprocess_module.MAX_PIXELS < 89_478_485, "the limit is below PIL's own bomb warning"


def test_stated_limit_is_documented():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"{preprocess_module.MAX_PIXELS // 10**6} megapixels" in readme

