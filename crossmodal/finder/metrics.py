"""The finder's report at full resolution: hand-mask IoU, box IoU, side accuracy, found rate."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N,) IoU of boxes given as pixel edges (u0, v0, u1, v1); 0 for an empty or missing box."""
    lo = torch.maximum(a[:, :2], b[:, :2])
    hi = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp_min(0).prod(dim=1)
    area = lambda box: (box[:, 2:] - box[:, :2]).clamp_min(0).prod(dim=1)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-9), torch.zeros_like(union))


def mask_iou(pred: Tensor, truth: Tensor) -> Tensor:
    """(N,) IoU of (N, H, W) boolean masks."""
    inter = (pred & truth).flatten(1).sum(dim=1).float()
    union = (pred | truth).flatten(1).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def summarise(mask_ious: Tensor, box_ious: Tensor, side_ok: Tensor, found: Tensor) -> dict[str, Any]:
    """Means over the frames; a frame where no hand was found counts with box IoU 0 and a wrong side."""
    found = found.bool()
    return {
        "frames": int(len(found)),
        "found_rate": float(found.float().mean()),
        "mask_iou": float(mask_ious.mean()),
        "box_iou": float(torch.where(found, box_ious, torch.zeros_like(box_ious)).mean()),
        "box_iou_median": float(np.median(torch.where(found, box_ious, torch.zeros_like(box_ious)).numpy())),
        "box_iou_at_0.5": float(((box_ious >= 0.5) & found).float().mean()),
        "side_accuracy": float((side_ok.bool() & found).float().mean()),
    }
