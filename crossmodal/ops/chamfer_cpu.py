"""Nearest neighbours by chunked brute force in torch: memory O(B (N + M)), any device.

Each chunk of queries builds one (B, chunk, M) tile of squared distances, sized so that the
tile never exceeds a fixed element budget, then keeps only its row minimum and argmin. The
squared distance is ``sum_k (x_k - y_k)^2`` computed directly, one coordinate at a time, never
by the ``|x|^2 + |y|^2 - 2 x.y`` matrix-product expansion, which loses precision far from the
origin and can go negative.
"""

from __future__ import annotations

import torch
from torch import Tensor

TILE_ELEMENTS = 1 << 20  # 4 MB per fp32 tile; a few tiles live at once


@torch.no_grad()
def nearest_neighbors_chunked(x: Tensor, y: Tensor, y_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """For x (B, N, 3) and y (B, M, 3) in fp32: squared distance (B, N) and index (B, N) of the nearest valid y.

    Points of y at or beyond ``y_lengths`` are never chosen.
    """
    batch, n, _ = x.shape
    m = y.shape[1]
    # Padded targets get an infinite squared distance through an additive mask row.
    pad_mask = torch.zeros(batch, 1, m, dtype=x.dtype, device=x.device)
    pad_mask.masked_fill_(torch.arange(m, device=x.device)[None, None, :] >= y_lengths[:, None, None], float("inf"))
    y_coords = [y[:, None, :, k] for k in range(3)]  # (B, 1, M) each
    dist = torch.empty(batch, n, dtype=x.dtype, device=x.device)
    index = torch.empty(batch, n, dtype=torch.int64, device=x.device)
    chunk = max(1, TILE_ELEMENTS // max(1, batch * m))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        tile = (x[:, start:stop, 0:1] - y_coords[0]).square_()
        for k in (1, 2):
            tile.add_((x[:, start:stop, k : k + 1] - y_coords[k]).square_())
        tile.add_(pad_mask)
        dist[:, start:stop], index[:, start:stop] = tile.min(dim=2)
    return dist, index
