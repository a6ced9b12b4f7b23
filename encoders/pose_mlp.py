"""3D-pose encoder: an MLP over the 21 x 3 joints.

With the ``pose_mlp`` decoder it forms a pose-to-pose VAE that learns a prior over
hand poses (Spurr et al. 2018), and it lets a pose be one more modality to align.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from crossmodal.data.joints import NUM_JOINTS
from crossmodal.errors import ConfigError
from crossmodal.registry import ENCODERS
from encoders.base import Encoder


def mlp(in_features: int, hidden: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear + activation for each width in ``hidden`` (every layer ends in the activation)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), activation()]
        in_features = width
    return nn.Sequential(*layers)


@ENCODERS.register("pose_mlp")
class PoseMLPEncoder(Encoder):
    """MLP encoder of a root-relative, normalised 3D pose (B, 21, 3).

    Options:
        latent_dim: size of z.
        hidden: widths of the fully connected ReLU layers before the heads; the
            last one is ``feature_dim``. Default (128, 128, 128), mirroring the decoder.
    """

    input_key = "pose"
    input_shape = ("B", NUM_JOINTS, 3)

    def __init__(self, latent_dim: int = 64, hidden: Sequence[int] = (128, 128, 128)) -> None:
        super().__init__(latent_dim)
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ConfigError(f"{self.who()}: option hidden must be a non-empty list of positive ints, got {hidden!r}")
        self.hidden = hidden
        self.backbone = mlp(NUM_JOINTS * 3, hidden)
        self.build_heads(hidden[-1])

    def compute_features(self, x: Tensor) -> Tensor:
        return self.backbone(x.flatten(1))

    @classmethod
    def example_input(cls, batch_size: int, generator: torch.Generator | None = None, **options: object) -> Tensor:
        """Random poses (B, 21, 3) on the scale of a normalised hand (bone 12->11 has length 1)."""
        return torch.randn(batch_size, NUM_JOINTS, 3, generator=generator) * 2.0
