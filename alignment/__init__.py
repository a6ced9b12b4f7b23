"""Latent-space alignment: Gaussian maths (``alignment.gaussian``) and the training
strategies, one file each: crossmodal (S1, ``crossmodal_vae.py``), extended (S2),
kl_align (S3), poe (S4). ``alignment.strategies`` imports them so they register in
``crossmodal.registry.STRATEGIES``; it is kept out of this ``__init__`` because the
encoders import ``alignment.gaussian`` and the strategies import the encoders.
"""

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
