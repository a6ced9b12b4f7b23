"""S3, KL latent alignment (paper Alg. 2, Eq. 3): a joint RGB+cloud encoder guides q(z|x).

    loss = L_recon(z_joint) + beta KL(q_joint || p)
         + L_recon(z_x)     + beta KL(q_x || p)
         + beta' KL(q_joint || q_x)

``q_joint = q(z | x, c)`` comes from ``JointEncoder``, which fuses the RGB backbone
(shared with q(z|x)) and the cloud backbone under its own heads. Samples without a
cloud have no joint posterior: their joint terms are masked. Inference uses q(z|x).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from alignment.base import Strategy, presence
from alignment.joint_encoder import JointEncoder
from crossmodal.gaussian import kl_divergence
from crossmodal.registry import STRATEGIES


@STRATEGIES.register("kl_align")
class KLAlignment(Strategy):
    required_encoder_keys = ("image", "cloud")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.joint = JointEncoder(
            {"image": self.encoders["image"], "cloud": self.encoders["cloud"]},
            latent_dim=self.latent_dim,
            hidden=int(cfg.joint_hidden),
        )
        self.beta_prime = float(cfg.beta_prime)

    @property
    def posterior_keys(self) -> tuple[str, ...]:
        # The cloud encoder lends only its backbone to the joint encoder; its own heads stay untrained.
        return ("image",)

    def losses(self, batch: Mapping[str, Tensor], beta: float) -> dict[str, Tensor]:
        everyone = presence(batch, "image")
        with_cloud = presence(batch, "cloud")
        q_x, aux = self.encode("image", batch)
        q_joint = self.joint({"image": batch["image"], "cloud": batch["cloud"]})
        terms = self.reconstructions([("joint", q_joint, with_cloud), ("image", q_x, everyone)], batch)
        terms.update(aux)
        terms["kl/joint"] = beta * self.kl_prior(q_joint, with_cloud)
        terms["kl/image"] = beta * self.kl_prior(q_x, everyone)
        align = kl_divergence(q_joint.mu, q_joint.logvar, q_x.mu, q_x.logvar)
        terms["kl/joint_to_image"] = self.beta_prime * (align * with_cloud).sum() / with_cloud.sum().clamp_min(1)
        return self.total(terms, batch)
