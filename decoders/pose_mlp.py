"""3D-pose decoder: fully connected layers from z to 21 x 3 joints (Spurr et al. 2018).

"4 fully connected layers of 128 units" is implemented as four hidden layers,
each Linear + ReLU with 128 units, followed by a linear output layer to 63 values
(no activation: coordinates are signed)::

    z (latent_dim) -> 128 -> 128 -> 128 -> 128 -> 63 -> reshape (21, 3)

Loss (paper Eq. 10), per sample: the squared Euclidean error summed over all
joints and the three coordinates, ``sum_j sum_c (y_hat_jc - y_jc)^2``, averaged
over the labelled samples of the batch by ``Decoder.loss``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from crossmodal.data.joints import NUM_JOINTS
from crossmodal.errors import ConfigError
from crossmodal.registry import DECODERS
from decoders.base import Decoder
from encoders.pose_mlp import mlp


@DECODERS.register("pose_mlp")
class PoseMLPDecoder(Decoder):
    """MLP decoder of a root-relative, normalised 3D pose (B, 21, 3).

    Options:
        latent_dim: size of z.
        hidden: widths of the hidden Linear + ReLU layers; default four of 128.
    """

    target_key = "pose"

    def __init__(self, latent_dim: int = 64, hidden: Sequence[int] = (128, 128, 128, 128)) -> None:
        super().__init__(latent_dim)
        hidden = tuple(int(h) for h in hidden)
        if min(hidden, default=1) < 1:
            raise ConfigError(f"{self.who()}: option hidden must hold positive ints, got {hidden!r}")
        self.hidden = hidden
        self.output_shape = (NUM_JOINTS, 3)
        self.body = mlp(latent_dim, hidden)
        self.out = nn.Linear(hidden[-1] if hidden else latent_dim, NUM_JOINTS * 3)

    def decode(self, z: Tensor) -> Tensor:
        return self.out(self.body(z)).view(-1, NUM_JOINTS, 3)

    def per_sample_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Eq. 10: squared error summed over joints and coordinates, (B,)."""
        return (pred.float() - target.float()).square().flatten(1).sum(dim=1)

    @classmethod
    def example_target(cls, batch_size: int, generator: torch.Generator | None = None, **options: object) -> Tensor:
        """Random poses (B, 21, 3) on the scale of a normalised hand."""
        return torch.randn(batch_size, NUM_JOINTS, 3, generator=generator) * 2.0


@DECODERS.register("pose_linear")
class PoseLinearDecoder(PoseMLPDecoder):
    """One linear map z -> 21 x 3 (``pose_mlp`` with no hidden layer): the plain regressor's head.

    Options:
        latent_dim: size of z.
        hidden: as ``pose_mlp``; empty by default.
    """

    def __init__(self, latent_dim: int = 64, hidden: Sequence[int] = ()) -> None:
        super().__init__(latent_dim, hidden)
