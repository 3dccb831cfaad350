"""Pretext losses against literal formulas and closed forms, and the batched pretext
transforms (rotations, corruption, masks, homographies, patch grids, permutations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_method

from trainables.augment import (
    AugmentationPolicy,
    corrupt,
    random_homographies,
    region_mask,
    rotations,
    warp,
)
from trainables.backbones import StageFeatures, build_encoder
from trainables.evaluation import mlp_probe_accuracy
from trainables.loop import LoopSettings, evaluate
from trainables.losses import (
    pretext_classification,
    reconstruction_loss,
    transformation_regression,
)
from trainables.methods.jigsaw import maximal_hamming_permutations
from trainables.methods.relative_patch import NEIGHBOURS

IDENTITY_POLICY = AugmentationPolicy(strength=0.0, min_crop_scale=1.0, brightness=0.0,
                                     contrast=0.0, saturation=0.0, hue=0.0, jitter_prob=0.0,
                                     grayscale_prob=0.0, flip_prob=0.0)





def test_pretext_classification_is_softmax_cross_entropy() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(5, 4)), rng.integers(0, 4, size=5)
    expected = np.mean([-(row[y] - math.log(np.exp(row).sum()))
                        for row, y in zip(logits, labels, strict=True)])
    got = pretext_classification(torch.tensor(logits), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    uniform = pretext_classification(torch.zeros(3, 8), torch.tensor([0, 5, 7]))
    assert uniform.item() == pytest.approx(math.log(8), rel=1e-6)


def test_reconstruction_losses_match_their_formulas() -> None:
    rng = np.random.default_rng(1)
    logits, target = rng.normal(size=(2, 3, 4, 4)), rng.uniform(size=(2, 3, 4, 4))
    image = 1 / (1 + np.exp(-logits))
    mse = reconstruction_loss(torch.tensor(logits), torch.tensor(target), "mse")
    assert mse.item() == pytest.approx(np.mean((image - target) ** 2), rel=1e-9)
    bce = reconstruction_loss(torch.tensor(logits), torch.tensor(target), "bce")
    expected = -np.mean(target * np.log(image) + (1 - target) * np.log(1 - image))
    assert bce.item() == pytest.approx(expected, rel=1e-9)


def test_masked_reconstruction_is_the_context_encoders_l2_per_masked_element() -> None:
    rng = np.random.default_rng(2)
    logits, target = rng.normal(size=(2, 3, 4, 4)), rng.uniform(size=(2, 3, 4, 4))
    mask = np.zeros((2, 1, 4, 4))
    mask[0, :, 1:3, 1:3] = 1
    mask[1, :, :2, :] = 1
    image = 1 / (1 + np.exp(-logits))
    # ||M (x - F((1 - M) x))||^2 over each image's masked elements, averaged over images.
    per_image = [((mask[i] * (target[i] - image[i])) ** 2).sum() / (mask[i].sum() * 3)
                 for i in range(2)]
    got = reconstruction_loss(torch.tensor(logits), torch.tensor(target), "mse",
                              torch.tensor(mask))
    assert got.item() == pytest.approx(np.mean(per_image), rel=1e-9)
    # Whatever the prediction outside the mask, the loss does not change.
    changed = logits.copy()
    changed[0, :, 0, 0] += 5.0
    again = reconstruction_loss(torch.tensor(changed), torch.tensor(target), "mse",
                                torch.tensor(mask))
    assert again.item() == pytest.approx(got.item(), rel=1e-12)


def test_transformation_regression_closed_forms() -> None:
    true = torch.randn(4, 6)
    assert transformation_regression(true, true).item() == 0.0
    assert transformation_regression(true + 0.5, true).item() == pytest.approx(6 * 0.25)


def test_rotations_are_exact_quarter_turns_in_rotation_major_order() -> None:
    x = torch.rand(3, 3, 8, 8)
    four = rotations(x, 4)
    assert four.shape == (12, 3, 8, 8)
    torch.testing.assert_close(four[3:6], torch.rot90(x, 1, dims=(2, 3)))
    torch.testing.assert_close(rotations(x, 2)[3:], torch.rot90(x, 2, dims=(2, 3)))
    eight = rotations(x, 8)
    torch.testing.assert_close(eight[6:9], four[3:6])
    # A 45-degree turn of a constant image stays constant (reflected borders, no black).
    flat = torch.full((1, 3, 8, 8), 0.7)
    torch.testing.assert_close(rotations(flat, 8)[1], flat[0])
    with pytest.raises(ValueError, match="num_rotations"):
        rotations(x, 3)


@pytest.mark.parametrize("kind", ["gaussian", "masking", "salt_pepper"])
def test_corruption_level_controls_the_damage(kind: str) -> None:
    x = torch.full((64, 3, 16, 16), 0.5)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(corrupt(x, kind, 0.0, gen), x)
    light = (corrupt(x, kind, 0.1, gen) - x).abs().mean()
    heavy = (corrupt(x, kind, 0.6, gen) - x).abs().mean()
    assert 0 < light < heavy
    noisy = corrupt(x, kind, 0.6, gen)
    assert noisy.min() >= 0 and noisy.max() <= 1
    if kind != "gaussian":
        changed = (noisy != x).any(dim=1).float().mean()
        assert changed.item() == pytest.approx(0.6, abs=0.03)


def test_region_masks() -> None:
    gen = torch.Generator().manual_seed(0)
    central = region_mask(2, 8, "central", 0.5, gen, torch.device("cpu"))
    assert central.shape == (2, 1, 8, 8) and central.sum().item() == 2 * 16
    assert central[0, 0, 2:6, 2:6].all()
    random = region_mask(50, 8, "random_blocks", 0.25, gen, torch.device("cpu"))
    assert (random.sum(dim=(1, 2, 3)) == 4).all()
    assert len({tuple(m.nonzero()[0].tolist()) for m in random}) > 5
    several = region_mask(50, 16, "random_blocks", 0.25, gen, torch.device("cpu"), blocks=3)
    covered = several.sum(dim=(1, 2, 3))
    assert (covered >= 16).all() and (covered <= 48).all() and (covered > 16).any()


def test_homographies_warp_and_magnitude() -> None:
    gen = torch.Generator().manual_seed(0)
    identity = random_homographies(4, 1e-9, True, gen, torch.device("cpu"))
    torch.testing.assert_close(identity, torch.eye(3).expand(4, 3, 3), atol=1e-6, rtol=0)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(warp(x, torch.eye(3).expand(2, 3, 3)), x, atol=1e-5, rtol=0)
    # A quarter turn as a homography equals torch.rot90 (the content turns with it).
    quarter = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(warp(x, quarter.expand(2, 3, 3)),
                               torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    affine = random_homographies(500, 0.5, False, gen, torch.device("cpu"))
    assert (affine[:, 2, :2] == 0).all()
    strong = random_homographies(500, 1.0, False, gen, torch.device("cpu"))
    spread = lambda m: (m - torch.eye(3)).abs().mean()  # noqa: E731
    assert spread(affine) < spread(strong)


def test_maximal_hamming_permutations() -> None:
    perms = maximal_hamming_permutations(16)
    assert perms.shape == (16, 9)
    assert all(sorted(p) == list(range(9)) for p in perms)
    distances = [(a != b).sum() for i, a in enumerate(perms) for b in perms[i + 1:]]
    assert min(distances) >= 7  # random sets of 16 have pairs far closer
    assert (maximal_hamming_permutations(16) == perms).all()
    assert (maximal_hamming_permutations(2)[0] != maximal_hamming_permutations(2)[1]).all()


def test_jigsaw_views_are_shuffled_by_the_labelled_permutation(tiny_shapes) -> None:
    method = make_method("jigsaw", tiny_shapes, num_permutations=8, tile_size=8, tile_slack=0)
    coords = torch.arange(32 * 32).view(32, 32)
    image = torch.stack([coords % 32 * 8, coords // 32 * 8, coords * 0]).to(torch.uint8)
    tiles, labels = method.make_views(image[None].expand(16, -1, -1, -1).contiguous(),
                                      IDENTITY_POLICY, torch.Generator().manual_seed(0))
    assert tiles.shape == (16, 9, 3, 8, 8)
    corner = (tiles[:, :, :2, 0, 0] * 255 / 8).round().long()  # (x, y) of each tile
    for n in range(16):
        order = method.permutations[labels[n]].tolist()
        base = corner[n, order.index(0)]
        for position, source in enumerate(order):
            row, col = divmod(source, 3)
            assert corner[n, position].tolist() == [base[0] + 8 * col, base[1] + 8 * row]
    assert len(set(labels.tolist())) > 1


def test_relative_patch_neighbour_sits_where_the_label_says(tiny_shapes) -> None:
    method = make_method("relative_patch", tiny_shapes, patch_size=6, gap=2, jitter=0)
    coords = torch.arange(32 * 32).view(32, 32)
    image = torch.stack([coords % 32 * 8, coords // 32 * 8, coords * 0]).to(torch.uint8)
    centre, neighbour, labels = method.make_views(
        image[None].expand(64, -1, -1, -1).contiguous(), IDENTITY_POLICY,
        torch.Generator().manual_seed(0))
    dx = ((neighbour[:, 0, 0, 0] - centre[:, 0, 0, 0]) * 255 / 8).round().long()
    dy = ((neighbour[:, 1, 0, 0] - centre[:, 1, 0, 0]) * 255 / 8).round().long()
    for n in range(64):
        row, col = NEIGHBOURS[labels[n]]
        assert (int(dy[n]), int(dx[n])) == ((row - 1) * 8, (col - 1) * 8)
    assert len(set(labels.tolist())) == 8


def test_rotnet_labels_follow_the_rotation_blocks(tiny_shapes) -> None:
    method = make_method("rotnet", tiny_shapes, num_rotations=4)
    views = method.make_views(tiny_shapes.pretrain_images[:6], IDENTITY_POLICY,
                              torch.Generator())
    assert views[0].shape == (24, 3, 32, 32)
    torch.testing.assert_close(views[0][6:12], torch.rot90(views[0][:6], 1, dims=(2, 3)))
    method.eval()
    logits = method.classifier(method.encoder(views[0]))
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(4).repeat_interleave(6))
    torch.testing.assert_close(method(views), expected)


def test_context_encoder_hides_the_region_from_the_encoder(tiny_shapes, monkeypatch) -> None:
    method = make_method("context_encoder", tiny_shapes, mask="central", mask_fraction=0.5,
                     lambda_adv=0.0)
    assert not hasattr(method, "discriminator")
    x = torch.rand(4, 3, 32, 32)
    mask = region_mask(4, 32, "central", 0.5, torch.Generator(), torch.device("cpu"))
    changed = x.clone()
    changed[:, :, 8:24, 8:24] = torch.rand(4, 3, 16, 16)
    seen: list[torch.Tensor] = []
    original = method.encoder.feature_maps
    monkeypatch.setattr(method.encoder, "feature_maps",
                        lambda images, depth=None: seen.append(images) or original(images, depth))
    loss_x, loss_changed = method([x, mask]), method([changed, mask])
    torch.testing.assert_close(seen[0], seen[1])
    # The target inside the region did change, so the reconstruction loss does.
    assert loss_x.item() != loss_changed.item()


def test_context_encoder_adversarial_gradient_stays_inside_the_mask(tiny_shapes) -> None:
    """The discriminator judges the real context with the hidden region filled in by the
    prediction, so the adversarial term sends no gradient to the decoder's output outside
    the mask (where no loss asks it to reconstruct anything)."""
    method = make_method("context_encoder", tiny_shapes, mask="random_blocks",
                         mask_fraction=0.25, lambda_rec=0.0, lambda_adv=1.0)
    x = torch.rand(4, 3, 32, 32)
    mask = region_mask(4, 32, "random_blocks", 0.25, torch.Generator().manual_seed(0),
                       torch.device("cpu"), 3)
    outputs: list[torch.Tensor] = []

    def keep(module, inputs, output: torch.Tensor) -> None:
        output.retain_grad()
        outputs.append(output)

    method.decoder.register_forward_hook(keep)
    method([x, mask]).backward()
    (logits,) = outputs
    grad = logits.grad
    outside = (1 - mask).expand_as(grad).bool()
    assert (grad[outside] == 0).all()
    assert grad[~outside].abs().sum() > 0


def test_mlp_probe_separates_what_a_linear_probe_cannot() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(800, 2, generator=gen) * 2 - 1
    labels = ((points[:, 0] * points[:, 1]) > 0).long()  # XOR: not linearly separable
    accuracy = mlp_probe_accuracy(points[:600], labels[:600], points[600:], labels[600:], 2)
    assert accuracy > 0.9


def test_stage_features_evaluate_an_intermediate_block() -> None:
    encoder = build_encoder("small_cnn", 3, [0.5] * 3, [0.25] * 3)
    x = torch.rand(2, 3, 32, 32)
    assert StageFeatures(encoder, 2)(x).shape == (2, encoder.channels[1])
    torch.testing.assert_close(StageFeatures(encoder, 4)(x), encoder(x))
    with pytest.raises(ValueError, match="eval_layer: got 5, allowed: 1 to 4"):
        StageFeatures(encoder, 5)


def test_evaluation_offers_the_mlp_probe_and_intermediate_blocks(tiny_shapes) -> None:
    method = make_method("rotnet", tiny_shapes)
    last = evaluate(method, tiny_shapes, LoopSettings(epochs=1))
    assert set(last) == {"knn_acc", "linear_acc", "mlp_acc"}
    block2 = evaluate(method, tiny_shapes, LoopSettings(epochs=1, eval_layer=2,
                                                        mlp_probe="never"))
    assert block2["linear_acc"] != last["linear_acc"]
    # CPC evaluates its patch-grid mean, from the requested block as well.
    cpc = make_method("cpc", tiny_shapes, patch_size=16, pred_steps=1)
    assert cpc.representation(2)(torch.rand(2, 3, 32, 32)).shape == (2, cpc.encoder.channels[1])
