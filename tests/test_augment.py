"""Batched augmentations: per-sample randomness, ranges, reproducibility, and agreement of
the colour operations with torchvision's reference implementations."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from trainables.augment import (
    AugmentationPolicy,
    apply_jitter,
    augment,
    color_jitter,
    random_grayscale,
    random_resized_crop_flip,
    shift_hue,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 16, channels: int = 3, size: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), generator=_gen(1), dtype=torch.uint8)


def test_output_is_float_in_unit_range_with_input_shape() -> None:
    images = _batch()
    out = augment(images, AugmentationPolicy.from_strength(1.0), _gen())
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_each_image_gets_its_own_transform() -> None:
    one = _batch(1)
    images = one.repeat(32, 1, 1, 1)
    out = augment(images, AugmentationPolicy.from_strength(0.8), _gen())
    distinct = {tuple(v.flatten()[:20].tolist()) for v in out}
    assert len(distinct) > 28


def test_same_seed_same_views_other_seed_other_views() -> None:
    images, policy = _batch(), AugmentationPolicy.from_strength(0.5)
    a, b = augment(images, policy, _gen(7)), augment(images, policy, _gen(7))
    c = augment(images, policy, _gen(8))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_zero_strength_crop_is_whole_image_or_its_mirror() -> None:
    x = _batch(32).float() / 255
    out = random_resized_crop_flip(x, min_scale=1.0, flip_prob=0.5, gen=_gen())
    mirrored = x.flip(-1)
    for got, orig, mirror in zip(out, x, mirrored, strict=True):
        assert torch.allclose(got, orig, atol=1e-5) or torch.allclose(got, mirror, atol=1e-5)


def test_strength_sets_simclr_magnitudes() -> None:
    policy = AugmentationPolicy.from_strength(0.5)
    assert (policy.brightness, policy.contrast, policy.saturation) == (0.4, 0.4, 0.4)
    assert policy.hue == pytest.approx(0.1)
    assert (policy.jitter_prob, policy.grayscale_prob) == (0.8, 0.2)
    assert AugmentationPolicy.from_strength(0.0).min_crop_scale == 1.0
    assert AugmentationPolicy.from_strength(1.0).min_crop_scale == pytest.approx(0.2)
    with pytest.raises(ValueError):
        AugmentationPolicy.from_strength(1.5)


def test_a_given_crop_scale_fixes_the_crop_at_every_strength() -> None:
    """crop_scale separates the crop from the colour (SimCLR's colour-strength table
    keeps crops of 8% to 100% at every strength); 0 leaves the crop to the strength."""
    weak, strong = (AugmentationPolicy.from_strength(s, crop_scale=0.08) for s in (0.125, 1.0))
    assert weak.min_crop_scale == strong.min_crop_scale == 0.08
    assert (weak.brightness, strong.brightness) == (0.1, 0.8)
    assert AugmentationPolicy.from_strength(1.0, crop_scale=1.0).min_crop_scale == 1.0
    assert AugmentationPolicy.from_strength(1.0, crop_scale=0.0).min_crop_scale == (
        AugmentationPolicy.from_strength(1.0).min_crop_scale)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentationPolicy.from_strength(0.5, crop_scale=1.5)


def test_stronger_augmentation_moves_images_further() -> None:
    x = _batch(64)
    base = x.float() / 255

    def distance(strength: float) -> float:
        return (augment(x, AugmentationPolicy.from_strength(strength), _gen()) - base).abs().mean()

    assert distance(0.0) < distance(0.5) < distance(1.0)


@pytest.mark.parametrize(
    "b,c,s,h", [(1.3, 1, 1, 0), (1, 0.6, 1, 0), (1, 1, 1.7, 0), (1, 1, 1, 0.15),
                (1, 1, 1, -0.3), (0.7, 1.4, 0.3, 0.1)],
)
def test_jitter_matches_torchvision(b: float, c: float, s: float, h: float) -> None:
    x = torch.rand(4, 3, 10, 10, generator=_gen(3))
    ones = torch.ones(4)
    got = apply_jitter(x, ones * b, ones * c, ones * s, ones * h)
    expected = TF.adjust_hue(
        TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s), h
    )
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


def test_jitter_factors_are_per_sample() -> None:
    x = torch.rand(2, 3, 6, 6, generator=_gen(4))
    brightness = torch.tensor([0.5, 1.0])
    ones = torch.ones(2)
    out = apply_jitter(x, brightness, ones, ones, torch.zeros(2))
    torch.testing.assert_close(out[0], TF.adjust_brightness(x[0], 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-5, rtol=0)


def test_images_not_drawn_for_jitter_or_grayscale_stay_exactly_as_they_were() -> None:
    """Per-image application is an exact selection: an image not drawn is bit for bit the
    input, one drawn is visibly changed (jitter) or grey (grayscale)."""
    x = torch.rand(64, 3, 8, 8, generator=_gen(7))
    jittered = color_jitter(x, AugmentationPolicy.from_strength(1.0), _gen(8))
    kept = [torch.equal(jittered[i], x[i]) for i in range(64)]
    assert 3 <= sum(kept) <= 25  # p = 0.8 of being jittered
    for i in range(64):
        assert kept[i] or (jittered[i] - x[i]).abs().max() > 1e-3
    grey = random_grayscale(x, 0.5, _gen(9))
    for i in range(64):
        is_grey = torch.equal(grey[i, 0], grey[i, 1]) and torch.equal(grey[i, 1], grey[i, 2])
        assert torch.equal(grey[i], x[i]) or is_grey
    assert 0 < sum(torch.equal(grey[i], x[i]) for i in range(64)) < 64


def test_hue_shift_of_zero_or_whole_turns_is_the_identity() -> None:
    x = torch.rand(8, 3, 5, 5, generator=_gen(5))
    x[0] = 0.5  # grey pixels have no hue
    for turns in (0.0, 1.0, -2.0):
        torch.testing.assert_close(shift_hue(x, torch.full((8,), turns)), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("levels", [None, 4], ids=["continuous", "ties"])
def test_hue_shift_matches_torchvision_per_image(levels: int | None) -> None:
    """On continuous colours, and on four levels per channel, where channels tie for the
    maximum and many pixels are grey (black, white)."""
    x = torch.rand(6, 3, 7, 7, generator=_gen(6))
    if levels is not None:
        x = (x * levels).floor().clamp(max=levels - 1) / (levels - 1)
    hue = torch.linspace(-0.5, 0.5, 6)
    expected = torch.stack([TF.adjust_hue(img, float(h)) for img, h in zip(x, hue, strict=True)])
    torch.testing.assert_close(shift_hue(x, hue), expected, atol=2e-5, rtol=0)


def test_single_channel_images_are_supported() -> None:
    out = augment(_batch(8, channels=1), AugmentationPolicy.from_strength(1.0), _gen())
    assert out.shape == (8, 1, 12, 12)
    assert out.min() >= 0 and out.max() <= 1


def test_rejects_float_input() -> None:
    with pytest.raises(ValueError):
        augment(torch.rand(2, 3, 4, 4), AugmentationPolicy.from_strength(0.5), _gen())
