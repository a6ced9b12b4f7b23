"""S1, the cross-modal VAE of Spurr et al. (paper Eq. 1): RGB -> z -> 3D pose.

    loss = L_pose(z_x) + beta * KL(q(z|x) || p(z))

It is S2 (``extended``) restricted to the pose decoder, so it shares S2's loss and only
narrows what may be configured: asking S1 for a heatmap or cloud decoder is an error.
"""

from __future__ import annotations

from alignment.extended import ExtendedCrossModal
from crossmodal.registry import STRATEGIES


@STRATEGIES.register("crossmodal")
class CrossModalVAE(ExtendedCrossModal):
    allowed_decoder_keys = ("pose",)
    default_decoders = ("pose_mlp",)
