"""The sanity anchor: a plain deterministic regressor, RGB -> 63 numbers, no latent noise, no KL.

    loss = L_pose(mu_x)

The RGB encoder's mean head feeds the linear ``pose_linear`` decoder, so the network is
ResNet-18 followed by two linear maps (512 -> latent_dim -> 63): a straight regression.
It is not a method of the paper; it runs beside every change of the learning study
(benchmarks/results/learning.md), so that a number of S1-S4 can be read against what the
same encoder reaches when nothing but the pose trains it.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from alignment.base import Strategy, presence
from crossmodal.registry import STRATEGIES


@STRATEGIES.register("regressor")
class PlainRegressor(Strategy):
    required_encoder_keys = ("image",)
    allowed_decoder_keys = ("pose",)
    default_encoders = ("rgb_resnet18",)
    default_decoders = ("pose_linear",)

    def losses(self, batch: Mapping[str, Tensor], beta: float) -> dict[str, Tensor]:
        q, terms = self.encode("image", batch)
        # The log-variance head stays untrained: z = mu in training as at inference.
        terms.update(self.reconstruction(q, batch, "image", presence(batch, "image"), deterministic=True))
        return self.total(terms, batch)
