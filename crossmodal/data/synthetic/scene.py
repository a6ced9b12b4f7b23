"""One synthetic frame: sample a hand and a camera, ray-cast, shade, label in RHD's conventions.

``render_frame(seed, split, index)`` depends only on its three arguments: every
random number of a frame comes from one generator seeded with
``SeedSequence([seed, split_id, index])``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from crossmodal.data.joints import NUM_JOINTS
from crossmodal.data.synthetic.backgrounds import random_background
from crossmodal.data.synthetic.mesh import FOREARM_PART, NUM_PARTS, HandMesh, build_hand_mesh, mirror
from crossmodal.data.synthetic.render import (
    IMAGE_SIZE,
    HandRaycaster,
    Lighting,
    project,
    sample_lighting,
    shade,
)
from crossmodal.data.synthetic.skeleton import (
    HandPose,
    HandShape,
    forward_kinematics,
    sample_pose,
    sample_shape,
)
from crossmodal.errors import ConfigError

#: Split folder names and the id mixed into each frame's seed.
SPLITS = {"training": 0, "evaluation": 1}
SIDES = ("left", "right")
#: First mask label of each hand's 16 parts (RHD: 2-17 left, 18-33 right); 1 = person.
SIDE_LABEL_BASE = {"left": 2, "right": 18}
PERSON_LABEL = 1
#: Hand-centre depth range, metres.
DEPTH_RANGE = (0.3, 0.8)

#: Skin albedos (sRGB), light to dark; a hand's tone is a random blend of two neighbours.
SKIN_TONES = np.array(
    [[250, 221, 200], [236, 192, 164], [222, 170, 135], [196, 140, 105], [160, 106, 75], [118, 76, 52], [84, 54, 38]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Scene:
    """Everything geometric about one frame; appearance is sampled at render time."""

    side: str  # "left" or "right": the rendered hand
    shape: HandShape
    pose: HandPose
    rotation: np.ndarray  # (3, 3) hand frame -> camera frame (a proper rotation)
    translation: np.ndarray  # (3,) camera-frame position of the wrist
    K: np.ndarray  # (3, 3)
    forearm_length: float
    other_xyz: np.ndarray  # (21, 3) the other hand's keypoints, in front of the camera, out of view


@dataclass(frozen=True)
class SynthFrame:
    """One rendered frame in RHD's conventions (see ``crossmodal.data.rhd``)."""

    color: np.ndarray  # (320, 320, 3) uint8 RGB
    depth_m: np.ndarray  # (320, 320) float32 z-depth in metres, 0 = background
    mask: np.ndarray  # (320, 320) uint8 RHD labels
    xyz: np.ndarray  # (42, 3) float32 metres, camera frame; 0-20 left, 21-41 right
    uv_vis: np.ndarray  # (42, 3) float32: u, v = projection of xyz; visible 1/0
    K: np.ndarray  # (3, 3) float32
    hand_side: str  # the rendered hand
    joint_tolerance: np.ndarray  # (21,) float32: how far (m) the rendered hand's joints sit under their surface
    bone_segments: np.ndarray  # (15, 2, 3) float32 capsule centres of the rendered hand's bones, camera frame
    bone_radii: np.ndarray  # (15, 2) float32 capsule radii at those centres
    hand_scale: float  # size relative to the reference adult hand
    timings: dict[str, float] = field(default_factory=dict, compare=False)  # seconds per stage


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator behind frame ``index`` of ``split``: a function of the three values only."""
    if split not in SPLITS:
        raise ConfigError(f"synthetic split {split!r} is not one of {', '.join(SPLITS)}")
    if seed < 0 or index < 0:
        raise ConfigError(f"synthetic seed and frame index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index)]))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly from SO(3) (normalised Gaussian quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def hand_frame_mesh(side: str, shape: HandShape, pose: HandPose, forearm_length: float) -> HandMesh:
    """The posed hand in its own frame; left hands are the mirror image of right ones."""
    mesh = build_hand_mesh(shape, forward_kinematics(shape, pose), forearm_length)
    return mirror(mesh) if side == "left" else mesh


def sample_intrinsics(rng: np.random.Generator) -> np.ndarray:
    """RHD-like pinhole camera: 320 px square image, focal length 250-330 px, centred."""
    f = rng.uniform(250.0, 330.0)
    c = IMAGE_SIZE / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def _place_hand(rng: np.random.Generator, mesh: HandMesh, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random rotation and translation that keep the hand in view and the forearm behind it.

    Rejection sampling: uniform viewpoints, except that a forearm pointing at the
    camera (which would hide the hand behind the arm) is redrawn, and so is any
    placement that puts part of the hand (the forearm may leave) outside the image.
    """
    hand_vertices = mesh.vertices[: mesh.hand_vertex_count]
    centre = mesh.joints.mean(axis=0)
    forearm_dir = mesh.vertices[-1] - mesh.joints[0]  # the last vertex is the forearm's far pole
    forearm_dir /= np.linalg.norm(forearm_dir)
    k_inv = np.linalg.inv(K)
    size = IMAGE_SIZE
    rotation, translation = np.eye(3), np.array([0.0, 0.0, DEPTH_RANGE[1]]) - centre
    for attempt in range(200):
        r = random_rotation(rng)
        # Later attempts move the hand towards the image centre and away from the camera.
        spread = 0.3 * (1.0 - attempt / 200.0)
        uc, vc = rng.uniform(0.5 - spread, 0.5 + spread, size=2) * size
        z = rng.uniform(DEPTH_RANGE[0] + 0.4 * attempt / 200.0, DEPTH_RANGE[1])
        centre_cam = z * (k_inv @ np.array([uc, vc, 1.0]))
        t = centre_cam - r @ centre
        rotation, translation = r, t
        if (r @ forearm_dir) @ (-centre_cam / np.linalg.norm(centre_cam)) > 0.4:
            continue
        if np.min(mesh.vertices @ r[2] + t[2]) < 0.05:
            continue
        uv = project(hand_vertices @ r.T + t, K)
        if np.all((uv >= 0.0) & (uv <= size - 1.0)):
            break
    return rotation, translation


