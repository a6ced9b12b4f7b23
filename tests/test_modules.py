"""Every registered encoder and decoder, walked through the same contract.

The parameter lists are read from the registries at collection time, so a module
added in one file is tested here without editing this file. ``SMALL`` only shrinks
known modules for the overfit test (unknown modules run it at their defaults).
"""

from __future__ import annotations

import math

import pytest
import torch

from crossmodal.gaussian import DiagonalGaussian
from crossmodal.errors import ConfigError
from crossmodal.registry import DECODERS, ENCODERS
from decoders.base import Decoder
from encoders.base import Encoder, ShapeError, format_pattern

ENCODER_NAMES = ENCODERS.names()
DECODER_NAMES = DECODERS.names()

# Small (constructor options, example options) per module, for the overfit test.
SMALL: dict[tuple[str, str], tuple[dict, dict]] = {
    ("encoder", "rgb_resnet18"): ({}, {"image_size": 32}),
    ("encoder", "cloud_respel"): ({"widths": (32, 64)}, {"num_points": 64}),
    ("decoder", "heatmap_dcgan"): ({"channels": (64, 32, 16)}, {"channels": (64, 32, 16)}),  # 32 px maps
    ("decoder", "cloud_foldingnet"): ({"grid_size": 8, "hidden": (128, 128)}, {"grid_size": 8}),
}
# Adam steps of the overfit test. FoldingNet first sits on a plateau (all points near the
# cloud's centre) that it leaves after ~60-100 steps at this learning rate.
OVERFIT_STEPS: dict[tuple[str, str], int] = {("decoder", "cloud_foldingnet"): 150, ("encoder", "rgb_resnet18"): 20}
# Smaller inputs than the examples' defaults for the default-sized modules (test speed).
EXAMPLE: dict[tuple[str, str], dict] = {
    ("encoder", "rgb_resnet18"): {"image_size": 32},
    ("encoder", "cloud_respel"): {"num_points": 64},
}


pytestmark = pytest.mark.usefixtures("single_thread")


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def encoder_input(name: str, batch: int, seed: int = 0, **options) -> torch.Tensor:
    options = {**EXAMPLE.get(("encoder", name), {}), **options}
    return ENCODERS.get(name).example_input(batch, generator(seed), **options)


def build(kind: str, name: str, small: bool = False, **options):
    registry = ENCODERS if kind == "encoder" else DECODERS
    extra = SMALL.get((kind, name), ({}, {}))[0] if small else {}
    torch.manual_seed(0)
    return registry.build(name, **{**extra, **options})


def assert_every_parameter_trained(module: torch.nn.Module) -> None:
    assert any(True for _ in module.parameters()), "module has no parameters"
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{pname}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname}: zero gradient"


# ---------------------------------------------------------------- registry


def test_registries_hold_the_design_modules():
    assert {"rgb_resnet18", "cloud_respel", "pose_mlp"} <= set(ENCODER_NAMES)
    assert {"pose_mlp", "heatmap_dcgan", "cloud_foldingnet"} <= set(DECODER_NAMES)
    for name in ENCODER_NAMES:
        assert issubclass(ENCODERS.get(name), Encoder) and ENCODERS.get(name).registry_name == name
    for name in DECODER_NAMES:
        assert issubclass(DECODERS.get(name), Decoder) and DECODERS.get(name).registry_name == name


@pytest.mark.parametrize("registry", [ENCODERS, DECODERS], ids=["encoder", "decoder"])
def test_unknown_module_name_lists_registered_ones(registry):
    with pytest.raises(ConfigError) as info:
        registry.get("no_such_module", key="model.module")
    message = str(info.value)
    assert "\n" not in message and "'no_such_module'" in message and message.startswith("model.module: ")
    assert message.endswith(", ".join(registry.names()))


