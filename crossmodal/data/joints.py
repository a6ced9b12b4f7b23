"""The 21-joint hand skeleton in RHD's order, the framework's internal order.

0 wrist; then thumb, index, middle, ring, little, each listed from the tip to
the root joint::

    thumb 1 (tip) .. 4 (MCP/CMC)   index 5 .. 8    middle 9 .. 12
    ring 13 .. 16                   little 17 .. 20

Joint 12 is the middle-finger MCP and 11 its PIP: the bone 12 -> 11 sets the
scale used for normalisation and for the evaluation protocol.

STB labels a palm centre instead of a wrist as joint 0. Its readers keep that
palm as joint 0 (documented in ``crossmodal.data.stb``); the evaluation
protocol replaces joint 0 by the palm centre in every dataset anyway.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 21

FINGERS = ("thumb", "index", "middle", "ring", "little")

JOINT_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}_{part}"
    for finger in FINGERS
    for part in (("tip", "ip", "mcp", "cmc") if finger == "thumb" else ("tip", "dip", "pip", "mcp"))
)

#: Parent of each joint in the kinematic tree (the wrist is the root).
PARENTS: tuple[int, ...] = (-1,) + tuple(
    (0 if k == 3 else base + k + 1) for base in (1, 5, 9, 13, 17) for k in range(4)
)

#: Bones as (parent, child) pairs, used for drawing skeletons and geometry checks.
BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, NUM_JOINTS))

#: Joints that define the normalisation scale: ||xyz[12] - xyz[11]||.
SCALE_BONE = (12, 11)

#: ``rhd_pose = stb_pose[STB_TO_RHD]``. STB orders palm, then little, ring,
#: middle, index, thumb, each from MCP to tip; RHD goes thumb..little, tip to root.
STB_TO_RHD: tuple[int, ...] = (0,) + tuple(
    stb_finger_start + 3 - k
    for stb_finger_start in (17, 13, 9, 5, 1)  # thumb, index, middle, ring, little in STB
    for k in range(4)
)


def bone_scale(xyz: np.ndarray) -> np.ndarray:
    """Length of bone 12 -> 11 for (..., 21, 3) joints."""
    a, b = SCALE_BONE
    return np.linalg.norm(xyz[..., a, :] - xyz[..., b, :], axis=-1)
