"""Input validation shared by the point-cloud ops: one-line errors before any kernel runs."""

from __future__ import annotations

import torch
from torch import Tensor

from crossmodal.errors import CrossmodalError


class CloudInputError(CrossmodalError, ValueError):
    """A point cloud passed to crossmodal.ops has the wrong shape, size or values."""


def check_cloud(t: Tensor, label: str, op: str) -> None:
    """(B, N, 3) floating tensor with N > 0 and finite coordinates."""
    if not isinstance(t, Tensor):
        raise CloudInputError(f"{op}: {label} must be a torch.Tensor of shape (B, N, 3), got {type(t).__name__}")
    if t.dim() != 3 or t.shape[-1] != 3:
        raise CloudInputError(f"{op}: expected {label} of shape (B, N, 3), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise CloudInputError(f"{op}: {label} must hold floating point coordinates, got {t.dtype}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise CloudInputError(f"{op}: {label} is an empty cloud (shape {tuple(t.shape)})")


def check_pair(x: Tensor, y: Tensor, op: str) -> None:
    """Both clouds valid, same batch size, same device."""
    check_cloud(x, "x", op)
    check_cloud(y, "y", op)
    if x.shape[0] != y.shape[0]:
        raise CloudInputError(f"{op}: batch sizes differ: x {x.shape[0]}, y {y.shape[0]}")
    if x.device != y.device:
        raise CloudInputError(f"{op}: x is on {x.device} but y is on {y.device}")


def check_lengths(lengths: Tensor | None, cloud: Tensor, label: str, op: str) -> Tensor:
    """Valid point counts per sample as int64 on the cloud's device; None means every point counts."""
    batch, size = cloud.shape[0], cloud.shape[1]
    if lengths is None:
        return torch.full((batch,), size, dtype=torch.int64, device=cloud.device)
    lengths = torch.as_tensor(lengths, device=cloud.device)
    if lengths.shape != (batch,) or lengths.is_floating_point() or lengths.is_complex():
        raise CloudInputError(
            f"{op}: {label}_lengths must be an integer tensor of shape ({batch},), got {lengths.dtype} {tuple(lengths.shape)}"
        )
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1:
        raise CloudInputError(f"{op}: {label}_lengths must be >= 1 (an empty cloud has no distance), got {low}")
    if high > size:
        raise CloudInputError(f"{op}: {label}_lengths holds {high}, larger than the padded size {size} of {label}")
    return lengths.to(torch.int64)


def check_finite(t: Tensor, lengths: Tensor, label: str, op: str) -> None:
    """No NaN or infinite coordinate among the valid (unpadded) points."""
    valid = torch.arange(t.shape[1], device=t.device)[None, :] < lengths[:, None]
    bad = ~torch.isfinite(t.detach()).all(dim=-1) & valid
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0])
        raise CloudInputError(f"{op}: {label} has a NaN or infinite coordinate (sample {b}, point {i})")


def reduce(per_sample: Tensor, reduction: str, op: str) -> Tensor:
    """'none' -> (B,), 'mean' -> scalar, 'sum' -> scalar."""
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise CloudInputError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def check_reduction(reduction: str, op: str) -> None:
    """Fail before any work on a reduction name that reduce() would reject."""
    if reduction not in ("none", "mean", "sum"):
        raise CloudInputError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