# ---------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_output_shapes(name):
    encoder = build("encoder", name)
    assert encoder.input_key in ("image", "cloud", "pose")
    for batch in (2, 3):
        x = encoder_input(name, batch)
        q = encoder(x)
        assert isinstance(q, DiagonalGaussian)
        assert q.mu.shape == (batch, 64) and q.logvar.shape == (batch, 64)
        assert encoder.features(x).shape == (batch, encoder.feature_dim)
    small_latent = build("encoder", name, latent_dim=16)
    assert small_latent(encoder_input(name, 2)).mu.shape == (2, 16)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_backward_reaches_every_parameter(name):
    encoder = build("encoder", name).train()
    q = encoder(encoder_input(name, 2))
    # Random weights on the outputs so that no parameter's gradient cancels by symmetry.
    w_mu, w_logvar = torch.randn(q.mu.shape, generator=generator(1)), torch.randn(q.mu.shape, generator=generator(2))
    ((q.mu * w_mu).sum() + (q.logvar * w_logvar).sum()).backward()
    assert_every_parameter_trained(encoder)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_eval_mode_is_deterministic(name):
    encoder = build("encoder", name)
    x = encoder_input(name, 3)
    encoder.train()(x)  # move BatchNorm statistics away from their initial values first
    encoder.eval()
    with torch.no_grad():
        first, second = encoder(x), encoder(x)
    assert torch.equal(first.mu, second.mu) and torch.equal(first.logvar, second.logvar)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_overfits_four_samples(name):
    _, example_options = SMALL.get(("encoder", name), ({}, {}))
    encoder = build("encoder", name, small=True).train()
    x = ENCODERS.get(name).example_input(4, generator(3), **example_options)
    target = torch.randn(4, encoder.latent_dim, generator=generator(4))
    optimiser = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(OVERFIT_STEPS.get(("encoder", name), 40)):
        optimiser.zero_grad()
        loss = (encoder(x).mu - target).square().mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_rejects_wrong_input_shapes(name):
    encoder = build("encoder", name)
    x = encoder_input(name, 2)
    expected = format_pattern(encoder.input_shape)
    bad_inputs = [x[..., None], x.flatten(1), x.to(torch.int64)]
    for axis, size in enumerate(encoder.input_shape):
        if isinstance(size, int):  # the fixed sizes: channels, joints, coordinates
            shape = list(x.shape)
            shape[axis] = size - 1
            bad_inputs.append(torch.zeros(shape))
    for bad in bad_inputs:
        for call in (encoder, encoder.features):
            with pytest.raises(ShapeError) as info:
                call(bad)
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"{name} encoder: expected ") and expected in message
    with pytest.raises(ShapeError, match=f"^{name} encoder: expected {encoder.input_key} as a tensor"):
        encoder(x.tolist())


def test_shape_error_messages_read_as_documented():
    cases = [
        ("rgb_resnet18", torch.zeros(2, 1, 64, 64), "expected image of shape (B, 3, H, W), got (2, 1, 64, 64)"),
        ("cloud_respel", torch.zeros(2, 100, 2), "expected cloud of shape (B, P, 3), got (2, 100, 2)"),
        ("pose_mlp", torch.zeros(2, 20, 3), "expected pose of shape (B, 21, 3), got (2, 20, 3)"),
    ]
    for name, bad, text in cases:
        with pytest.raises(ShapeError) as info:
            ENCODERS.build(name)(bad)
        assert str(info.value) == f"{name} encoder: {text}"
    with pytest.raises(ShapeError) as info:
        DECODERS.build("pose_mlp")(torch.zeros(2, 32))
    assert str(info.value) == "pose_mlp decoder: expected latent z of shape (B, 64), got (2, 32)"


