"""Diagonal Gaussian latent maths: KL divergences, sampling, product of experts.

Every encoder outputs q(z|.) = N(mu, diag(exp(logvar))); the prior is N(0, I).
All functions compute in float32 whatever the input dtype (they run inside
fp16/bf16 autocast regions) and return the input dtype.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class DiagonalGaussian(NamedTuple):
    mu: Tensor  # (B, D)
    logvar: Tensor  # (B, D), log of the variance

    def sample(self, training: bool = True) -> Tensor:
        return reparameterize(self.mu, self.logvar, training)


def reparameterize(mu: Tensor, logvar: Tensor, training: bool = True) -> Tensor:
    """z = mu + sigma * eps while training; the mean in eval mode (deterministic inference)."""
    if not training:
        return mu
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions: (B,)."""
    mu32, logvar32 = mu.float(), logvar.float()
    kl = 0.5 * (torch.exp(logvar32) + mu32.square() - 1.0 - logvar32).sum(dim=-1)
    return kl.to(mu.dtype)


def kl_divergence(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(q || p) between diagonal Gaussians, summed over latent dimensions: (B,)."""
    mq, lq, mp, lp = mu_q.float(), logvar_q.float(), mu_p.float(), logvar_p.float()
    kl = 0.5 * (lp - lq + (torch.exp(lq) + (mq - mp).square()) * torch.exp(-lp) - 1.0).sum(dim=-1)
    return kl.to(mu_q.dtype)


def product_of_experts(mu: Tensor, logvar: Tensor, mask: Optional[Tensor] = None) -> DiagonalGaussian:
    """Product of E Gaussian experts and the N(0, I) prior expert (counted exactly once).

    ``mu``, ``logvar``: (E, B, D); ``mask``: (E, B) bool, True where expert e is present for
    sample b (None: all present). Precisions add, ``1/var = 1 + sum_e 1/var_e``, and
    ``mu = var * sum_e mu_e / var_e``. A sample with no expert gets the prior.

    Computed in log space for stability: ``logvar = -logsumexp(-logvar_e)`` over the prior
    (logvar 0) and the present experts, and the mean is a softmax-weighted sum of the experts'
    means (weights ``precision_e / total precision``), so huge precisions neither overflow nor
    lose the smaller experts, in float16/bfloat16 autocast too.
    """
    if mu.shape != logvar.shape or mu.dim() != 3:
        raise ValueError(f"product_of_experts: expected mu and logvar of equal shape (E, B, D), got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    experts, batch, dim = mu.shape
    dtype = mu.dtype
    mu32, logvar32 = mu.float(), logvar.float()
    neg_logvar = -logvar32
    if mask is not None:
        if mask.shape != (experts, batch):
            raise ValueError(f"product_of_experts: expected mask of shape (E, B) = {(experts, batch)}, got {tuple(mask.shape)}")
        present = mask.to(torch.bool).unsqueeze(-1)
        # -inf log-precision removes an expert; where() (not multiplication) keeps its
        # gradient exactly zero and never produces inf * 0.
        neg_logvar = torch.where(present, neg_logvar, torch.full_like(neg_logvar, float("-inf")))
        mu32 = torch.where(present, mu32, torch.zeros_like(mu32))
    prior = torch.zeros((1, batch, dim), dtype=torch.float32, device=mu.device)  # log-precision of N(0, I)
    log_precisions = torch.cat([prior, neg_logvar], dim=0)  # (E + 1, B, D)
    joint_logvar = -torch.logsumexp(log_precisions, dim=0)
    weights = torch.softmax(log_precisions, dim=0)[1:]  # the prior's mean is 0: drop its weight
    joint_mu = (weights * mu32).sum(dim=0)
    return DiagonalGaussian(joint_mu.to(dtype), joint_logvar.to(dtype))
