"""Chamfer distance (paper Eq. 8): mean nearest-neighbour distance, both directions.

Current implementation: chunked brute force in torch on any device. Distances are
``sum((x - y)^2)`` computed directly, never by the ``|x|^2 + |y|^2 - 2xy`` expansion,
which loses precision far from the origin and can go negative.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 22  # bounds the (chunk, M, 3) difference tensor to ~48 MB in fp32


def nearest_neighbors(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """For each point of x (B, N, 3), the squared distance to and index of its nearest point in y (B, M, 3)."""
    b, n, _ = x.shape
    m = y.shape[1]
    x32, y32 = x.float(), y.float()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * m * 3))
    dists, idxs = [], []
    with torch.no_grad():
        for start in range(0, n, chunk):
            diff = x32[:, start : start + chunk, None, :] - y32[:, None, :, :]
            d, i = diff.square().sum(-1).min(dim=-1)
            dists.append(d)
            idxs.append(i)
    idx = torch.cat(idxs, dim=1)
    # Recompute the matched distances with autograd: the gradient flows through the pairs only.
    matched = torch.gather(y32, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    return (x32 - matched).square().sum(-1), idx


def chamfer_distance(x: Tensor, y: Tensor, squared: bool = False, reduction: str = "mean") -> Tensor:
    """Mean distance from each point to its nearest neighbour in the other cloud, both ways, summed.

    ``reduction``: "none" -> (B,), "mean" over the batch, or "sum".
    """
    _check_clouds(x, y, "chamfer_distance")
    d_xy, _ = nearest_neighbors(x, y)
    d_yx, _ = nearest_neighbors(y, x)
    if not squared:
        # Clamp before the root: d/dx sqrt(0) is infinite.
        d_xy, d_yx = d_xy.clamp_min(1e-12).sqrt(), d_yx.clamp_min(1e-12).sqrt()
    per_sample = d_xy.mean(dim=1) + d_yx.mean(dim=1)
    return _reduce(per_sample, reduction, "chamfer_distance")


def _check_clouds(x: Tensor, y: Tensor, name: str) -> None:
    for label, t in (("x", x), ("y", y)):
        if t.dim() != 3 or t.shape[-1] != 3:
            raise ValueError(f"{name}: expected {label} of shape (B, N, 3), got {tuple(t.shape)}")
        if t.shape[1] == 0:
            raise ValueError(f"{name}: {label} is an empty cloud (0 points)")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: batch sizes differ: x {x.shape[0]}, y {y.shape[0]}")


def _reduce(per_sample: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