def test_soft_argmax_equals_its_naive_twin():
    from encoders.keypoints import soft_argmax

    maps = torch.randn(2, 21, 16, 16, generator=generator(12)) * 3
    uv = soft_argmax(maps, crop_size=64)
    # Naive twin: expectation of every cell centre under the softmax, cell by cell.
    prob = maps.flatten(2).softmax(-1).view(2, 21, 16, 16)
    naive = torch.zeros(2, 21, 2)
    for row in range(16):
        for col in range(16):
            centre = torch.tensor([(col + 0.5) * 4 - 0.5, (row + 0.5) * 4 - 0.5])
            naive += prob[:, :, row, col, None] * centre
    torch.testing.assert_close(uv, naive)
    peaked = torch.zeros(1, 1, 16, 16)
    peaked[0, 0, 2, 5] = 100.0
    assert soft_argmax(peaked, 64)[0, 0].tolist() == pytest.approx([5.5 * 4 - 0.5, 2.5 * 4 - 0.5])


def test_keypoint_fit_equals_its_naive_twin():
    from encoders.keypoints import keypoint_fit

    maps = torch.randn(3, 21, 8, 8, generator=generator(13)) * 2
    # Naive twin: each map's softmax by hand, its largest cell, then the mean over the joints.
    naive = torch.zeros(3)
    for b in range(3):
        peaks = []
        for j in range(21):
            e = maps[b, j].exp()
            peaks.append(float((e / e.sum()).max()))
        naive[b] = sum(peaks) / 21
    torch.testing.assert_close(keypoint_fit(maps), naive)
    # A map with one sharp peak fits better than a flat one; a flat map fits 1 / cells.
    sharp, flat = torch.zeros(1, 21, 8, 8), torch.zeros(1, 21, 8, 8)
    sharp[..., 3, 4] = 20.0
    assert keypoint_fit(sharp) > 0.99 and keypoint_fit(flat).item() == pytest.approx(1 / 64)


def test_rgb_features_and_keypoint_maps_come_from_one_pass():
    encoder = ENCODERS.build("rgb_resnet18", keypoints=True).eval()
    images = encoder_input("rgb_resnet18", 2)
    with torch.no_grad():
        features, logits = encoder.features_and_keypoint_maps(images)
        torch.testing.assert_close(features, encoder.features(images))
        torch.testing.assert_close(logits, encoder.keypoint_maps(images))
    assert ENCODERS.build("rgb_resnet18").eval().features_and_keypoint_maps(images)[1] is None


def test_rgb_keypoints_option_adds_a_trained_2d_term():
    encoder = ENCODERS.build("rgb_resnet18", keypoints=True).train()
    images = encoder_input("rgb_resnet18", 3)
    batch = {"image": images, "uv": torch.rand(3, 21, 2, generator=generator(3)) * 32}
    labeled = torch.tensor([True, False, True])
    q, aux = encoder.encode(batch, labeled)
    assert q.mu.shape == (3, 64) and set(aux) == {"keypoints2d"} and aux["keypoints2d"] > 0
    (aux["keypoints2d"] + q.mu.sum() + q.logvar.sum()).backward()
    assert_every_parameter_trained(encoder)
    # Inference is unchanged in form: forward gives q alone, from the image alone.
    assert encoder.eval()(images).mu.shape == (3, 64)
    # Without labels the term is a zero in the graph; without the option there is no term.
    assert encoder.encode(batch, torch.zeros(3, dtype=torch.bool))[1]["keypoints2d"] == 0
    assert ENCODERS.build("rgb_resnet18").encode(batch, labeled)[1] == {}


def test_cloud_respel_is_permutation_invariant_and_equivariant():
    encoder = build("encoder", "cloud_respel", widths=(32, 64)).eval()
    cloud = encoder_input("cloud_respel", 2, num_points=50)
    order = torch.randperm(50, generator=generator(5))
    shuffled = cloud[:, order]
    with torch.no_grad():
        q, q_shuffled = encoder(cloud), encoder(shuffled)
        per_point, per_point_shuffled = encoder.point_features(cloud), encoder.point_features(shuffled)
    torch.testing.assert_close(q_shuffled.mu, q.mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q_shuffled.logvar, q.logvar, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_point_shuffled, per_point[:, order], rtol=1e-5, atol=1e-5)
    # Not trivially invariant: a different cloud gives a different code.
    assert not torch.allclose(encoder(cloud + 0.5).mu, q.mu)


