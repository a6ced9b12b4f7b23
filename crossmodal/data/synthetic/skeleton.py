"""A 21-joint kinematic right hand: anatomical proportions, joint limits, pose sampling.

Everything here lives in the *hand frame* of a right hand, in metres:

    origin  the wrist keypoint (joint 0)
    +x      radial (towards the thumb)
    +y      distal (wrist -> middle-finger MCP)
    +z      palmar (out of the palm)

(x, y, z) is right-handed for a right hand. A left hand is the mirror image
``x -> -x``, applied after meshing (``mesh.mirror``), so every quantity below is
sampled once, for a right hand.

Joints follow RHD's order (``crossmodal.data.joints``): 0 wrist, then thumb,
index, middle, ring, little, each tip first and root last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossmodal.data.joints import NUM_JOINTS

# --- Reference adult hand (scale 1.0: ~18.5 cm wrist-to-middle-tip), metres. ----------------
# Proportions follow published hand anthropometry (phalanx lengths of an average adult
# hand); per-hand variation is added in ``sample_shape``.

#: MCP joint centres of index, middle, ring, little (the middle MCP defines +y).
REF_MCP = np.array(
    [[0.0215, 0.0810, 0.0], [0.0, 0.0840, 0.0], [-0.0190, 0.0790, 0.0], [-0.0360, 0.0710, 0.0]]
)
#: Proximal, middle, distal (to the fingertip) phalanx lengths of index .. little.
REF_PHALANX = np.array(
    [[0.0400, 0.0240, 0.0210], [0.0450, 0.0280, 0.0230], [0.0420, 0.0270, 0.0220], [0.0330, 0.0190, 0.0200]]
)
#: Soft-tissue radius at MCP, PIP, DIP, tip of index .. little.
REF_FINGER_RADIUS = np.array([0.0095, 0.0098, 0.0092, 0.0082])[:, None] * np.array([1.0, 0.88, 0.79, 0.70])
#: Thumb CMC (root joint 4), metacarpal / proximal / distal lengths, radii at CMC, MCP, IP, tip.
REF_THUMB_CMC = np.array([0.0200, 0.0250, 0.0100])
REF_THUMB_LENGTH = np.array([0.0450, 0.0320, 0.0270])
REF_THUMB_RADIUS = np.array([0.0145, 0.0105, 0.0095, 0.0080])
#: Rest direction of each finger in the palm plane (degrees from +y towards +x).
REST_SPLAY_DEG = np.array([6.0, 0.0, -6.0, -13.0])
#: How strongly each finger follows the spread synergy (degrees at full spread).
SPREAD_GAIN_DEG = np.array([12.0, 2.0, -8.0, -18.0])

# --- Joint limits, degrees (flexion positive towards the palm). ---------------------------
FINGER_FLEX_LIMITS = np.array([[-25.0, 90.0], [0.0, 110.0], [-5.0, 85.0]])  # MCP, PIP, DIP
FINGER_ABD_LIMIT = 25.0  # MCP abduction around the rest direction, either way
THUMB_LIMITS = np.array([[-20.0, 55.0], [-15.0, 45.0], [-10.0, 60.0], [-15.0, 80.0]])  # CMC flex, CMC abd, MCP, IP
WRIST_LIMITS = np.array([[-70.0, 70.0], [-25.0, 35.0]])  # flexion, ulnar/radial deviation

#: RHD index of each finger's joints from root to tip: thumb CMC, MCP, IP, tip = 4, 3, 2, 1.
FINGER_JOINTS = tuple(tuple(base + 3 - k for k in range(4)) for base in (1, 5, 9, 13, 17))


@dataclass(frozen=True)
class HandShape:
    """Per-hand bone lengths and radii of a right hand in the hand frame (metres)."""

    scale: float  # overall size relative to the reference hand
    mcp: np.ndarray  # (4, 3) MCP centres of index .. little
    phalanx: np.ndarray  # (4, 3) proximal, middle, distal lengths
    finger_radius: np.ndarray  # (4, 4) radius at MCP, PIP, DIP, tip
    thumb_cmc: np.ndarray  # (3,)
    thumb_length: np.ndarray  # (3,) metacarpal, proximal, distal
    thumb_radius: np.ndarray  # (4,) radius at CMC, MCP, IP, tip
    palm_radius: float  # half-thickness of the palm at the knuckles


@dataclass(frozen=True)
class HandPose:
    """Joint angles in degrees; ``clip`` keeps them inside the biomechanical limits."""

    finger_flex: np.ndarray  # (4, 3) MCP, PIP, DIP flexion of index .. little
    finger_abd: np.ndarray  # (4,) MCP abduction relative to the rest splay (+ = radial)
    thumb: np.ndarray  # (4,) CMC flexion, CMC abduction, MCP flexion, IP flexion
    wrist: np.ndarray  # (2,) flexion, deviation: orientation of the forearm stub
    cupping: float  # 0..1 palmar arch of the ring and little metacarpals

    def clip(self) -> "HandPose":
        return HandPose(
            finger_flex=np.clip(self.finger_flex, FINGER_FLEX_LIMITS[:, 0], FINGER_FLEX_LIMITS[:, 1]),
            finger_abd=np.clip(self.finger_abd, -FINGER_ABD_LIMIT, FINGER_ABD_LIMIT),
            thumb=np.clip(self.thumb, THUMB_LIMITS[:, 0], THUMB_LIMITS[:, 1]),
            wrist=np.clip(self.wrist, WRIST_LIMITS[:, 0], WRIST_LIMITS[:, 1]),
            cupping=float(np.clip(self.cupping, 0.0, 1.0)),
        )


@dataclass(frozen=True)
class Skeleton:
    """Forward-kinematics result in the right-hand frame."""

    joints: np.ndarray  # (21, 3) RHD order
    frames: np.ndarray  # (21, 3, 3) rows: lateral, distal, palmar axes of the bone ending at each joint
    forearm_axes: np.ndarray  # (3, 3) rows: width, proximal direction, thickness of the forearm


def reference_shape(scale: float = 1.0) -> HandShape:
    """The reference adult hand scaled uniformly (used by tests and crafted scenes)."""
    return HandShape(
        scale=scale,
        mcp=REF_MCP * scale,
        phalanx=REF_PHALANX * scale,
        finger_radius=REF_FINGER_RADIUS * scale,
        thumb_cmc=REF_THUMB_CMC * scale,
        thumb_length=REF_THUMB_LENGTH * scale,
        thumb_radius=REF_THUMB_RADIUS * scale,
        palm_radius=0.0115 * scale,
    )


def sample_shape(rng: np.random.Generator) -> HandShape:
    """A random adult hand: global scale 0.88-1.10 (hand length ~16-20.5 cm) and +-4% per bone."""
    scale = float(rng.uniform(0.88, 1.10))
    ref = reference_shape(scale)
    # Finger lengths co-vary (long-fingered hands), individual bones vary a little on top.
    finger_factor = rng.uniform(0.96, 1.04)
    width = rng.uniform(0.93, 1.07)  # slender vs broad hands: radii and MCP spacing
    mcp = ref.mcp * np.array([width, 1.0, 1.0]) * rng.uniform(0.97, 1.03, size=(4, 1))
    mcp[1, 0] = 0.0  # the middle MCP stays on +y by definition of the frame
    return HandShape(
        scale=scale,
        mcp=mcp,
        phalanx=ref.phalanx * finger_factor * rng.uniform(0.96, 1.04, size=(4, 3)),
        finger_radius=ref.finger_radius * width * rng.uniform(0.96, 1.04),
        thumb_cmc=ref.thumb_cmc * np.array([width, 1.0, 1.0]),
        thumb_length=ref.thumb_length * finger_factor * rng.uniform(0.96, 1.04, size=3),
        thumb_radius=ref.thumb_radius * width * rng.uniform(0.96, 1.04),
        palm_radius=ref.palm_radius * width,
    )


def sample_pose(rng: np.random.Generator) -> HandPose:
    """A random hand pose from grasp-like synergies plus per-joint noise, clipped to the limits.

    One "closure" value drives all fingers (open hand .. fist), each finger deviates
    from it, and a few poses single fingers out (pointing, counting) so that every
    joint is seen both straight and bent.
    """
    closure = rng.uniform(0.0, 1.0)
    per_finger = np.clip(closure + rng.normal(0.0, 0.2, size=4), 0.0, 1.0)
    style = rng.uniform()
    if style < 0.15:  # pointing: index straight
        per_finger[0] = rng.uniform(0.0, 0.15)
    elif style < 0.30:  # independent fingers (counting gestures)
        per_finger = rng.uniform(0.0, 1.0, size=4) ** rng.choice([0.5, 2.0])
    mcp = -10.0 + 95.0 * per_finger + rng.normal(0.0, 8.0, size=4)
    pip = 105.0 * per_finger**0.8 + rng.normal(0.0, 8.0, size=4)
    dip = 0.67 * pip + rng.normal(0.0, 6.0, size=4)  # DIP follows PIP (tendon coupling)
    spread = rng.uniform(-0.2, 1.0) * (1.0 - 0.8 * closure)  # fingers close together when flexed
    thumb_closure = np.clip(closure + rng.normal(0.0, 0.25), 0.0, 1.0)
    thumb = np.array(
        [
            -10.0 + 55.0 * thumb_closure + rng.normal(0.0, 8.0),
            rng.uniform(-10.0, 40.0),
            50.0 * thumb_closure + rng.normal(0.0, 8.0),
            70.0 * thumb_closure + rng.normal(0.0, 10.0),
        ]
    )
    return HandPose(
        finger_flex=np.stack([mcp, pip, dip], axis=1),
        finger_abd=SPREAD_GAIN_DEG * spread + rng.normal(0.0, 3.0, size=4),
        thumb=thumb,
        wrist=np.array([rng.normal(0.0, 25.0), rng.normal(0.0, 10.0)]),
        cupping=float(rng.uniform(0.0, 1.0) * (0.3 + 0.7 * closure)),
    ).clip()


def fist_pose() -> HandPose:
    """A tight fist with the thumb across the fingers (used by the visibility test)."""
    return HandPose(
        finger_flex=np.tile([85.0, 105.0, 70.0], (4, 1)),
        finger_abd=np.zeros(4),
        thumb=np.array([40.0, 10.0, 50.0, 60.0]),
        wrist=np.zeros(2),
        cupping=0.8,
    ).clip()


def open_pose() -> HandPose:
    """A flat open hand, fingers slightly spread."""
    return HandPose(
        finger_flex=np.zeros((4, 3)),
        finger_abd=SPREAD_GAIN_DEG * 0.5,
        thumb=np.array([0.0, 0.0, 0.0, 0.0]),
        wrist=np.zeros(2),
        cupping=0.0,
    ).clip()


def _rotate_towards(d: np.ndarray, n: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the orthonormal pair (d, n) in their plane by ``degrees`` (d moves towards n)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return c * d + s * n, c * n - s * d


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross costs ~10x more on single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _thumb_rest_axes() -> tuple[np.ndarray, np.ndarray]:
    """Rest direction of the thumb metacarpal and the direction it flexes towards.

    The thumb sits radially, points distal-radial and out of the palm plane, and is
    rotated against the fingers so that flexing it sweeps it across the palm
    (towards the little finger and palmar): this is what makes opposition possible.
    """
    distal = np.array([0.52, 0.76, 0.30])
    distal /= np.linalg.norm(distal)
    across = np.array([-1.0, 0.15, 0.55])
    across -= distal * (across @ distal)
    return distal, across / np.linalg.norm(across)


def forward_kinematics(shape: HandShape, pose: HandPose) -> Skeleton:
    """Joint positions (21, 3) of a right hand and the local axes of every bone."""
    joints = np.zeros((NUM_JOINTS, 3))
    frames = np.zeros((NUM_JOINTS, 3, 3))
    frames[0] = np.eye(3)

    mcp = shape.mcp.copy()
    # Palmar arch: the ring and little metacarpals fold towards the palm when cupping.
    mcp[2, 2] += 0.004 * shape.scale * pose.cupping
    mcp[3, 2] += 0.009 * shape.scale * pose.cupping
    palmar = np.array([0.0, 0.0, 1.0])
    for f in range(4):
        splay = np.deg2rad(REST_SPLAY_DEG[f] + pose.finger_abd[f])
        distal = np.array([np.sin(splay), np.cos(splay), 0.0])
        lateral = _cross(distal, palmar)
        n = palmar.copy()
        chain = FINGER_JOINTS[f + 1]
        joints[chain[0]] = mcp[f]
        frames[chain[0]] = lateral, distal, n
        for k in range(3):
            distal, n = _rotate_towards(distal, n, pose.finger_flex[f, k])
            joints[chain[k + 1]] = joints[chain[k]] + shape.phalanx[f, k] * distal
            frames[chain[k + 1]] = lateral, distal, n

    # Thumb: CMC has two degrees of freedom (flexion across the palm, abduction away from
    # it) and rolls about its own axis as it flexes (opposition); MCP and IP only flex.
    distal, across = _thumb_rest_axes()
    lateral = _cross(distal, across)
    cmc_flex, cmc_abd, mcp_flex, ip_flex = pose.thumb
    distal, lateral = _rotate_towards(distal, lateral, cmc_abd)
    distal, across = _rotate_towards(distal, across, cmc_flex)
    lateral, across = _rotate_towards(lateral, across, 0.5 * cmc_flex)  # axial roll
    chain = FINGER_JOINTS[0]
    joints[chain[0]] = shape.thumb_cmc
    frames[chain[0]] = lateral, distal, across
    for k, flex in enumerate((0.0, mcp_flex, ip_flex)):
        distal, across = _rotate_towards(distal, across, flex)
        joints[chain[k + 1]] = joints[chain[k]] + shape.thumb_length[k] * distal
        frames[chain[k + 1]] = lateral, distal, across

    # Forearm: proximal from the wrist, tilted by wrist flexion (about x) and deviation (about z).
    width, proximal, thickness = np.eye(3)[0], -np.eye(3)[1], np.eye(3)[2]
    proximal, thickness = _rotate_towards(proximal, thickness, pose.wrist[0])
    proximal, width = _rotate_towards(proximal, width, pose.wrist[1])
    return Skeleton(joints=joints, frames=frames, forearm_axes=np.stack([width, proximal, thickness]))
