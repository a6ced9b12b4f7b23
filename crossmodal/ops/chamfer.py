"""Chamfer distance (paper Eq. 8) and nearest neighbours: one entry each, the device picks the path.

CUDA tensors use the Triton kernel (``chamfer_triton``); CPU tensors use the chunked torch
search (``chamfer_cpu``); a CUDA machine without Triton falls back to the chunked search with
a warning. Both only find the neighbour indices, without gradient, in fp32. The distances of
the matched pairs are then recomputed in torch, so the backward pass is a gather and its
scatter-add, and the arithmetic is at least fp32 whatever the input dtype.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from crossmodal.ops._checks import check_finite, check_lengths, check_pair, check_reduction, reduce
from crossmodal.ops.chamfer_cpu import nearest_both_chunked, nearest_neighbors_chunked


@functools.cache
def triton_available() -> bool:
    """True when Triton imports (it is an optional dependency, needed only on the GPU)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(device: torch.device, backend: str | None) -> str:
    """'triton' for CUDA tensors when Triton is installed, else 'torch'; an explicit backend wins."""
    if backend is not None:
        if backend not in ("torch", "triton"):
            raise ValueError(f"backend must be 'torch' or 'triton', got {backend!r}")
        return backend
    if device.type == "cuda":
        if triton_available():
            return "triton"
        warnings.warn("crossmodal.ops: triton is not installed; using the slower chunked torch kernels on CUDA")
    return "torch"


def _search(x: Tensor, y: Tensor, y_lengths: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    if backend == "triton":
        from crossmodal.ops.chamfer_triton import nearest_neighbors_triton

        return nearest_neighbors_triton(x, y, y_lengths)
    return nearest_neighbors_chunked(x, y, y_lengths)


def _search_both(x: Tensor, y: Tensor, x_len: Tensor, y_len: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    """Nearest-neighbour indices x -> y (B, N) and y -> x (B, M); the CPU path shares one set of tiles."""
    if backend == "triton":
        return _search(x, y, y_len, backend)[1], _search(y, x, x_len, backend)[1]
    return nearest_both_chunked(x, y, x_len, y_len)


def valid_mask(lengths: Tensor, size: int) -> Tensor:
    """(B, size) bool, True for the first lengths[b] points of each sample."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _centre(y: Tensor, y_lengths: Tensor) -> Tensor:
    """Mean of the valid points of y (B, 1, 3), detached: shifting both clouds by it changes no distance
    but keeps fp32 coordinates small, so clouds far from the origin lose no precision."""
    mask = valid_mask(y_lengths, y.shape[1]).unsqueeze(-1)
    return ((y.detach() * mask).sum(1, keepdim=True) / y_lengths[:, None, None]).detach()


def _working_copies(x: Tensor, y: Tensor, y_len: Tensor) -> tuple[Tensor, Tensor]:
    """Both clouds in at least fp32 (half-precision differences would lose the small distances),
    shifted by the centre of y."""
    work = torch.promote_types(x.dtype, torch.float32)
    x, y = x.to(work), y.to(work)
    centre = _centre(y, y_len)
    return x - centre, y - centre


def _matched_sq_dist(xs: Tensor, ys: Tensor, index: Tensor, x_len: Tensor) -> Tensor:
    """Differentiable squared distance (B, N) from each valid x to y[index]; 0 at padded x."""
    mask = valid_mask(x_len, xs.shape[1])
    index = index.masked_fill(~mask, 0)
    matched = torch.gather(ys, 1, index.unsqueeze(-1).expand(-1, -1, 3))
    # Padding may hold anything (NaN included): zero it before the difference so that neither
    # the value nor the gradient of any valid point can see it.
    xs = torch.where(mask.unsqueeze(-1), xs, torch.zeros_like(xs))
    return (xs - matched).square().sum(-1) * mask


def _zero_padding(t: Tensor, lengths: Tensor) -> Tensor:
    return t.masked_fill(~valid_mask(lengths, t.shape[1]).unsqueeze(-1), 0.0)


def _nearest(
    x: Tensor, y: Tensor, x_len: Tensor, y_len: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    xs, ys = _working_copies(x, y, y_len)
    with torch.no_grad():
        _, index = _search(xs.detach().float(), ys.detach().float(), y_len, backend)
    index = index.masked_fill(~valid_mask(x_len, x.shape[1]), 0)
    return _matched_sq_dist(xs, ys, index, x_len), index


def _prepare(x, y, x_lengths, y_lengths, op):
    check_pair(x, y, op)
    x_len = check_lengths(x_lengths, x, "x", op)
    y_len = check_lengths(y_lengths, y, "y", op)
    check_finite(x, x_len, "x", op)
    check_finite(y, y_len, "y", op)
    return x_len, y_len


def nearest_neighbors(
    x: Tensor,
    y: Tensor,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """For each point of x (B, N, 3): squared distance (B, N) to its nearest point of y (B, M, 3), and its index.

    The distances are differentiable with respect to x and y. Padded points (at or beyond
    ``x_lengths`` / ``y_lengths``) are never chosen as neighbours; a padded query gets distance 0
    and index 0. ``backend`` ('torch' or 'triton') overrides the device's choice (for tests).
    """
    x_len, y_len = _prepare(x, y, x_lengths, y_lengths, "nearest_neighbors")
    return _nearest(x, y, x_len, y_len, resolve_backend(x.device, backend))


def safe_sqrt(sq: Tensor) -> Tensor:
    """sqrt with value 0 and gradient 0 (not inf or NaN) where the squared distance is 0."""
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def chamfer_distance(
    x: Tensor,
    y: Tensor,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
    squared: bool = False,
    reduction: str = "mean",
    *,
    backend: str | None = None,
) -> Tensor:
    """Chamfer distance between x (B, N, 3) and y (B, M, 3), paper Eq. 8.

    Per sample: mean over the valid points of x of the Euclidean distance to the nearest point
    of y, plus the same from y to x (``squared=True``: squared distances). ``x_lengths`` and
    ``y_lengths`` (B,) give the valid point counts of padded clouds. ``reduction``: "none" -> (B,),
    "mean" or "sum" over the batch. Computed in at least fp32; differentiable in x and y.
    """
    op = "chamfer_distance"
    check_reduction(reduction, op)
    x_len, y_len = _prepare(x, y, x_lengths, y_lengths, op)
    chosen = resolve_backend(x.device, backend)
    xs, ys = _working_copies(x, y, y_len)
    with torch.no_grad():
        x_search, y_search = _zero_padding(xs.detach().float(), x_len), _zero_padding(ys.detach().float(), y_len)
        index_xy, index_yx = _search_both(x_search, y_search, x_len, y_len, chosen)
    d_xy = _matched_sq_dist(xs, ys, index_xy, x_len)
    d_yx = _matched_sq_dist(ys, xs, index_yx, y_len)
    if not squared:
        d_xy, d_yx = safe_sqrt(d_xy), safe_sqrt(d_yx)
    per_sample = d_xy.sum(1) / x_len.to(d_xy.dtype) + d_yx.sum(1) / y_len.to(d_yx.dtype)
    return reduce(per_sample, reduction, op)
