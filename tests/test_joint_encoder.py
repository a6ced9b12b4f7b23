"""The KL-alignment joint encoder: shapes, gradients into both backbones, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from alignment.joint_encoder import JointEncoder
from crossmodal.registry import ENCODERS
from encoders.base import ShapeError


def make(latent_dim: int = 16) -> JointEncoder:
    torch.manual_seed(0)
    rgb = ENCODERS.build("rgb_resnet18", latent_dim=latent_dim)
    cloud = ENCODERS.build("cloud_respel", latent_dim=latent_dim, widths=(16, 32))
    return JointEncoder({"rgb": rgb, "cloud": cloud}, latent_dim=latent_dim, hidden=32)


def inputs(batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    return {"image": torch.rand(batch, 3, 32, 32, generator=g), "cloud": torch.randn(batch, 64, 3, generator=g)}


@pytest.mark.parametrize("batch", [2, 3])
def test_shapes_backward_and_determinism(batch):
    enc = make()
    q = enc(inputs(batch))
    assert q.mu.shape == q.logvar.shape == (batch, 16)
    (q.mu.square().sum() + q.logvar.exp().sum()).backward()
    for name, p in enc.named_parameters():
        if name.endswith(("mu_head.weight", "mu_head.bias", "logvar_head.weight", "logvar_head.bias")) and name.startswith("backbones."):
            continue  # the single-modality heads are not part of the joint path
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    enc.eval()
    a, b = enc(inputs(batch)), enc(inputs(batch))
    assert torch.equal(a.mu, b.mu) and torch.equal(a.logvar, b.logvar)


def test_shared_backbone_is_one_module():
    rgb = ENCODERS.build("rgb_resnet18", latent_dim=8)
    cloud = ENCODERS.build("cloud_respel", latent_dim=8, widths=(8,))
    joint = JointEncoder({"rgb": rgb, "cloud": cloud}, latent_dim=8, hidden=8)
    holder = torch.nn.ModuleDict({"rgb": rgb, "joint": joint})
    n_params = sum(p.numel() for p in holder.parameters())
    assert n_params == sum(p.numel() for p in rgb.parameters()) + sum(
        p.numel() for n, p in joint.named_parameters() if not n.startswith("backbones.rgb.")
    )


def test_bad_inputs():
    enc = make()
    with pytest.raises(ShapeError, match=r"missing inputs \['cloud'\]"):
        enc({"image": torch.rand(2, 3, 32, 32)})
    with pytest.raises(ShapeError, match="cloud_respel encoder: expected cloud of shape"):
        enc({"image": torch.rand(2, 3, 32, 32), "cloud": torch.rand(2, 64, 2)})
    with pytest.raises(ShapeError, match="different batch sizes"):
        enc({"image": torch.rand(2, 3, 32, 32), "cloud": torch.rand(3, 64, 3)})