def test_cloud_respel_default_widths_are_half_the_original():
    encoder = ENCODERS.build("cloud_respel")
    assert encoder.widths == tuple(w // 2 for w in (128, 256, 512, 1024)) and encoder.feature_dim == 512
    with pytest.raises(ConfigError, match="^cloud_respel encoder: option widths"):
        ENCODERS.build("cloud_respel", widths=())


# ---------------------------------------------------------------- decoders


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_decoder_output_shapes(name):
    decoder = build("decoder", name)
    cls = DECODERS.get(name)
    assert decoder.target_key in ("pose", "heatmaps", "cloud")
    for batch in (2, 3):
        pred = decoder(torch.randn(batch, 64, generator=generator(batch)))
        target = cls.example_target(batch, generator(batch))
        assert pred.shape == (batch, *decoder.output_shape) == target.shape
        assert decoder.per_sample_loss(pred, target).shape == (batch,)
        assert decoder.loss(pred, target).shape == ()
    assert build("decoder", name, latent_dim=16)(torch.randn(2, 16)).shape == (2, *decoder.output_shape)


def test_decoder_shapes_follow_the_design():
    assert DECODERS.build("pose_mlp").output_shape == (21, 3)
    assert DECODERS.build("heatmap_dcgan").output_shape == (21, 64, 64)
    folding = DECODERS.build("cloud_foldingnet")
    assert folding.output_shape == (256, 3) and folding.grid.shape == (256, 2)
    assert folding.grid.min() == -0.3 and folding.grid.max() == 0.3 and "grid" not in dict(folding.named_parameters())
    assert DECODERS.build("cloud_foldingnet", grid_size=8).output_shape == (64, 3)
    # "4 fully connected layers of 128": four hidden Linear layers of 128, then Linear to 63.
    linears = [m for m in DECODERS.build("pose_mlp").modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 128), (128, 128), (128, 128), (128, 63)]


