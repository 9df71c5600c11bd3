"""snn.augment: training augmentation on uint8 batches, deterministic per (seed, epoch)."""

from __future__ import annotations

import torch

from snn.augment import PRESETS, Augmentation, augment_batch, epoch_parameters


def bar_batch(n: int = 8) -> torch.Tensor:
    images = torch.zeros((n, 28, 28), dtype=torch.uint8)
    images[:, 6:22, 13:16] = 255  # a vertical "1", 3 px wide (MNIST pen)
    return images


def test_none_is_the_identity():
    images = bar_batch()
    draws = epoch_parameters(len(images), 0, 1, torch.device("cpu"))
    assert augment_batch(images, draws, PRESETS["none"]) is images


def test_zero_draws_keep_the_image():
    images = bar_batch()
    draws = torch.zeros((len(images), epoch_parameters(1, 0, 1, torch.device("cpu")).shape[1]))
    out = augment_batch(images, draws, PRESETS["full"])  # draw 0: no rotation, scale 1, no shear, no field
    assert out.dtype == torch.uint8 and torch.equal(out, images)


def test_thickening_and_thinning_change_the_ink():
    images = bar_batch(2)
    draws = torch.zeros((2, epoch_parameters(1, 0, 1, torch.device("cpu")).shape[1]))
    draws[0, 3], draws[1, 3] = -1.0, 1.0  # first image thickened, second thinned
    out = augment_batch(images, draws, Augmentation(thicken=0.5, thin=0.5))
    assert int((out[0] > 0).sum()) > int((images[0] > 0).sum()) > int((out[1] > 0).sum()) > 0


def test_draws_are_a_function_of_seed_and_epoch():
    cpu = torch.device("cpu")
    assert torch.equal(epoch_parameters(50, 3, 2, cpu), epoch_parameters(50, 3, 2, cpu))
    assert not torch.equal(epoch_parameters(50, 3, 2, cpu), epoch_parameters(50, 3, 3, cpu))


def test_full_preset_keeps_the_digit_in_the_field():
    images = bar_batch(64)
    out = augment_batch(images, epoch_parameters(64, 0, 1, torch.device("cpu")), PRESETS["full"])
    ink = out.float().sum(dim=(1, 2)) / images.float().sum(dim=(1, 2))
    assert bool(((ink > 0.3) & (ink < 3.0)).all()), ink  # changed, never erased or smeared over the field
    assert not torch.equal(out, images)


def test_stroke_width_changes_only_the_chosen_images_and_exactly_by_the_square():
    """The whole-batch select (snn.augment) equals a 2x2 dilation/erosion of just the images drawn for it."""
    images = bar_batch(3)
    images[:, 10, 10] = 7  # a grey pixel, so grey-level (not binary) morphology is checked
    draws = torch.zeros((3, epoch_parameters(1, 0, 1, torch.device("cpu")).shape[1]))
    draws[0, 3], draws[1, 3], draws[2, 3] = -1.0, 0.0, 1.0  # thicker, unchanged, thinner
    out = augment_batch(images, draws, Augmentation(thicken=0.2, thin=0.2))
    padded = torch.nn.functional.pad(images.int(), (0, 1, 0, 1))
    windows = torch.stack([padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]])
    assert torch.equal(out[0].int(), windows.amax(0)[0])
    assert torch.equal(out[1], images[1])
    assert torch.equal(out[2].int(), windows.amin(0)[2])


def test_stroke_change_of_the_chosen_images_alone_equals_the_whole_batch_select():
    """snn.augment._morph_chosen: the CPU's in-place subset and the GPU's select give the same pixels."""
    from snn.augment import _morph_chosen

    x = torch.rand((9, 1, 28, 28), generator=torch.Generator().manual_seed(1)) * 255
    chosen = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1], dtype=torch.bool)
    for combine in (torch.maximum, torch.minimum):
        select = _morph_chosen(x.clone(), chosen, combine, subset=False)
        subset = _morph_chosen(x.clone(), chosen, combine, subset=True)
        assert torch.equal(select, subset)
        assert torch.equal(subset[~chosen], x[~chosen]) and not torch.equal(subset[chosen], x[chosen])
    assert torch.equal(_morph_chosen(x.clone(), torch.zeros(9, dtype=torch.bool), torch.maximum), x)


def test_an_images_result_does_not_depend_on_the_batch_it_comes_in():
    """Augmenting a batch equals augmenting any split of it (so batch size and sharding change no pixel)."""
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    draws = epoch_parameters(300, 0, 1, torch.device("cpu"))
    whole = augment_batch(images, draws, PRESETS["full"])
    parts = torch.cat([augment_batch(images[i:i + 77], draws[i:i + 77], PRESETS["full"]) for i in range(0, 300, 77)])
    assert torch.equal(whole, parts) and not torch.equal(whole, images)
