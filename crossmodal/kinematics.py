"""Anatomical measurements of a 21-joint hand: bone lengths, the palm's root bones, joint angles.

The three groups of Spurr et al., "Weakly Supervised 3D Hand Pose Estimation via Biomechanical
Constraints" (ECCV 2020), measured on poses in the framework's order (``crossmodal.data.joints``):

- ``bone_lengths``: the 20 bones, (..., 20), in the pose's units;
- ``root_bone_angles``: the angle between each pair of neighbouring root bones (wrist to the
  thumb's CMC and the fingers' MCPs), (..., 4) radians: how the palm spreads;
- ``joint_angles``: at each finger's three joints (MCP, PIP, DIP; for the thumb CMC-MCP, MCP,
  IP), the child bone's flexion and abduction in a frame of its parent bone, (..., 15, 2)
  radians. The frame: x along the parent bone; y the palm's normal made perpendicular to x;
  z = x cross y. Flexion = atan2(c.y, c.x), abduction = atan2(c.z, c.x) for the child bone c.

``limits`` takes the extremes of each measurement over a set of poses; ``violations`` measures
how far poses fall outside them. The palm normal comes from the index and little root bones, so a
mirrored hand flips the sign of its flexions: limits measured on right hands (or on left hands
mirrored, as the CPU profile's ``mirror_left`` does) suit poses of the same chirality.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from crossmodal.data.joints import BONES, SCALE_BONE

#: Joints of each finger from the root outwards (thumb, index, middle, ring, little).
CHAINS = tuple((0, base + 3, base + 2, base + 1, base) for base in (1, 5, 9, 13, 17))
#: Root joints (thumb CMC, finger MCPs), in order across the palm.
ROOTS = tuple(chain[1] for chain in CHAINS)
GROUPS = ("bone_lengths", "root_bone_angles", "joint_angles")
_EPS = 1e-8


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def bone_lengths(pose: Tensor) -> Tensor:
    parent = torch.tensor([p for p, _ in BONES], device=pose.device)
    child = torch.tensor([c for _, c in BONES], device=pose.device)
    return (pose[..., child, :] - pose[..., parent, :]).norm(dim=-1)


def root_bone_angles(pose: Tensor) -> Tensor:
    roots = _unit(pose[..., list(ROOTS), :] - pose[..., :1, :])
    cos = (roots[..., :-1, :] * roots[..., 1:, :]).sum(-1)
    return torch.arccos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6))


def joint_angles(pose: Tensor) -> Tensor:
    normal = _unit(torch.linalg.cross(pose[..., ROOTS[1], :] - pose[..., 0, :], pose[..., ROOTS[4], :] - pose[..., 0, :]))
    chains = torch.tensor(CHAINS, device=pose.device)  # (5, 5)
    points = pose[..., chains, :]  # (..., 5 fingers, 5 joints, 3)
    bones = points[..., 1:, :] - points[..., :-1, :]  # (..., 5, 4): root bone, proximal, middle, distal
    x = _unit(bones[..., :-1, :])  # parent bones
    c = _unit(bones[..., 1:, :])  # child bones
    n = normal[..., None, None, :].expand_as(x)
    y = _unit(n - (n * x).sum(-1, keepdim=True) * x)
    z = torch.linalg.cross(x, y)
    cx, cy, cz = (c * x).sum(-1), (c * y).sum(-1), (c * z).sum(-1)
    angles = torch.stack([torch.atan2(cy, cx), torch.atan2(cz, cx)], dim=-1)  # (..., 5, 3, 2)
    return angles.flatten(-3, -2)


def measure(pose: Tensor) -> dict[str, Tensor]:
    """Every group's measurements of (..., 21, 3) poses."""
    return {"bone_lengths": bone_lengths(pose), "root_bone_angles": root_bone_angles(pose),
            "joint_angles": joint_angles(pose)}


def limits(poses: np.ndarray | Tensor) -> dict[str, Tensor]:
    """{group: (2, *shape)} the smallest and largest value of each measurement over (N, 21, 3) poses."""
    values = measure(torch.as_tensor(np.asarray(poses), dtype=torch.float64))
    return {group: torch.stack([v.amin(0), v.amax(0)]).float() for group, v in values.items()}


def violations(pose: Tensor, bounds: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{group: (...)} the summed hinge relu(lo - x) + relu(x - hi) over each group's measurements."""
    out = {}
    for group, value in measure(pose).items():
        lo, hi = bounds[group].to(value)
        hinge = (lo - value).clamp_min(0) + (value - hi).clamp_min(0)
        out[group] = hinge.flatten(pose.dim() - 2).sum(-1)
    return out


def limits_to_json(bounds: Mapping[str, Tensor]) -> dict[str, dict[str, list]]:
    return {group: {"min": b[0].tolist(), "max": b[1].tolist()} for group, b in bounds.items()}


def _unit_bone_scaled(poses: Tensor) -> Tensor:
    pose = torch.as_tensor(poses, dtype=torch.float64)
    a, b = SCALE_BONE
    return pose / (pose[..., a, :] - pose[..., b, :]).norm(dim=-1).clamp_min(_EPS)[..., None, None]


#: Units in which :func:`mean_excess` reports each group: % of the unit bone, degrees, degrees.
EXCESS_UNITS = {"bone_lengths": 100.0, "root_bone_angles": 180.0 / np.pi, "joint_angles": 180.0 / np.pi}


def mean_excess(poses: Tensor, bounds: Mapping[str, Tensor]) -> dict[str, float]:
    """How far (N, 21, 3) poses lie outside the bounds, per group: the mean over poses and
    measurements of the distance to the nearest bound (0 inside), bone lengths in % of the unit
    bone, angles in degrees. Unlike a share of poses out of bounds, it does not saturate when the
    bounds are tight (a synthetic hand's palm spreads within 2 degrees)."""
    out = {}
    for group, value in measure(_unit_bone_scaled(poses)).items():
        lo, hi = bounds[group].to(value)
        hinge = (lo - value).clamp_min(0) + (value - hi).clamp_min(0)
        out[group] = float(hinge.mean()) * EXCESS_UNITS[group]
    return out


def broken_fractions(poses: Tensor, bounds: Mapping[str, Tensor], tolerance: float = 1e-6) -> dict[str, float]:
    """The fraction of (N, 21, 3) poses outside the bounds: any group ("all"), and each group.

    Each pose is first scaled to its own unit bone (``SCALE_BONE``, 12 -> 11), the unit every
    label is in: the labels' bound on that bone is [1, 1], so a prediction would otherwise be
    counted out of bounds for its overall size alone, which the protocol's scaling ignores."""
    hinges = violations(_unit_bone_scaled(poses), {k: v.double() for k, v in bounds.items()})
    broken = {group: h > tolerance for group, h in hinges.items()}
    broken["all"] = torch.stack(list(broken.values())).any(0)
    return {group: float(b.double().mean()) for group, b in broken.items()}
