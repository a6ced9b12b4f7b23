"""S4, product of Gaussian experts (paper Alg. 3, Eq. 4).

    q_joint = PoE(p, q_1, ..., q_N)      (the prior expert once; absent experts masked)
    loss = sum over s in {1..N, joint} of L_recon(z_s) + beta * sum_i KL(q_i || p)

Any set of registered encoders works (RGB and cloud in the paper; a pose encoder
adds a labelled-only expert). Each sample uses the experts whose input it has, so
unlabelled or cloud-less samples still train everything they can. Inference uses
the RGB expert alone.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from alignment.base import Strategy, presence
from crossmodal.gaussian import product_of_experts
from crossmodal.registry import STRATEGIES


@STRATEGIES.register("poe")
class ProductOfExperts(Strategy):
    def losses(self, batch: Mapping[str, Tensor], beta: float) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        sources = []
        for key in self.encoders:
            mask = presence(batch, key)
            q, aux = self.encode(key, batch)
            terms.update(aux)
            terms[f"kl/{key}"] = beta * self.kl_prior(q, mask)
            sources.append((key, q, mask))
        joint = product_of_experts(
            torch.stack([q.mu for _, q, _ in sources]),
            torch.stack([q.logvar for _, q, _ in sources]),
            torch.stack([mask for _, _, mask in sources]),
        )
        sources.append(("joint", joint, presence(batch, "image")))
        terms.update(self.reconstructions(sources, batch))
        return self.total(terms, batch)
