"""Latent maths: product of experts, KL divergences, reparameterisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence as torch_kl

from crossmodal.gaussian import DiagonalGaussian, kl_divergence, kl_standard_normal, product_of_experts, reparameterize


def test_poe_closed_form_two_experts_and_prior():
    # Experts N(2, 1) and N(-1, 0.5) with the prior N(0, 1): precision 1 + 1 + 2 = 4,
    # mean = (0*1 + 2*1 + (-1)*2) / 4 = 0.
    mu = torch.tensor([[[2.0]], [[-1.0]]])
    logvar = torch.log(torch.tensor([[[1.0]], [[0.5]]]))
    joint = product_of_experts(mu, logvar)
    assert joint.mu.item() == pytest.approx(0.0, abs=1e-6)
    assert joint.logvar.exp().item() == pytest.approx(0.25)
    # One expert N(3, 1) with the prior: precision 2, mean 1.5.
    one = product_of_experts(torch.tensor([[[3.0]]]), torch.zeros(1, 1, 1))
    assert one.mu.item() == pytest.approx(1.5)
    assert one.logvar.exp().item() == pytest.approx(0.5)


def test_poe_matches_gaussian_product_by_density_fit():
    """Independent check: the product of densities, evaluated on a grid, is Gaussian with our moments."""
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 1, 1, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 1, 1, generator=g, dtype=torch.float64) * 0.5
    grid = torch.linspace(-8, 8, 200001, dtype=torch.float64)
    log_density = Normal(0.0, 1.0).log_prob(grid)
    for e in range(3):
        log_density = log_density + Normal(mu[e, 0, 0], logvar[e, 0, 0].mul(0.5).exp()).log_prob(grid)
    density = (log_density - log_density.max()).exp()
    density = density / torch.trapezoid(density, grid)
    mean = torch.trapezoid(grid * density, grid)
    var = torch.trapezoid((grid - mean) ** 2 * density, grid)
    joint = product_of_experts(mu, logvar)
    assert joint.mu.item() == pytest.approx(mean.item(), abs=1e-6)
    assert joint.logvar.exp().item() == pytest.approx(var.item(), rel=1e-5)


def test_poe_masks_and_prior_only():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    mask = torch.tensor([[True, False, True], [True, False, False]])
    joint = product_of_experts(mu, logvar, mask)
    # Sample 0: both experts; sample 1: none -> the prior; sample 2: expert 0 alone.
    both = product_of_experts(mu[:, :1], logvar[:, :1])
    alone = product_of_experts(mu[:1, 2:], logvar[:1, 2:])
    torch.testing.assert_close(joint.mu[0:1], both.mu)
    torch.testing.assert_close(joint.mu[2:], alone.mu)
    torch.testing.assert_close(joint.logvar[2:], alone.logvar)
    assert torch.equal(joint.mu[1], torch.zeros(5)) and torch.allclose(joint.logvar[1], torch.zeros(5))


def test_poe_masked_expert_gets_no_gradient_and_no_nan():
    mu = torch.randn(2, 4, 3, requires_grad=True)
    logvar = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    joint = product_of_experts(mu, logvar, mask)
    (joint.mu.sum() + joint.logvar.sum()).backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(logvar.grad).all()
    absent = ~mask
    assert (mu.grad[absent] == 0).all() and (logvar.grad[absent] == 0).all()
    assert (mu.grad[mask].abs() > 0).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_poe_stable_in_low_precision_and_huge_precisions(dtype):
    mu = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]]], dtype=dtype)
    # Variances down to e^-40: precisions ~2e17 overflow float16 if computed naively.
    logvar = torch.tensor([[[-40.0, 0.0]], [[-40.0, 2.0]]], dtype=dtype)
    joint = product_of_experts(mu, logvar)
    assert joint.mu.dtype == dtype
    assert torch.isfinite(joint.mu.float()).all() and torch.isfinite(joint.logvar.float()).all()
    # Dimension 0: two equal precise experts -> mean of their means, variance halved.
    assert joint.mu[0, 0].float().item() == pytest.approx(2.0, rel=1e-2)
    assert joint.logvar[0, 0].float().item() == pytest.approx(-40.0 - math.log(2.0), rel=1e-2)
    reference = product_of_experts(mu.double(), logvar.double())
    torch.testing.assert_close(joint.mu.double(), reference.mu, rtol=2e-2, atol=2e-2)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    mq, lq, mp, lp = (torch.randn(6, 8, generator=g) for _ in range(4))
    q = Normal(mq, lq.mul(0.5).exp())
    p = Normal(mp, lp.mul(0.5).exp())
    torch.testing.assert_close(kl_divergence(mq, lq, mp, lp), torch_kl(q, p).sum(-1))
    prior = Normal(torch.zeros_like(mq), torch.ones_like(mq))
    torch.testing.assert_close(kl_standard_normal(mq, lq), torch_kl(q, prior).sum(-1))
    assert torch.allclose(kl_divergence(mq, lq, mq, lq), torch.zeros(6), atol=1e-6)


def test_reparameterize_train_vs_eval():
    mu, logvar = torch.full((4096, 2), 3.0), torch.full((4096, 2), math.log(4.0))
    torch.manual_seed(0)
    z = reparameterize(mu, logvar, training=True)
    assert z.mean().item() == pytest.approx(3.0, abs=0.1)
    assert z.std().item() == pytest.approx(2.0, abs=0.1)
    assert torch.equal(DiagonalGaussian(mu, logvar).sample(training=False), mu)


def test_poe_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(E, B, D\)"):
        product_of_experts(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="mask of shape"):
        product_of_experts(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(3, 2, dtype=torch.bool))
