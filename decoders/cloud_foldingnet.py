"""Point-cloud decoder: FoldingNet (Yang et al. CVPR 2018) folding a 2D grid into 3D.

A fixed grid of ``grid_size**2`` points, uniform in [-grid_extent, grid_extent]^2,
is concatenated with the latent code copied to every point (computed as the sum of a
per-sample and a per-point product, which is the same first layer). A first folding MLP
(per point: code + 2 grid coordinates -> 512 -> 512 -> 3) bends the grid into 3D;
a second one (code + the first fold's 3 coordinates -> 512 -> 512 -> 3) refines it.
Hidden layers use ReLU; the 3D outputs are linear.

Loss (paper Eq. 8-9), per sample: Chamfer distance (mean nearest-neighbour
Euclidean distance, both ways) + EMD (mean distance under the optimal bijection),
from ``crossmodal.ops``. EMD needs a bijection, so the target cloud must have
exactly as many points as the decoder outputs (``grid_size**2``, 256 by default,
the paper's ``num_points``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossmodal.errors import ConfigError
from crossmodal.ops import chamfer_distance, emd
from crossmodal.registry import DECODERS
from decoders.base import Decoder, ShapeError


def folding_mlp(in_features: int, hidden: Sequence[int]) -> nn.Sequential:
    """Per-point MLP ``in_features -> hidden... -> 3``, ReLU between layers, linear output."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    layers.append(nn.Linear(in_features, 3))
    return nn.Sequential(*layers)


def square_grid(grid_size: int, extent: float) -> Tensor:
    """(grid_size**2, 2) points on a regular grid covering [-extent, extent]^2, row-major."""
    axis = torch.linspace(-extent, extent, grid_size)
    v, u = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)


@DECODERS.register("cloud_foldingnet")
class CloudFoldingNetDecoder(Decoder):
    """FoldingNet decoder z -> cloud (B, grid_size**2, 3).

    Options:
        latent_dim: size of z.
        grid_size: side of the 2D grid; the decoder outputs grid_size**2 points
            (16 -> 256, the paper's point count).
        grid_extent: the grid spans [-grid_extent, grid_extent]^2 (0.3 as in FoldingNet).
        hidden: hidden widths of each folding MLP (default (512, 512)).
    """

    target_key = "cloud"

    def __init__(
        self, latent_dim: int = 64, grid_size: int = 16, grid_extent: float = 0.3, hidden: Sequence[int] = (512, 512)
    ) -> None:
        super().__init__(latent_dim)
        hidden = tuple(int(h) for h in hidden)
        if grid_size < 2:
            raise ConfigError(f"{self.who()}: option grid_size must be >= 2, got {grid_size!r}")
        if not grid_extent > 0:
            raise ConfigError(f"{self.who()}: option grid_extent must be > 0, got {grid_extent!r}")
        if min(hidden, default=1) < 1:
            raise ConfigError(f"{self.who()}: option hidden must hold positive ints, got {hidden!r}")
        self.grid_size, self.grid_extent, self.hidden = grid_size, float(grid_extent), hidden
        self.num_points = grid_size * grid_size
        self.output_shape = (self.num_points, 3)
        # A buffer: moves with .to(device) and is saved, but is never trained.
        self.register_buffer("grid", square_grid(grid_size, self.grid_extent))
        self.fold1 = folding_mlp(latent_dim + 2, hidden)
        self.fold2 = folding_mlp(latent_dim + 3, hidden)

    def decode(self, z: Tensor) -> Tensor:
        # The first layer of each fold sees [code, point]; its code half is the same for every
        # point of a sample, so it is computed once per sample and broadcast, not once per point
        # (the same arithmetic as concatenating, for a fraction of the first layer's cost).
        code = z.unsqueeze(1)  # (B, 1, D)
        grid = self.grid.to(z.dtype)  # (P, 2)
        folded = self._fold(self.fold1, code, grid)
        return self._fold(self.fold2, code, folded)

    def _fold(self, mlp: nn.Sequential, code: Tensor, points: Tensor) -> Tensor:
        first = mlp[0]
        w_code, w_point = first.weight[:, : self.latent_dim], first.weight[:, self.latent_dim :]
        hidden = F.linear(code, w_code, first.bias) + F.linear(points, w_point)  # (B, P, hidden)
        return mlp[1:](hidden)

    def check_target(self, target: Tensor, what: str = "target") -> None:
        """As ``Decoder.check_target``; the message adds why the point counts must agree."""
        try:
            super().check_target(target, what)
        except ShapeError as exc:
            raise ShapeError(f"{exc} (EMD pairs the {self.num_points} predicted points one to one with the target's)") from None

    def per_sample_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Eq. 8 + Eq. 9: Chamfer distance + EMD of each sample, (B,)."""
        return chamfer_distance(pred, target, reduction="none") + emd(pred, target, reduction="none")

    @classmethod
    def example_target(
        cls, batch_size: int, generator: torch.Generator | None = None, grid_size: int = 16, **options: object
    ) -> Tensor:
        """Random clouds (B, grid_size**2, 3): curved sheets, randomly rotated.

        A depth cloud samples the visible surface of the hand, a bent 2D sheet a few
        bone lengths across (the cloud's unit); the example has that character.
        """
        n = grid_size * grid_size
        uv = (torch.rand(batch_size, n, 2, generator=generator) * 2 - 1) * 2.0
        bend = torch.randn(batch_size, 1, 3, generator=generator) * 0.3
        height = bend[..., 0] * uv[..., 0] ** 2 + bend[..., 1] * uv[..., 1] ** 2 + bend[..., 2] * uv[..., 0] * uv[..., 1]
        sheet = torch.cat([uv, height.unsqueeze(-1)], dim=-1)
        rotation = torch.linalg.qr(torch.randn(batch_size, 3, 3, generator=generator)).Q
        return sheet @ rotation.transpose(1, 2)