def _other_hand(rng: np.random.Generator, side: str, K: np.ndarray) -> np.ndarray:
    """Keypoints of the hand that is not rendered: a full random hand placed beside the image.

    It stays in front of the camera (finite, sane projections) with every keypoint at
    least 16 px outside the left or right image border, and is marked invisible.
    """
    shape = sample_shape(rng)
    joints = forward_kinematics(shape, sample_pose(rng)).joints
    if side == "left":
        joints = joints * np.array([-1.0, 1.0, 1.0])
    joints = joints @ random_rotation(rng).T
    z = rng.uniform(*DEPTH_RANGE)
    y = (rng.uniform(0.0, IMAGE_SIZE) - K[1, 2]) * z / K[1, 1]
    joints = joints - joints.mean(axis=0) + np.array([0.0, y, z])
    margin = 16.0
    if rng.uniform() < 0.5:
        dx = np.max((IMAGE_SIZE + margin - K[0, 2]) * joints[:, 2] / K[0, 0] - joints[:, 0])
    else:
        dx = np.min((-margin - K[0, 2]) * joints[:, 2] / K[0, 0] - joints[:, 0])
    return joints + np.array([dx, 0.0, 0.0])


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a hand (side, bone lengths, pose), a camera and a placement from ``rng``."""
    return _sample_scene(rng)[0]


def _sample_scene(rng: np.random.Generator) -> tuple[Scene, HandMesh]:
    """``sample_scene`` plus the hand-frame mesh it built, so rendering need not rebuild it."""
    side = SIDES[int(rng.integers(0, 2))]
    shape = sample_shape(rng)
    pose = sample_pose(rng)
    forearm_length = float(rng.uniform(0.10, 0.16))
    K = sample_intrinsics(rng)
    mesh = hand_frame_mesh(side, shape, pose, forearm_length)
    rotation, translation = _place_hand(rng, mesh, K)
    other = _other_hand(rng, "right" if side == "left" else "left", K)
    return Scene(side, shape, pose, rotation, translation, K, forearm_length, other), mesh


def _skin_albedo(rng: np.random.Generator) -> np.ndarray:
    i = int(rng.integers(0, len(SKIN_TONES) - 1))
    tone = SKIN_TONES[i] + rng.uniform() * (SKIN_TONES[i + 1] - SKIN_TONES[i])
    return np.clip(tone * rng.uniform(0.92, 1.08, size=3), 0, 255)


def _part_to_label(side: str) -> np.ndarray:
    """Lookup from part number + 1 (0 = miss) to RHD mask label."""
    lut = np.zeros(NUM_PARTS + 1, np.uint8)
    lut[1 : FOREARM_PART + 1] = SIDE_LABEL_BASE[side] + np.arange(FOREARM_PART)
    lut[FOREARM_PART + 1] = PERSON_LABEL
    return lut


def _add_sensor_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Zero-mean, near-Gaussian pixel noise of a random strength (sigma 1-5 grey levels).

    Each pixel's noise is the sum of the two 4-bit halves of one random byte (a
    triangular distribution on -15..15, sigma 6.5), scaled through a lookup table:
    Gaussian floats for 300k values would cost more than the ray casting.
    """
    sigma = rng.uniform(1.0, 5.0)
    byte = np.arange(256)
    table = np.rint(((byte & 15) + (byte >> 4) - 15) * (sigma / 6.5)).astype(np.int16)
    noise = table[np.frombuffer(rng.bytes(image.size), np.uint8)].reshape(image.shape)
    noise += image
    return np.clip(noise, 0, 255).astype(np.uint8)


