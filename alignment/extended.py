"""S2, extended cross-modal training (paper Alg. 1): RGB -> z -> pose and auxiliary modalities.

    loss = L_recon(z_x) + beta * KL(q(z|x) || p(z))

L_recon uses every configured decoder (pose plus heatmaps and/or cloud: the H+P, C+P
and C+H+P rows of Table 1), so the auxiliary decoders shape the RGB latent space.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from alignment.base import Strategy, presence
from crossmodal.registry import STRATEGIES


@STRATEGIES.register("extended")
class ExtendedCrossModal(Strategy):
    required_encoder_keys = ("image",)
    default_encoders = ("rgb_resnet18",)

    def losses(self, batch: Mapping[str, Tensor], beta: float) -> dict[str, Tensor]:
        q, terms = self.encode("image", batch)
        everyone = presence(batch, "image")
        terms.update(self.reconstruction(q, batch, "image", everyone))
        terms["kl/image"] = beta * self.kl_prior(q, everyone)
        return self.total(terms, batch)
