"""2D keypoints supervise the 3D pose of frames that have no 3D label, through its projection.

A predicted pose is root-relative and in bone units; where it sits in front of the camera is
unknown without a 3D label. Perspective projection does not see the scale, so the unknown is the
root's position in bone units, t: the pose p + t projects through the crop's intrinsics K to
(u, v) = (K(p + t))_xy / (K(p + t))_z. Per frame, t is the least-squares solution of the linear
equations (u K_z - K_x)(p + t) = 0 and (v K_z - K_y)(p + t) = 0 over the 21 joints (the algebraic
error: one 3x3 solve), held fixed (no gradient), and the term is the L1 distance between the
projection and the 2D labels, in crop coordinates scaled to [-1, 1], summed over joints and
averaged over the frames that have 2D labels and no 3D label (``uv_only``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from crossmodal.errors import ConfigError
from crossmodal.registry import POSE_LOSSES
from losses.base import PoseLoss


def fit_root(pose: Tensor, uv: Tensor, K: Tensor) -> Tensor:
    """(B, 3) translation t, in the pose's units, whose p + t projects closest to ``uv`` (algebraic LS)."""
    rows = torch.cat([uv[..., :1] * K[:, None, 2] - K[:, None, 0], uv[..., 1:] * K[:, None, 2] - K[:, None, 1]], 1)
    p = torch.cat([pose, pose], 1)  # rows are (u rows of the 21 joints, then v rows)
    b = -(rows * p).sum(-1, keepdim=True)  # (B, 42, 1)
    normal = rows.transpose(1, 2) @ rows + 1e-9 * torch.eye(3, dtype=pose.dtype, device=pose.device)
    return torch.linalg.solve(normal, rows.transpose(1, 2) @ b).squeeze(-1)


def project(points: Tensor, K: Tensor) -> Tensor:
    """(B, J, 3) camera-frame points -> (B, J, 2) pixels."""
    q = points @ K.transpose(1, 2)
    return q[..., :2] / q[..., 2:].clamp_min(1e-6)


@POSE_LOSSES.register("projection2d")
class Projection2DLoss(PoseLoss):
    """Options: ``weight`` of the term."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"model.pose_loss_options.projection2d.weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def forward(self, pose: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        weak = batch["uv_only"].bool() if "uv_only" in batch else None
        if weak is None or not bool(weak.any()):
            return {"reprojection": pose.sum() * 0.0}
        p = pose[weak].double()
        uv, K = batch["uv"][weak].double(), batch["K"][weak].double()
        t = fit_root(p.detach(), uv, K)
        half = batch["image"].shape[-1] / 2.0
        error = ((project(p + t[:, None], K) - uv) / half).abs().sum(dim=(1, 2)).mean()
        return {"reprojection": self.weight * error.to(pose.dtype)}