def render_scene(
    scene: Scene,
    rng: np.random.Generator,
    stages: Optional[dict[str, float]] = None,
    hand_mesh: Optional[HandMesh] = None,
) -> SynthFrame:
    """Ray-cast and shade ``scene``; appearance (skin, light, background, noise) comes from ``rng``.

    ``stages`` accumulates seconds per stage; ``hand_mesh`` is the scene's hand-frame
    mesh when the caller already has it (``hand_frame_mesh``).
    """
    timings: dict[str, float] = defaultdict(float) if stages is None else stages
    t0 = time.perf_counter()
    if hand_mesh is None:
        hand_mesh = hand_frame_mesh(scene.side, scene.shape, scene.pose, scene.forearm_length)
    mesh = hand_mesh.transformed(scene.rotation, scene.translation)
    t1 = time.perf_counter()
    timings["mesh"] += t1 - t0

    caster = HandRaycaster(mesh)
    hits = caster.render(scene.K)
    visible = caster.joint_visibility(hits, scene.K)
    t2 = time.perf_counter()
    timings["raycast"] += t2 - t1

    skin = _skin_albedo(rng)
    sleeve = rng.integers(0, 256, size=3).astype(np.float64) if rng.uniform() < 0.5 else skin
    light: Lighting = sample_lighting(rng)
    part = hits.part[hits.hit_rows, hits.hit_cols]
    is_forearm = (part == FOREARM_PART)[:, None]
    # Palms are lighter and pinker than the back of the hand: blend by how much the
    # surface faces the palmar side.
    palmar = scene.rotation @ np.array([0.0, 0.0, 1.0])
    palm_tone = skin + (np.array([255.0, 215.0, 200.0]) - skin) * 0.35
    w = np.clip(hits.normal @ palmar, 0.0, 1.0)[:, None] * 0.6
    albedo = np.where(is_forearm, sleeve, skin * (1.0 - w) + palm_tone * w)
    shaded = shade(albedo, hits.normal.astype(np.float64), hits.view.astype(np.float64), light)
    image = random_background(rng)
    image[hits.hit_rows, hits.hit_cols] = np.clip(np.rint(shaded), 0, 255).astype(np.uint8)
    color = _add_sensor_noise(rng, image)
    t3 = time.perf_counter()
    timings["shading"] += t3 - t2

    mask = _part_to_label(scene.side)[hits.part + 1]
    xyz = np.zeros((2 * NUM_JOINTS, 3))
    vis = np.zeros(2 * NUM_JOINTS)
    own = slice(0, NUM_JOINTS) if scene.side == "left" else slice(NUM_JOINTS, 2 * NUM_JOINTS)
    other = slice(NUM_JOINTS, 2 * NUM_JOINTS) if scene.side == "left" else slice(0, NUM_JOINTS)
    xyz[own], xyz[other] = mesh.joints, scene.other_xyz
    xyz = xyz.astype(np.float32)
    uv = project(xyz.astype(np.float64), scene.K.astype(np.float32).astype(np.float64))
    vis[own] = visible
    return SynthFrame(
        color=color,
        depth_m=hits.depth,
        mask=mask,
        xyz=xyz,
        uv_vis=np.concatenate([uv, vis[:, None]], axis=1).astype(np.float32),
        K=scene.K.astype(np.float32),
        hand_side=scene.side,
        joint_tolerance=mesh.joint_tolerance.astype(np.float32),
        bone_segments=mesh.bone_segments.astype(np.float32),
        bone_radii=mesh.bone_radii.astype(np.float32),
        hand_scale=float(scene.shape.scale),
        timings=dict(timings),
    )


def render_frame(seed: int, split: str, index: int) -> SynthFrame:
    """Frame ``index`` of ``split`` ("training" or "evaluation") for ``seed``."""
    stages: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    rng = frame_rng(seed, split, index)
    scene, hand_mesh = _sample_scene(rng)
    stages["skeleton"] += time.perf_counter() - t0
    return render_scene(scene, rng, stages, hand_mesh)
