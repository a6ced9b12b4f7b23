"""Biomechanical constraints (Spurr et al., ECCV 2020): three hinge terms on a predicted pose.

    bone_lengths       relu(lo - l) + relu(l - hi) over the 20 bones
    root_bone_angles   the same over the 4 angles between neighbouring root bones (the palm)
    joint_angles       the same over the flexion and abduction of the 15 finger joints

The bounds (``crossmodal.kinematics``) are the extremes over the labelled training frames,
given by ``fit`` before training; a frame without a 3D label costs nothing but its prediction's
distance outside them, so the constraints train on every frame. Each term is the batch mean of
its summed hinges, times its weight.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from crossmodal import kinematics
from crossmodal.errors import ConfigError
from crossmodal.registry import POSE_LOSSES
from losses.base import PoseLoss

SHAPES = {"bone_lengths": (2, 20), "root_bone_angles": (2, 4), "joint_angles": (2, 15, 2)}


@POSE_LOSSES.register("biomech")
class BiomechanicalLoss(PoseLoss):
    """Options: ``bone_lengths``, ``root_bone_angles``, ``joint_angles``: each term's weight."""

    needs_labelled_poses = True

    def __init__(self, bone_lengths: float = 1.0, root_bone_angles: float = 1.0, joint_angles: float = 1.0) -> None:
        super().__init__()
        self.weights = {"bone_lengths": float(bone_lengths), "root_bone_angles": float(root_bone_angles),
                        "joint_angles": float(joint_angles)}
        for group, shape in SHAPES.items():
            if self.weights[group] < 0:
                raise ConfigError(f"model.pose_loss_options.biomech.{group} must be >= 0, got {self.weights[group]}")
            # Persistent: a checkpoint keeps the bounds its run trained with.
            self.register_buffer(f"limits_{group}", torch.full(shape, float("nan")))

    def fit(self, labelled_poses: np.ndarray) -> dict[str, Any]:
        if len(labelled_poses) < 2:
            raise ConfigError(f"biomech: the bounds need labelled training frames; got {len(labelled_poses)}")
        bounds = kinematics.limits(labelled_poses)
        for group, value in bounds.items():
            getattr(self, f"limits_{group}").copy_(value)
        return {"frames": int(len(labelled_poses)), **kinematics.limits_to_json(bounds)}

    def bounds(self) -> dict[str, Tensor]:
        bounds = {group: getattr(self, f"limits_{group}") for group in SHAPES}
        if any(torch.isnan(b).any() for b in bounds.values()):
            raise ConfigError("biomech: its bounds were never fitted to the labelled frames (call fit first)")
        return bounds

    def forward(self, pose: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        hinges = kinematics.violations(pose.float(), self.bounds())
        return {group: self.weights[group] * hinges[group].mean() for group in SHAPES}
