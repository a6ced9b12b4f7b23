"""S1, the cross-modal VAE of Spurr et al. (paper Eq. 1): RGB -> z -> 3D pose.

    loss = L_pose(z_x) + beta * KL(q(z|x) || p(z))
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from alignment.base import Strategy, presence
from crossmodal.registry import STRATEGIES


@STRATEGIES.register("crossmodal")
class CrossModalVAE(Strategy):
    required_encoder_keys = ("image",)
    default_encoders = ("rgb_resnet18",)
    default_decoders = ("pose_mlp",)
    allowed_decoder_keys = ("pose",)

    def losses(self, batch: Mapping[str, Tensor], beta: float) -> dict[str, Tensor]:
        q = self.encode("image", batch)
        everyone = presence(batch, "image")
        terms = self.reconstruction(q, batch, "image", everyone)
        terms["kl/image"] = beta * self.kl_prior(q, everyone)
        return self.total(terms)
