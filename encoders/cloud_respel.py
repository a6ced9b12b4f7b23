"""Point-cloud encoder: a residual permutation-equivariant network (Yang et al. 2019).

A permutation-equivariant layer (PEL, Zaheer et al. "Deep Sets") maps per-point
features ``x`` (B, P, C_in) to ``Gamma(x) - Lambda(max_p x)``: ``Gamma`` is a linear
map applied to every point, ``Lambda`` a linear map of the max over points,
broadcast back to every point. Permuting the points permutes the output the same
way; the final max pool over points makes the global feature order-invariant.

Layout (pre-activation residual, as in He et al. 2016, "identity mappings"):

    stem:   PEL(3 -> widths[0])
    stage i (for each width): [PEL(widths[i-1] -> widths[i]) if the width changes]
            then ``blocks`` residual blocks  x + PEL(act(norm(PEL(act(norm(x))))))
    head:   act(norm(x)), max over points -> (B, widths[-1]) -> linear mu / logvar

Normalisation is LayerNorm over the channels of each point. Unlike BatchNorm it
does not mix samples, so an encoding does not depend on what else is in the batch
(weakly supervised batches mix labelled and unlabelled frames), train and eval
modes compute the same function, and it is exactly permutation-equivariant.

Widths: the default (64, 128, 256, 512) halves (128, 256, 512, 1024), the
original widths of the residual PEL network, as the paper does.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from crossmodal.errors import ConfigError
from crossmodal.registry import ENCODERS
from encoders.base import Encoder


class PermEquivariantLinear(nn.Module):
    """``Gamma(x) - Lambda(max over points of x)`` on (B, P, C_in) -> (B, P, C_out).

    Only ``Gamma`` has a bias: a bias on ``Lambda`` would merely duplicate it.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(in_channels, out_channels)
        self.lambda_ = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.amax(dim=1, keepdim=True)  # (B, 1, C_in)
        return self.gamma(x) - self.lambda_(pooled)


class ResidualPELBlock(nn.Module):
    """``x + PEL(act(norm(PEL(act(norm(x))))))`` with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.pel1 = PermEquivariantLinear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.pel2 = PermEquivariantLinear(channels, channels)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.pel1(self.act(self.norm1(x)))
        return x + self.pel2(self.act(self.norm2(h)))


@ENCODERS.register("cloud_respel")
class CloudResPELEncoder(Encoder):
    """Residual permutation-equivariant encoder over a point cloud (B, P, 3).

    Options:
        latent_dim: size of z.
        widths: channels of each stage; default (64, 128, 256, 512), half of the
            original (128, 256, 512, 1024) as in the paper.
        blocks: residual blocks per stage (depth = len(widths) * blocks residual blocks).
    """

    input_key = "cloud"
    input_shape = ("B", "P", 3)

    def __init__(self, latent_dim: int = 64, widths: Sequence[int] = (64, 128, 256, 512), blocks: int = 1) -> None:
        super().__init__(latent_dim)
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ConfigError(f"{self.who()}: option widths must be a non-empty list of positive ints, got {widths!r}")
        if blocks < 0:
            raise ConfigError(f"{self.who()}: option blocks must be >= 0, got {blocks!r}")
        self.widths, self.blocks = widths, blocks
        layers: list[nn.Module] = [PermEquivariantLinear(3, widths[0])]
        previous = widths[0]
        for width in widths:
            if width != previous:
                # A change of width has no identity skip; a plain PEL bridges it.
                layers.append(PermEquivariantLinear(previous, width))
            layers.extend(ResidualPELBlock(width) for _ in range(blocks))
            previous = width
        self.layers = nn.Sequential(*layers)
        self.final_norm = nn.LayerNorm(previous)
        self.act = nn.ReLU()
        self.build_heads(previous)

    def point_features(self, x: Tensor) -> Tensor:
        """Per-point features (B, P, feature_dim), equivariant to the order of the points."""
        self.check_input(x)
        return self._point_features(x)

    def _point_features(self, x: Tensor) -> Tensor:
        return self.act(self.final_norm(self.layers(x)))

    def compute_features(self, x: Tensor) -> Tensor:
        return self._point_features(x).amax(dim=1)

    @classmethod
    def example_input(
        cls, batch_size: int, generator: torch.Generator | None = None, num_points: int = 256, **options: object
    ) -> Tensor:
        """Random clouds (B, num_points, 3), spread like a normalised hand (a few bone lengths)."""
        return torch.randn(batch_size, num_points, 3, generator=generator) * 2.0
