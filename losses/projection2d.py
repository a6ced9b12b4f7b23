"""2D keypoints supervise the 3D pose of frames that have no 3D label, through its projection.

A predicted pose is root-relative and in bone units; where it sits in front of the camera is
unknown without a 3D label. Perspective projection does not see the scale, so the unknown is the
root's position in bone units, t: the pose p + t projects through the crop's intrinsics K to
(u, v) = (K(p + t))_xy / (K(p + t))_z. Per frame, t is fitted and held fixed (no gradient):

- the least-squares solution of the linear equations (u K_z - K_x)(p + t) = 0 and
  (v K_z - K_y)(p + t) = 0 over the 21 joints (the algebraic error: one 3x3 solve), exact for a
  pose that projects onto its labels;
- a weak-perspective fit (one scale and a 2D shift of the pose's x, y onto the normalised image
  coordinates), which always puts the hand in front of the camera.

A poor pose, early in training above all, can make the algebraic solution place joints at or
behind the camera, where the projection explodes; so the weak-perspective root is taken whenever
the algebraic one leaves a joint nearer than a tenth of the hand's depth, or projects worse.
Depths are also floored at that tenth, so one bad frame cannot dominate the batch.

The term is the L1 distance between the projection and the 2D labels, in crop coordinates
scaled to [-1, 1], summed over joints and averaged over the frames that have 2D labels and no 3D
label (``uv_only``).
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


def fit_root_weak_perspective(pose: Tensor, uv: Tensor, K: Tensor, min_scale: float = 1e-3) -> Tensor:
    """(B, 3) translation t such that (p + t)_xy / depth matches ``uv`` under weak perspective:
    one depth for the whole hand (the centroid's), the scale 1 / depth fitted by least squares and
    floored at ``min_scale`` so that the hand stays in front of the camera."""
    ones = torch.ones_like(uv[..., :1])
    normalised = (torch.cat([uv, ones], -1) @ torch.linalg.inv(K).transpose(1, 2))[..., :2]
    xy, centre_xy, centre_q = pose[..., :2], pose[..., :2].mean(1), normalised.mean(1)
    dp, dq = xy - centre_xy[:, None], normalised - centre_q[:, None]
    scale = ((dp * dq).sum((1, 2)) / (dp * dp).sum((1, 2)).clamp_min(1e-12)).clamp_min(min_scale)
    depth = 1.0 / scale  # of the centroid
    t_xy = centre_q * depth[:, None] - centre_xy
    t_z = depth - pose[..., 2].mean(1)
    return torch.cat([t_xy, t_z[:, None]], 1)


def project(points: Tensor, K: Tensor, min_depth: Tensor | float = 1e-6) -> Tensor:
    """(B, J, 3) camera-frame points -> (B, J, 2) pixels; depths below ``min_depth`` ((B,) or a
    number) are raised to it."""
    q = points @ K.transpose(1, 2)
    floor = min_depth[:, None, None] if isinstance(min_depth, Tensor) else min_depth
    return q[..., :2] / q[..., 2:].clamp_min(floor)


def robust_root(pose: Tensor, uv: Tensor, K: Tensor, near: float = 0.1) -> tuple[Tensor, Tensor]:
    """The per-frame root (B, 3) and depth floor (B,): the algebraic fit where it keeps every joint
    beyond ``near`` times the hand's depth and projects no worse, else the weak-perspective one."""
    exact, weak = fit_root(pose, uv, K), fit_root_weak_perspective(pose, uv, K)
    floor = near * (pose[..., 2].mean(1) + weak[:, 2])

    def error(t: Tensor) -> Tensor:
        return (project(pose + t[:, None], K, floor) - uv).abs().sum((1, 2))

    exact_ok = ((pose[..., 2] + exact[:, None, 2]).amin(1) > floor) & (error(exact) <= error(weak))
    return torch.where(exact_ok[:, None], exact, weak), floor


@POSE_LOSSES.register("projection2d")
class Projection2DLoss(PoseLoss):
    """Options: ``weight`` of the term.

    The default of 10 gives a weak frame's term about the gradient a labelled frame's pose term
    has mid-training: a joint 0.5 bone units off costs about 0.16 crop units a coordinate here,
    summed over 42 (about 7 a bone unit), against 63 squared coordinates there (about 63).
    """

    def __init__(self, weight: float = 10.0) -> None:
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
        t, floor = robust_root(p.detach(), uv, K)
        half = batch["image"].shape[-1] / 2.0
        error = ((project(p + t[:, None], K, floor) - uv) / half).abs().sum(dim=(1, 2)).mean()
        return {"reprojection": self.weight * error.to(pose.dtype)}
