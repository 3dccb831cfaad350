"""Behaviour of the CPC, spatial contrasting, layer-wise triplet and Deep InfoMax methods
beyond their losses: patch geometry, causality, layer-wise freezing, the transfer
protocol, the filter image and refused configurations."""

from __future__ import annotations

import pytest
import torch
from conftest import make_method

from trainables.augment import AugmentationPolicy, crop_at, patch_grid, random_patches
from trainables.backbones import pool
from trainables.losses import discriminator_loss
from trainables.methods.cpc import MaskedConvContext, PatchGridEncoder
from trainables.methods.patch_triplet import minimal_patch


def _uint8_batch(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def test_crop_at_and_patch_grid_equal_plain_slicing() -> None:
    x = torch.randn(3, 2, 10, 10)
    top, left = torch.tensor([0, 3, 6]), torch.tensor([6, 0, 2])
    crops = crop_at(x, top, left, 4)
    for i in range(3):
        torch.testing.assert_close(crops[i], x[i, :, top[i]:top[i] + 4, left[i]:left[i] + 4])
    grid = patch_grid(x, 4, 2)
    assert grid.shape == (3, 4, 4, 2, 4, 4)
    torch.testing.assert_close(grid[1, 2, 3], x[1, :, 4:8, 6:10])


def test_random_patches_stay_inside_and_vary_per_image() -> None:
    x = torch.arange(4 * 12 * 12, dtype=torch.float32).view(4, 1, 12, 12)
    patches = random_patches(x, 5, torch.Generator().manual_seed(0))
    assert patches.shape == (4, 1, 5, 5)
    corners = [(int(p[0, 0, 0]) % 144) for p in patches]
    assert all(c // 12 <= 7 and c % 12 <= 7 for c in corners)
    with pytest.raises(ValueError):
        random_patches(x, 13, torch.Generator())


def test_cpc_context_never_sees_the_rows_it_predicts() -> None:
    context = MaskedConvContext(dim=3, layers=3)
    z = torch.randn(2, 3, 6, 5)
    changed = z.clone()
    changed[:, :, 3:] = torch.randn(2, 3, 3, 5)
    torch.testing.assert_close(context(z)[:, :, :3], context(changed)[:, :, :3])
    assert not torch.allclose(context(z)[:, :, 3:], context(changed)[:, :, 3:])


def test_cpc_grid_and_representation(tiny_shapes) -> None:
    cpc = make_method("cpc", tiny_shapes, patch_size=8)
    grid = PatchGridEncoder(cpc.encoder, 8).encode_grid(torch.rand(2, 3, 32, 32))
    assert grid.shape == (2, cpc.feature_dim, 7, 7)
    assert cpc.representation()(torch.rand(2, 3, 32, 32)).shape == (2, cpc.feature_dim)
    loss = cpc([torch.rand(4, 3, 32, 32)])
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in cpc.predictors.parameters())


class RowIndex(torch.nn.Module):
    """A stand-in context network: every context vector holds its grid row's index."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.arange(z.shape[2], dtype=z.dtype).view(1, 1, -1, 1).expand_as(z)


@pytest.mark.parametrize("patch_size,pred_steps", [(8, 3), (9, 2), (12, 2), (4, 1)])
def test_cpc_targets_share_no_pixels_with_their_context(
    tiny_shapes, monkeypatch, patch_size: int, pred_steps: int
) -> None:
    """Every (context, target) pair the loss is given: the target patch's pixel rows lie
    entirely below every pixel the context at row i has seen (the patches of rows <= i)."""
    cpc = make_method("cpc", tiny_shapes, patch_size=patch_size, pred_steps=pred_steps)
    stride = max(1, patch_size // 2)
    rows = (32 - patch_size) // stride + 1
    cols = rows
    # Contexts that carry their own row index, predictors that pass them through: a
    # prediction then says which context row it came from.
    cpc.context = RowIndex()
    with torch.no_grad():
        for predictor in cpc.predictors:
            predictor.weight.copy_(torch.eye(cpc.feature_dim).view(*predictor.weight.shape))
            predictor.bias.zero_()
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(predictions, candidates, targets, temperature):
        pairs.append((predictions[:, 0].round().long(), targets))
        return predictions.sum() * 0

    monkeypatch.setattr("trainables.methods.cpc.cpc_info_nce", record)
    cpc([torch.rand(2, 3, 32, 32)])
    assert len(pairs) == pred_steps
    for context_row, targets in pairs:
        assert len(targets) > 0
        target_row = targets // cols % rows
        context_bottom = context_row * stride + patch_size  # last seen pixel row + 1
        assert (target_row * stride >= context_bottom).all()


def test_cpc_refuses_more_prediction_steps_than_its_grid_allows(tiny_shapes) -> None:
    """A 3x3 grid (16-pixel patches on 32-pixel images) leaves one row to predict: the row
    right below a context overlaps it."""
    make_method("cpc", tiny_shapes, patch_size=16, pred_steps=1)
    with pytest.raises(ValueError, match="pred_steps and patch_size: predicting 2 row"):
        make_method("cpc", tiny_shapes, patch_size=16, pred_steps=2)
    make_method("cpc", tiny_shapes, patch_size=12, pred_steps=2)
    with pytest.raises(ValueError, match="needs a grid of at least 5 rows"):
        make_method("cpc", tiny_shapes, patch_size=12, pred_steps=3)


@pytest.mark.parametrize(("name", "fits", "too_large", "named"), [
    ("relative_patch", {"patch_size": 10, "gap": 1, "jitter": 0},
     {"patch_size": 11, "gap": 0, "jitter": 0}, "patch_size, gap and jitter"),
    ("jigsaw", {"tile_size": 8, "tile_slack": 2}, {"tile_size": 9, "tile_slack": 2},
     "tile_size and tile_slack"),
    ("spatial_contrasting", {"patch_size": 32}, {"patch_size": 33}, "patch_size"),
    ("patch_triplet", {"layers": 2, "patch_margin": 17, "max_shift": 2},
     {"layers": 2, "patch_margin": 18, "max_shift": 2}, "layers, patch_margin and max_shift"),
])
def test_patch_methods_refuse_patches_larger_than_the_image(
    tiny_shapes, name: str, fits: dict, too_large: dict, named: str
) -> None:
    """The declared check and the views agree at the edge: what fits the 32-pixel images
    exactly makes views (at the last layer for a layer-wise method), one pixel more is
    refused before training, naming the hyperparameters."""
    method = make_method(name, tiny_shapes, **fits)
    method.begin_epoch(2, 2)
    policy = AugmentationPolicy.from_strength(0.5)
    method.make_views(tiny_shapes.train_images[:8], policy, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=f"^{named}: .*more than the 32-pixel|^{named}: .*"
                                         "do not fit the 32-pixel"):
        make_method(name, tiny_shapes, **too_large)


def test_spatial_contrasting_views_are_two_patches(tiny_shapes) -> None:
    sc = make_method("spatial_contrasting", tiny_shapes, patch_size=12)
    views = sc.make_views(_uint8_batch(), AugmentationPolicy.from_strength(0.5),
                          torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(4, 3, 12, 12)] * 2
    assert not torch.equal(views[0], views[1])
    assert torch.isfinite(sc(views))


def test_spatial_contrasting_refuses_more_layers_than_stages(tiny_shapes) -> None:
    sc = make_method("spatial_contrasting", tiny_shapes, layers="last_three")
    sc.encoder.stages = sc.encoder.stages[:2]
    with pytest.raises(ValueError, match="needs 3 encoder stages"):
        sc([torch.rand(4, 3, 8, 8)] * 2)


def test_minimal_patches_fill_one_pooling_window() -> None:
    assert minimal_patch((6,)) == 7  # the paper's 7x7 patch for 6x6 filters, 2x2 pooling
    assert minimal_patch((6, 3)) == 13


def test_patch_triplet_trains_one_layer_after_the_other(tiny_shapes) -> None:
    method = make_method("patch_triplet", tiny_shapes, layers=2, filters1=8, filters2=6)
    assert method.encoder.channels == (8, 6)
    first, second = method.encoder.stages
    schedule = []
    for epoch in range(1, 5):
        method.begin_epoch(epoch, 4)
        schedule.append(method.active_layer)
    assert schedule == [1, 1, 2, 2]
    assert not any(p.requires_grad for p in first.parameters())
    views = method.make_views(_uint8_batch(8), AugmentationPolicy.from_strength(0.0),
                              torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(8, 3, 13, 13)] * 2
    method(views).backward()
    assert all(p.grad is None for p in first.parameters())
    assert all(p.grad is not None for p in second.parameters())
    with pytest.raises(ValueError, match="at least 2 epochs"):
        method.begin_epoch(1, 1)


def test_patch_triplet_evaluates_only_the_layers_trained_so_far(tiny_shapes) -> None:
    """During layer 1's epochs layer 2 is still at its random initialisation: evaluation,
    at the last stage or at train.eval_layer 2, must not read through it."""
    method = make_method("patch_triplet", tiny_shapes, layers=2, filters1=8, filters2=6)
    images = torch.rand(4, 3, 32, 32)
    second = method.encoder.stages[1][0].weight
    for epoch in (1, 2):
        method.begin_epoch(epoch, 4)
        before = [method.representation(depth)(images) for depth in (None, 2)]
        with torch.no_grad():
            second.add_(torch.randn_like(second))
        after = [method.representation(depth)(images) for depth in (None, 2)]
        for old, new in zip(before, after, strict=True):
            assert old.shape == (4, 8)
            torch.testing.assert_close(old, new)
    method.begin_epoch(3, 4)
    before = method.representation()(images)
    with torch.no_grad():
        second.add_(torch.randn_like(second))
    assert before.shape == (4, 6)
    assert not torch.allclose(before, method.representation()(images))
    with pytest.raises(ValueError, match="eval_layer: got 3"):
        method.representation(3)


def test_patch_triplet_evaluates_with_the_pooling_it_trains_with(tiny_shapes) -> None:
    """The source embeds a patch by max-pooling the layer's output; evaluation embeds a
    whole image the same way, at every stage of the schedule."""
    method = make_method("patch_triplet", tiny_shapes, layers=2, filters1=8, filters2=6)
    images = torch.rand(4, 3, 32, 32)
    for epoch in (1, 2):
        method.begin_epoch(epoch, 2)
        torch.testing.assert_close(method.representation()(images), method.embed(images))


def test_patch_triplet_positives_are_distinct_adjacent_patches(tiny_shapes) -> None:
    method = make_method("patch_triplet", tiny_shapes, layers=1, max_shift=2)
    method.begin_epoch(1, 1)
    # An image whose pixel values encode their own coordinates: the patches' corners
    # reveal where they were cut.
    coords = torch.arange(32 * 32).view(32, 32)
    batch = torch.stack([coords % 32 * 8, coords // 32 * 8, coords * 0]).to(torch.uint8)
    policy = AugmentationPolicy(strength=0.0, min_crop_scale=1.0, brightness=0.0, contrast=0.0,
                                saturation=0.0, hue=0.0, jitter_prob=0.0, grayscale_prob=0.0,
                                flip_prob=0.0)
    anchors, positives = method.make_views(batch.expand(64, -1, -1, -1).contiguous(), policy,
                                           torch.Generator().manual_seed(0))
    assert anchors.shape[-1] == 7
    dx = ((positives[:, 0, 0, 0] - anchors[:, 0, 0, 0]) * 255 / 8).round()
    dy = ((positives[:, 1, 0, 0] - anchors[:, 1, 0, 0]) * 255 / 8).round()
    assert ((dx != 0) | (dy != 0)).all()
    assert dx.abs().max() <= 2 and dy.abs().max() <= 2


def test_patch_triplet_transfer_protocol_and_filter_image(tiny_shapes) -> None:
    method = make_method("patch_triplet", tiny_shapes, layers=1, filters1=8, transfer_epochs=1)
    method.begin_epoch(1, 1)
    learned = method.encoder.stages[0][0].weight.detach().clone()
    frozen = method.transfer_classifier((3, 32, 32), 8, pretrained=True)
    torch.testing.assert_close(frozen[1][0].weight, learned)
    assert all(p.requires_grad for p in frozen.parameters())
    assert len([m for m in frozen.modules() if isinstance(m, torch.nn.Conv2d)]) == 2
    assert len([m for m in frozen.modules() if isinstance(m, torch.nn.Linear)]) == 2
    metrics = method.extra_evaluation(tiny_shapes, torch.device("cpu"))
    assert set(metrics) == {"transfer_random_acc", "transfer_frozen_acc", "transfer_finetune_acc"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    # The evaluation trained copies: the method's own filters are untouched.
    torch.testing.assert_close(method.encoder.stages[0][0].weight, learned)
    image = method.artifacts()["filters/layer1.png"]
    assert image.startswith(b"\x89PNG")
    # Trained on an accelerator, the classifier is built there (the meta device stands in
    # for one): its random layers and its size probe must not stay on the CPU.
    method.to("meta")
    for pretrained in (False, True):
        built = method.transfer_classifier((3, 32, 32), 8, pretrained=pretrained)
        assert {p.device.type for p in built.parameters()} == {"meta"}


def test_dim_refuses_impossible_configurations(tiny_shapes) -> None:
    with pytest.raises(ValueError, match="alpha and beta"):
        make_method("dim", tiny_shapes, alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="local_layer: got 5"):
        make_method("dim", tiny_shapes, local_layer=5)


@pytest.mark.parametrize("estimator", ["jsd", "dv", "infonce"])
def test_dim_builds_only_the_terms_in_use(tiny_shapes, estimator: str) -> None:
    local_only = make_method("dim", tiny_shapes, alpha=0.0, gamma=0.0, estimator=estimator)
    assert not hasattr(local_only, "global_map_critic")
    assert not hasattr(local_only, "discriminator")
    loss = local_only([torch.rand(6, 3, 32, 32)])
    loss.backward()
    assert all(p.grad is not None for p in local_only.parameters() if p.requires_grad)


def test_dim_prior_matching_is_a_min_max_game(tiny_shapes) -> None:
    """The discriminator descends its loss; the encoder gets the reversed gradient."""
    method = make_method("dim", tiny_shapes, alpha=0.0, beta=1e-12, gamma=1.0)
    images = torch.rand(8, 3, 32, 32)
    method([images]).backward()
    last = method.discriminator[-1].bias
    grad_disc = last.grad.clone()
    encoder_grad = method.encoder.stages[-1][0].weight.grad.clone()
    method.zero_grad()
    prior = torch.rand(8, method.values["global_dim"])
    encoded = torch.sigmoid(method.global_layer(pool(method.encoder.feature_maps(images)[-1])))
    discriminator_loss(method.discriminator(prior), method.discriminator(encoded)).backward()
    assert grad_disc.abs().sum() > 0
    # Through the reversal the encoder moves against the discriminator's objective.
    direct = method.encoder.stages[-1][0].weight.grad
    assert torch.dot(encoder_grad.flatten(), direct.flatten()) < 0


def _discriminator_inputs(method, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prior samples, sigmoid(E(x))) as Deep InfoMax's forward hands them to its
    discriminator, in that order."""
    seen: list[torch.Tensor] = []
    hook = method.discriminator.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            method([images])
    finally:
        hook.remove()
    prior, encoded = seen
    return prior, encoded


def test_dim_prior_can_be_matched_on_both_halves_of_the_unit_interval(tiny_shapes) -> None:
    """The uniform prior covers [0, 1]; sigmoid(E(x)) must be able to as well, or a
    discriminator always wins (a ReLU'd global vector has its sigmoid in [0.5, 1))."""
    method = make_method("dim", tiny_shapes, gamma=0.1)
    images = tiny_shapes.pretrain_images[:64].float() / 255
    prior, encoded = _discriminator_inputs(method, images)
    assert encoded.shape == prior.shape
    assert (encoded < 0.5).float().mean() > 0.1
    assert (encoded > 0.5).float().mean() > 0.1


def test_dim_discriminator_does_not_trivially_win_after_short_training(tiny_shapes) -> None:
    """A short training of the min-max game (the global term off, so prior matching
    weighs more) leaves the discriminator far from separating prior and encoded samples:
    its loss stays near chance (log 4) instead of falling to 0, as it does when the
    encoded samples cannot reach half of the prior's support."""
    method = make_method("dim", tiny_shapes, alpha=0.0, gamma=1.0, global_dim=8)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    policy = AugmentationPolicy.from_strength(0.5)
    images = tiny_shapes.pretrain_images
    for _ in range(60):
        batch = images[torch.randint(0, len(images), (32,), generator=generator)]
        loss = method(method.make_views(batch, policy, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior, encoded = _discriminator_inputs(method, images[:128].float() / 255)
    with torch.no_grad():
        real, fake = method.discriminator(prior), method.discriminator(encoded)
        accuracy = ((real > 0).float().mean() + (fake < 0).float().mean()) / 2
        assert discriminator_loss(real, fake) > 0.5
    assert accuracy < 0.9