def test_foldingnet_equals_its_naive_twin():
    """The per-sample code term (computed once, broadcast) is the paper's concatenation."""
    decoder = DECODERS.build("cloud_foldingnet", hidden=(32, 32))
    z = torch.randn(3, 64, generator=generator(11))
    code = z.unsqueeze(1).expand(3, decoder.num_points, 64)
    grid = decoder.grid.unsqueeze(0).expand(3, -1, -1)
    folded = decoder.fold1(torch.cat([code, grid], dim=-1))
    naive = decoder.fold2(torch.cat([code, folded], dim=-1))
    torch.testing.assert_close(decoder(z), naive)


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_decoder_backward_reaches_every_parameter(name):
    decoder = build("decoder", name).train()
    pred = decoder(torch.randn(2, 64, generator=generator(6)))
    decoder.loss(pred, DECODERS.get(name).example_target(2, generator(7))).backward()
    assert_every_parameter_trained(decoder)


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_decoder_eval_mode_is_deterministic(name):
    decoder = build("decoder", name)
    z = torch.randn(3, 64, generator=generator(8))
    decoder.train()(z)
    decoder.eval()
    with torch.no_grad():
        assert torch.equal(decoder(z), decoder(z))


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_decoder_overfits_four_samples(name):
    _, example_options = SMALL.get(("decoder", name), ({}, {}))
    decoder = build("decoder", name, small=True).train()
    z = torch.randn(4, decoder.latent_dim, generator=generator(9))
    target = DECODERS.get(name).example_target(4, generator(10), **example_options)
    # Predicting all zeros (empty heatmaps, a collapsed cloud) must be beaten too, so that
    # merely shrinking a large initial output does not pass.
    zero_loss = decoder.per_sample_loss(torch.zeros_like(target), target).mean().item()
    optimiser = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(OVERFIT_STEPS.get(("decoder", name), 80)):
        optimiser.zero_grad()
        loss = decoder.loss(decoder(z), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    bound = 0.6 * min(losses[0], zero_loss)
    assert losses[-1] < bound, f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, all-zero prediction {zero_loss:.4f}"


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_decoder_rejects_wrong_shapes(name):
    decoder = build("decoder", name)
    pred = decoder(torch.randn(2, 64))
    target = DECODERS.get(name).example_target(2, generator(11))
    for bad_z in (torch.randn(2, 65), torch.randn(2), torch.randn(2, 64, 1), torch.zeros(2, 64, dtype=torch.long)):
        with pytest.raises(ShapeError, match=rf"^{name} decoder: expected .*latent z of shape \(B, 64\)"):
            decoder(bad_z)
    expected = format_pattern(("B", *decoder.output_shape))
    for bad_target in (target[:, :-1], target[..., None], target.flatten(1)):
        with pytest.raises(ShapeError) as info:
            decoder.loss(pred, bad_target)
        assert str(info.value).startswith(f"{name} decoder: expected target") and expected in str(info.value)
    with pytest.raises(ShapeError, match="batch sizes differ"):
        decoder.loss(pred, target[:1])
    for bad_mask in (torch.ones(3, dtype=torch.bool), torch.ones(2), [True, False]):
        with pytest.raises(ShapeError, match=rf"^{name} decoder: expected mask as a bool tensor of shape \(2,\)"):
            decoder.loss(pred, target, bad_mask)


@pytest.mark.parametrize("name", DECODER_NAMES)
def test_masked_loss_ignores_masked_samples(name):
    decoder = build("decoder", name).eval()  # eval: BatchNorm would couple the samples
    z = torch.randn(3, 64, generator=generator(12))
    target = DECODERS.get(name).example_target(3, generator(13))
    target[1] = float("nan")  # an unlabelled sample's target may be anything
    pred = decoder(z).detach().requires_grad_(True)
    mask = torch.tensor([True, False, True])
    loss = decoder.loss(pred, target, mask)
    loss.backward()
    per_sample = decoder.per_sample_loss(pred.detach()[[0, 2]], target[[0, 2]])
    torch.testing.assert_close(loss.detach(), per_sample.mean())
    assert torch.isfinite(pred.grad).all()
    assert torch.count_nonzero(pred.grad[1]) == 0
    assert torch.count_nonzero(pred.grad[0]) > 0 and torch.count_nonzero(pred.grad[2]) > 0

    # All masked: exactly 0, attached to the graph, no NaN, no gradient anywhere.
    decoder.zero_grad()
    out = decoder(z)
    loss = decoder.loss(out, target, torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for pname, p in decoder.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, pname


def test_reconstruction_losses_match_the_paper_equations():
    pose = DECODERS.build("pose_mlp")
    y = torch.randn(2, 21, 3, generator=generator(14))
    y_hat = torch.randn(2, 21, 3, generator=generator(15))
    expected = torch.stack([sum(((y_hat[b, j] - y[b, j]) ** 2).sum() for j in range(21)) for b in range(2)])
    torch.testing.assert_close(pose.per_sample_loss(y_hat, y), expected)  # Eq. 10, squared L2 summed

    heat = DECODERS.build("heatmap_dcgan", channels=(8, 8, 8, 8))
    h = torch.rand(2, 21, 64, 64, generator=generator(16))
    h_hat = torch.rand(2, 21, 64, 64, generator=generator(17))
    expected = torch.stack([sum(torch.linalg.norm(h_hat[b, j] - h[b, j]) ** 2 for j in range(21)) for b in range(2)])
    torch.testing.assert_close(heat.per_sample_loss(h_hat, h), expected)  # Eq. 7

    cloud = DECODERS.build("cloud_foldingnet", grid_size=2, hidden=(8,))
    a = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    shift = torch.tensor([0.0, 0.0, 0.5])
    # Shifting a cloud by 0.5 along z: every nearest neighbour and the optimal matching are
    # the translated copies (distance 0.5), so Chamfer = 0.5 + 0.5 and EMD = 0.5.
    assert math.isclose(cloud.per_sample_loss(a + shift, a).item(), 1.5, rel_tol=1e-5)
