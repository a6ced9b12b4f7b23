"""Equivariant contrastive learning in the manner of PeCLR (Spurr et al., ICCV 2021).

Two views of each image differ by a random rotation and translation of the crop. A projection
head maps each view to ``k`` 2D points; undoing the view's own rotation and translation on them
brings both views' points to the image's frame, where the NT-Xent loss (Chen et al. 2020) pulls
the two together and pushes them from every other image's. The embedding thus learns to move
with the hand, as a pose would, instead of ignoring where it is.

Conventions: crops live in normalised coordinates [-1, 1]^2 (``affine_grid``'s); a view maps a
point x of the image to ``R x + t``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_transforms(batch: int, max_degrees: float, max_shift: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(B, 2, 2) rotations uniform in +-``max_degrees`` and (B, 2) shifts uniform in +-``max_shift``."""
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(max_degrees)
    c, s = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * max_shift
    return rotation.to(device), shift.to(device)


def warp(images: Tensor, rotation: Tensor, shift: Tensor) -> Tensor:
    """The views: each image moved by x -> R x + t (sampled bilinearly, zeros outside)."""
    inverse = rotation.transpose(1, 2)  # the grid asks, for each view point y, for R^T (y - t)
    theta = torch.cat([inverse, -(inverse @ shift[..., None])], dim=2)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def to_image_frame(points: Tensor, rotation: Tensor, shift: Tensor) -> Tensor:
    """(B, k, 2) points of a view -> the image's frame: R^T (p - t)."""
    return (points - shift[:, None, :]) @ rotation


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """NT-Xent over (B, D) pairs: each row of ``a`` against its row of ``b`` among the 2B - 1 others."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    similarity = z @ z.T / temperature
    n = a.shape[0]
    similarity = similarity.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, target)


def equivariant_loss(points_a: Tensor, points_b: Tensor, transform_a: tuple[Tensor, Tensor],
                     transform_b: tuple[Tensor, Tensor], temperature: float) -> Tensor:
    """NT-Xent between two views' (B, k, 2) points brought back to the image's frame."""
    a = to_image_frame(points_a, *transform_a).flatten(1)
    b = to_image_frame(points_b, *transform_b).flatten(1)
    return nt_xent(a, b, temperature)
