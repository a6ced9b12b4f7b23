"""Nearest neighbours by chunked brute force in torch: memory O(B (N + M)), any device.

Each chunk of queries builds one (B, chunk, M) tile of squared distances, sized so that the
tile never exceeds a fixed element budget (a training batch, B=32 and N=M=256, fits in one
tile; B=8, N=M=4096 takes 32), then keeps only minima and argmins. The squared distance is
``sum_k (x_k - y_k)^2`` computed directly, one coordinate plane at a time into two reused
buffers, never by the ``|x|^2 + |y|^2 - 2 x.y`` matrix-product expansion, which loses
precision far from the origin and can go negative. Reusing the buffers matters: a fresh
multi-MB tensor per operation costs more in page faults than the arithmetic itself.

``nearest_both_chunked`` serves Chamfer's two directions from one tile: the row minimum
gives x -> y, and a running column minimum over the chunks gives y -> x.
"""

from __future__ import annotations

import torch
from torch import Tensor

TILE_ELEMENTS = 1 << 22  # 16 MB per fp32 tile; the tile and one scratch buffer live at once


def _chunk_rows(batch: int, m: int) -> int:
    return max(1, TILE_ELEMENTS // max(1, batch * m))


def _pad_penalty(lengths: Tensor, size: int, dtype: torch.dtype) -> Tensor | None:
    """(B, size) with +inf at padded points and 0 elsewhere, or None when nothing is padded."""
    if bool((lengths >= size).all()):
        return None
    padded = torch.arange(size, device=lengths.device)[None, :] >= lengths[:, None]
    return torch.zeros(padded.shape, dtype=dtype, device=lengths.device).masked_fill_(padded, float("inf"))


class _TileWriter:
    """Fills (B, rows, M) squared-distance tiles from coordinate planes, reusing its buffers."""

    def __init__(self, x: Tensor, y: Tensor, rows: int) -> None:
        self.x_planes = x.permute(2, 0, 1).contiguous()  # (3, B, N): unit-stride broadcasts
        self.y_planes = y.permute(2, 0, 1).contiguous()  # (3, B, M)
        batch, m = y.shape[0], y.shape[1]
        self.tile = torch.empty(batch, rows, m, dtype=x.dtype, device=x.device)
        self.scratch = torch.empty_like(self.tile)

    def fill(self, start: int, stop: int) -> Tensor:
        tile, scratch = self.tile[:, : stop - start], self.scratch[:, : stop - start]
        for k in range(3):
            target = tile if k == 0 else scratch
            torch.sub(self.x_planes[k, :, start:stop, None], self.y_planes[k, :, None, :], out=target)
            if k == 0:
                tile.square_()
            else:
                tile.addcmul_(scratch, scratch)
        return tile


@torch.no_grad()
def nearest_neighbors_chunked(x: Tensor, y: Tensor, y_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """For x (B, N, 3) and y (B, M, 3) in fp32: squared distance (B, N) and index (B, N) of the nearest valid y.

    Points of y at or beyond ``y_lengths`` are never chosen.
    """
    batch, n, _ = x.shape
    m = y.shape[1]
    y_penalty = _pad_penalty(y_lengths, m, x.dtype)
    dist = torch.empty(batch, n, dtype=x.dtype, device=x.device)
    index = torch.empty(batch, n, dtype=torch.int64, device=x.device)
    chunk = min(n, _chunk_rows(batch, m))
    writer = _TileWriter(x, y, chunk)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        tile = writer.fill(start, stop)
        if y_penalty is not None:
            tile.add_(y_penalty[:, None, :])
        torch.min(tile, dim=2, out=(dist[:, start:stop], index[:, start:stop]))
    return dist, index


@torch.no_grad()
def nearest_both_chunked(x: Tensor, y: Tensor, x_lengths: Tensor, y_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest-neighbour indices both ways for fp32 x (B, N, 3) and y (B, M, 3), from one set of tiles.

    Returns (index of the nearest valid y for each x (B, N), index of the nearest valid x for
    each y (B, M)). Padded points (at or beyond the lengths) are never chosen; the indices
    returned for padded queries are arbitrary.
    """
    batch, n, _ = x.shape
    m = y.shape[1]
    x_penalty = _pad_penalty(x_lengths, n, x.dtype)
    y_penalty = _pad_penalty(y_lengths, m, x.dtype)
    index_xy = torch.empty(batch, n, dtype=torch.int64, device=x.device)
    best_yx = torch.full((batch, m), float("inf"), dtype=x.dtype, device=x.device)
    index_yx = torch.zeros(batch, m, dtype=torch.int64, device=x.device)
    chunk = min(n, _chunk_rows(batch, m))
    writer = _TileWriter(x, y, chunk)
    row_min = torch.empty(batch, chunk, dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        tile = writer.fill(start, stop)
        if y_penalty is not None:
            tile.add_(y_penalty[:, None, :])
        torch.min(tile, dim=2, out=(row_min[:, : stop - start], index_xy[:, start:stop]))
        if x_penalty is not None:
            tile.add_(x_penalty[:, start:stop, None])
        col_min, col_arg = tile.min(dim=1)
        # Strictly smaller only: on ties the earlier x point (earlier chunk) keeps the match.
        better = col_min < best_yx
        best_yx = torch.where(better, col_min, best_yx)
        index_yx = torch.where(better, col_arg + start, index_yx)
    return index_xy, index_yx
