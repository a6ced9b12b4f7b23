"""Latent-space alignment: Gaussian maths and the training strategies (one file each)."""

from alignment.gaussian import (
    DiagonalGaussian,
    kl_divergence,
    kl_standard_normal,
    product_of_experts,
    reparameterize,
)

__all__ = [
    "DiagonalGaussian",
    "kl_divergence",
    "kl_standard_normal",
    "product_of_experts",
    "reparameterize",
]
