"""Batched, per-sample random augmentations that run on the training device.

Every image of a batch draws its own crop, flip and colour distortion, but the work is a
handful of tensor operations over the whole batch (one ``grid_sample`` for all crops),
so the hot path has no per-sample Python and runs wherever the batch lives.

One scalar ``strength`` s in [0, 1] sets the distortion, following SimCLR's colour
convention: colour jitter with brightness, contrast and saturation 0.8s and hue 0.2s,
applied with p = 0.8, then grayscale with p = 0.2. Unless a crop scale is given, the
same s widens the random resized crop: the smallest crop area goes from the whole image
at s = 0 to 20% at s = 1 (MoCo v2's lower bound; SimCLR's 8% was chosen for 224-pixel
ImageNet crops and often removes the object entirely from a 32-pixel image). A given
crop scale fixes the smallest area instead, so that colour and crop vary apart, as in
SimCLR's colour-strength experiment (Chen et al. 2020, Table 1: crops of 8% to 100% of
the area at every strength). Jitter operations are applied in a
fixed order (brightness, contrast, saturation, hue) rather than torchvision's random
order, which would need a per-sample branch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: torchvision's grayscale weights (``rgb_to_grayscale``), ITU-R 601 luma rounded as it rounds.
_LUMA = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentationPolicy:
    """The concrete distortion magnitudes implied by a strength s."""

    strength: float
    min_crop_scale: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    flip_prob: float = 0.5

    @classmethod
    def from_strength(cls, strength: float, crop_scale: float = 0.0) -> AugmentationPolicy:
        """The policy of colour strength ``strength``; the smallest crop area is
        ``crop_scale`` where it is above 0, else it follows the strength."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"aug_strength must be in [0, 1], got {strength}")
        if not 0.0 <= crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in [0, 1], got {crop_scale}")
        return cls(
            strength=strength,
            min_crop_scale=crop_scale if crop_scale > 0 else 1.0 - 0.8 * strength,
            brightness=0.8 * strength,
            contrast=0.8 * strength,
            saturation=0.8 * strength,
            hue=0.2 * strength,
        )


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def _bernoulli(n: int, p: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def random_resized_crop_flip(
    x: Tensor, min_scale: float, flip_prob: float, gen: torch.Generator, tries: int = 10
) -> Tensor:
    """Crop a random area fraction in [min_scale, 1] with aspect ratio in [3/4, 4/3],
    resize it back to the input size and flip it horizontally with ``flip_prob``.

    Like torchvision's RandomResizedCrop, a (scale, ratio) draw whose crop does not fit the
    image is redrawn, up to ``tries`` times (all drawn at once), before falling back to the
    whole image.
    """
    n, device = x.shape[0], x.device
    area = min_scale + (1.0 - min_scale) * torch.rand(n, tries, generator=gen, device=device)
    log_ratio = math.log(3 / 4) + math.log(16 / 9) * torch.rand(
        n, tries, generator=gen, device=device
    )
    ratio = torch.exp(log_ratio)
    widths, heights = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    fits = (widths <= 1.0) & (heights <= 1.0)
    first_fit = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), tries)
    widths = torch.cat([widths, torch.ones(n, 1, device=device)], dim=1)
    heights = torch.cat([heights, torch.ones(n, 1, device=device)], dim=1)
    width = widths.gather(1, first_fit.view(-1, 1)).squeeze(1)
    height = heights.gather(1, first_fit.view(-1, 1)).squeeze(1)
    # Centres are drawn so that the crop stays inside the image ([-1, 1] coordinates).
    cx = (2 * torch.rand(n, generator=gen, device=device) - 1) * (1 - width)
    cy = (2 * torch.rand(n, generator=gen, device=device) - 1) * (1 - height)
    flip = torch.where(_bernoulli(n, flip_prob, gen, device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _grayscale(x: Tensor) -> Tensor:
    """Luma, (N, 1, H, W): one product and two fused multiply-adds (half the time of
    summing three products on a CPU)."""
    r, g, b = x.unbind(dim=1)
    return (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def shift_hue(x: Tensor, hue: Tensor) -> Tensor:
    """Rotate the hue of RGB images in [0, 1] by ``hue`` turns, one shift per image.

    torchvision's ``adjust_hue`` (RGB to HSV, add to H, back to RGB) in closed form, equal
    to it up to float rounding (tested) but without materialising HSV: V is the maximum
    channel and V - V * S the minimum, so the way back is ``min + (max - min) * f(H)`` with
    f a clamped triangle per channel. Selections are exact ``lerp``s with 0/1 weights rather
    than ``torch.where``, and the only modulo is on H itself: on a CPU, ``where`` and
    ``remainder`` cost several times an add (measured on 2 cores: 3x and 5x), and both
    are as cheap as an add on a GPU.
    """
    n = x.shape[0]
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    delta = maxc - minc
    # The hue sector in [-1, 5), six times HSV's H, from whichever channel is the maximum
    # (red first, then green, as torchvision breaks ties). Grey pixels (delta 0) get 0.
    from_red = g - b
    from_green = (b - r).add_(delta, alpha=2.0)
    from_blue = (r - g).add_(delta, alpha=4.0)
    sector = torch.lerp(from_blue, from_green, (maxc == g).to(x.dtype))
    sector = torch.lerp(sector, from_red, (maxc == r).to(x.dtype))
    safe_delta = delta + (delta == 0)
    h6 = sector.div_(safe_delta).add_(6.0 * hue.view(n, 1, 1)).remainder_(6.0)
    # Each channel's share of the chroma as a function of H6, clamped to [0, 1]: red
    # |H6 - 3| - 1, green 2 - |H6 - 2|, blue 2 - |H6 - 4|. Scalars only: a constant tensor
    # copied to a GPU would make the host wait for it.
    share = torch.stack([
        (h6 - 3.0).abs_().sub_(1.0),
        (h6 - 2.0).abs_().neg_().add_(2.0),
        (h6 - 4.0).abs_().neg_().add_(2.0),
    ], dim=1).clamp_(0.0, 1.0)
    return torch.addcmul(minc.unsqueeze(1), delta.unsqueeze(1), share)


def apply_jitter(
    x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor
) -> Tensor:
    """Brightness, contrast, saturation and hue adjustments with one factor per image
    ((N,) tensors), each defined as in torchvision's ``adjust_*`` functions (a blend
    towards black, the mean grey level and the grey image, written as one scaling and
    one per-image or per-pixel offset); arithmetic in place after the first product."""
    n, channels = x.shape[0], x.shape[1]
    brightness, contrast, saturation = (
        factor.view(n, 1, 1, 1) for factor in (brightness, contrast, saturation))
    out = (x * brightness).clamp_(0, 1)
    gray = _grayscale(out) if channels == 3 else out
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    out = out.mul_(contrast).add_(mean * (1 - contrast)).clamp_(0, 1)
    if channels != 3:
        return out
    gray = _grayscale(out).mul_(1 - saturation)
    out = out.mul_(saturation).add_(gray).clamp_(0, 1)
    return shift_hue(out, hue).clamp_(0, 1)


def color_jitter(x: Tensor, policy: AugmentationPolicy, gen: torch.Generator) -> Tensor:
    """Per-sample random jitter factors, each image jittered with p = 0.8."""
    n, device = x.shape[0], x.device

    def factor(magnitude: float) -> Tensor:
        return _uniform(n, max(0.0, 1 - magnitude), 1 + magnitude, gen, device)

    out = apply_jitter(
        x,
        brightness=factor(policy.brightness),
        contrast=factor(policy.contrast),
        saturation=factor(policy.saturation),
        hue=_uniform(n, -policy.hue, policy.hue, gen, device),
    )
    # For finite values, lerp with a 0/1 weight returns either end exactly, as torch.where
    # would, at a third of its cost on a CPU: the images not drawn stay as they were.
    apply = _bernoulli(n, policy.jitter_prob, gen, device).view(n, 1, 1, 1)
    return torch.lerp(x, out.to(x.dtype), apply.to(x.dtype))


def random_grayscale(x: Tensor, prob: float, gen: torch.Generator) -> Tensor:
    if x.shape[1] != 3:
        return x
    apply = _bernoulli(x.shape[0], prob, gen, x.device).view(-1, 1, 1, 1)
    return torch.lerp(x, _grayscale(x).expand_as(x), apply.to(x.dtype))


def augment(images: Tensor, policy: AugmentationPolicy, gen: torch.Generator) -> Tensor:
    """Return one random view of a uint8 (N, C, H, W) batch as floats in [0, 1].

    ``gen`` must live on the batch's device; drawing from it makes the views reproducible
    for a given seed.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 (N, C, H, W) batch, got {images.dtype} "
                         f"{tuple(images.shape)}")
    x = images.float().div_(255.0)
    x = random_resized_crop_flip(x, policy.min_crop_scale, policy.flip_prob, gen)
    x = color_jitter(x, policy, gen)
    return random_grayscale(x, policy.grayscale_prob, gen)


def crop_at(x: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """One ``size`` x ``size`` crop per image at per-image offsets, by a single gather."""
    n, c = x.shape[:2]
    steps = torch.arange(size, device=x.device)
    rows = (top.view(n, 1) + steps).view(n, 1, size, 1).expand(n, c, size, size)
    cols = (left.view(n, 1) + steps).view(n, 1, 1, size).expand(n, c, size, size)
    index = rows * x.shape[3] + cols
    return x.flatten(2).gather(2, index.flatten(2)).view(n, c, size, size)


def random_offsets(
    n: int, room: int, gen: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Uniform (top, left) offsets in [0, room] for ``n`` crops."""
    if room < 0:
        raise ValueError(f"the patch does not fit the image ({-room} pixels too large)")
    draw = torch.randint(0, room + 1, (2, n), generator=gen, device=device)
    return draw[0], draw[1]


def random_patches(x: Tensor, size: int, gen: torch.Generator) -> Tensor:
    """One uniformly placed ``size`` x ``size`` patch of every (square) image."""
    top, left = random_offsets(x.shape[0], x.shape[2] - size, gen, x.device)
    return crop_at(x, top, left, size)


def patch_grid(x: Tensor, size: int, stride: int) -> Tensor:
    """Every ``size`` x ``size`` patch on a regular grid with ``stride``, as an
    (N, rows, cols, C, size, size) tensor (rows and cols as many as fit)."""
    if size > min(x.shape[2:]):
        raise ValueError(f"patch size {size} exceeds the {tuple(x.shape[2:])} image")
    patches = x.unfold(2, size, stride).unfold(3, size, stride)  # N, C, R, Q, size, size
    return patches.permute(0, 2, 3, 1, 4, 5)


def _sample_grid(x: Tensor, inverse: Tensor, padding: str) -> Tensor:
    """Resample ``x`` so that output coordinate p shows input coordinate ``inverse @ p``
    (normalised [-1, 1] coordinates, homogeneous, one 3x3 matrix per image)."""
    n, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).view(1, -1, 3)
    mapped = points @ inverse.to(x.dtype).transpose(1, 2)  # N, H*W, 3
    grid = mapped[..., :2] / mapped[..., 2:].clamp_min(1e-6)
    return F.grid_sample(x, grid.view(n, h, w, 2), mode="bilinear", padding_mode=padding,
                         align_corners=False)


def warp(x: Tensor, matrices: Tensor) -> Tensor:
    """Apply one 3x3 homography per image (normalised coordinates; the image content at p
    moves to ``matrices @ p``); uncovered pixels are black."""
    return _sample_grid(x, torch.linalg.inv(matrices), "zeros")


def rotations(x: Tensor, count: int) -> Tensor:
    """Every image under ``count`` rotations (2: 0 and 180 degrees; 4: multiples of 90;
    8: multiples of 45), rotation-major: rows ``r * N .. (r + 1) * N`` are rotation r.
    Quarter turns are exact; 45-degree ones are resampled with reflected borders, so no
    black corner gives the angle away. Resampling still blurs them a little, which quarter
    turns are not: a low-level cue that tells the odd rotations from the even ones
    without looking at the content (the source's four rotations have none)."""
    if count not in (2, 4, 8):
        raise ValueError(f"num_rotations: got {count}, allowed: 2, 4, 8")
    step = 360 // count
    out = []
    for r in range(count):
        angle = r * step
        if angle % 90 == 0:
            out.append(torch.rot90(x, angle // 90, dims=(2, 3)))
            continue
        theta = math.radians(angle)
        matrix = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0],
                               [math.sin(theta), math.cos(theta), 0.0],
                               [0.0, 0.0, 1.0]], device=x.device)
        out.append(_sample_grid(x, torch.linalg.inv(matrix).expand(len(x), 3, 3), "reflection"))
    return torch.cat(out)


NOISE_KINDS = ("gaussian", "masking", "salt_pepper")


def corrupt(x: Tensor, kind: str, level: float, gen: torch.Generator) -> Tensor:
    """The denoising autoencoder's corruption of images in [0, 1]: additive Gaussian noise
    of standard deviation ``level`` (clipped), masking noise (each pixel zeroed with
    probability ``level``) or salt-and-pepper noise (each pixel set to 0 or 1 with
    probability ``level``)."""
    n, _, h, w = x.shape
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (x + level * noise).clamp(0.0, 1.0)
    hit = torch.rand(n, 1, h, w, generator=gen, device=x.device) < level
    if kind == "masking":
        return x.masked_fill(hit, 0.0)
    if kind == "salt_pepper":
        salt = torch.rand(n, 1, h, w, generator=gen, device=x.device) < 0.5
        return torch.where(hit, salt.to(x.dtype).expand_as(x), x)
    raise ValueError(f"noise: unknown {kind!r}; allowed: {', '.join(NOISE_KINDS)}")


MASK_KINDS = ("central", "random_blocks")


def region_mask(
    n: int, size: int, kind: str, fraction: float, gen: torch.Generator, device: torch.device,
    blocks: int = 1,
) -> Tensor:
    """(N, 1, size, size) float mask, 1 on the region to hide and reconstruct: the central
    square of side ``fraction * size``, or the union of ``blocks`` such squares placed at
    random per image (Pathak et al.'s random-block masks; they may overlap)."""
    side = max(1, round(fraction * size))
    steps = torch.arange(size, device=device).view(1, -1)

    def square(top: Tensor, left: Tensor) -> Tensor:
        rows = (steps >= top.view(-1, 1)) & (steps < (top + side).view(-1, 1))
        cols = (steps >= left.view(-1, 1)) & (steps < (left + side).view(-1, 1))
        return rows[:, :, None] & cols[:, None, :]

    if kind == "central":
        corner = torch.full((n,), (size - side) // 2, device=device)
        mask = square(corner, corner)
    elif kind == "random_blocks":
        mask = torch.zeros(n, size, size, dtype=torch.bool, device=device)
        for _ in range(blocks):
            mask |= square(*random_offsets(n, size - side, gen, device))
    else:
        raise ValueError(f"mask: unknown {kind!r}; allowed: {', '.join(MASK_KINDS)}")
    return mask.unsqueeze(1).float()


def random_homographies(
    n: int, magnitude: float, projective: bool, gen: torch.Generator, device: torch.device
) -> Tensor:
    """AET's transformations, scaled by ``magnitude`` in [0, 1]: rotation up to 180m
    degrees, scale within 1 +- 0.3m, shear up to 30m degrees, translation up to 0.2m of
    the image, and (projective) perspective terms up to 0.2m; (N, 3, 3), last entry 1.
    Magnitude 1 is AET's affine range."""
    def uniform(bound: float) -> Tensor:
        return (2 * torch.rand(n, generator=gen, device=device) - 1) * bound

    angle = uniform(math.pi * magnitude)
    scale = 1 + uniform(0.3 * magnitude)
    shear = uniform(math.radians(30) * magnitude)
    matrices = torch.zeros(n, 3, 3, device=device)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # Rotation @ shear (x += tan * y) @ scale, then the translation column.
    matrices[:, 0, 0] = scale * cos
    matrices[:, 0, 1] = scale * (cos * tan - sin)
    matrices[:, 1, 0] = scale * sin
    matrices[:, 1, 1] = scale * (sin * tan + cos)
    matrices[:, 0, 2] = uniform(0.4 * magnitude)  # 0.2 of the image = 0.4 in [-1, 1]
    matrices[:, 1, 2] = uniform(0.4 * magnitude)
    matrices[:, 2, 2] = 1.0
    if projective:
        matrices[:, 2, 0] = uniform(0.2 * magnitude)
        matrices[:, 2, 1] = uniform(0.2 * magnitude)
    return matrices
