"""Preprocessing of one frame: crop, view correction, cloud, normalisation.

The frames here are ray-cast from a sphere-swept skeleton (exact depth, exact mask)
so that geometric claims can be checked to the millimetre. ``render_hand_frame``
and ``FrameList`` are reused by the cache and datamodule tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crossmodal.config import PreprocessConfig
from crossmodal.data import geometry
from crossmodal.data.joints import BONES, NUM_JOINTS, bone_scale
from crossmodal.data.pointcloud import distance_to_skeleton
from crossmodal.data.preprocess import preprocess_frame
from crossmodal.errors import EmptyHandError

IMAGE_SIZE = 200
K_COLOR = np.array([[220.0, 0.0, 99.5], [0.0, 220.0, 99.5], [0.0, 0.0, 1.0]])
WALL_DEPTH = 1.5
FINGER_RADIUS = 0.008
PALM_RADIUS = 0.012


def hand_skeleton(rng: np.random.Generator, offset: tuple[float, float, float] = (0.07, -0.04, 0.45)) -> np.ndarray:
    """(21, 3) joints of an open hand in RHD order, randomly turned, centred at ``offset`` (camera frame, metres)."""
    # Finger roots and directions in a hand frame (x across the palm, -y towards the fingers).
    roots = {"thumb": (0.025, -0.025), "index": (0.025, -0.085), "middle": (0.005, -0.09), "ring": (-0.015, -0.085), "little": (-0.033, -0.075)}
    directions = {"thumb": (0.7, -0.7), "index": (0.15, -1.0), "middle": (0.0, -1.0), "ring": (-0.12, -1.0), "little": (-0.25, -1.0)}
    lengths = {"thumb": (0.035, 0.03, 0.025), "index": (0.04, 0.025, 0.02), "middle": (0.045, 0.028, 0.022), "ring": (0.042, 0.026, 0.021), "little": (0.033, 0.02, 0.018)}
    joints = np.zeros((NUM_JOINTS, 3))
    for f, finger in enumerate(("thumb", "index", "middle", "ring", "little")):
        base = 1 + 4 * f
        d = np.array([*directions[finger], rng.uniform(-0.3, 0.3)])
        d /= np.linalg.norm(d)
        position = np.array([*roots[finger], 0.0])
        joints[base + 3] = position
        for k, length in enumerate(lengths[finger]):
            position = position + length * d
            joints[base + 2 - k] = position
    tilt = geometry.axis_angle_to_matrix(np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 0.0]))
    spin = geometry.axis_angle_to_matrix(np.array([0.0, 0.0, rng.uniform(-np.pi, np.pi)]))
    # Turned about the joints' centroid, then moved off the optical axis by ``offset``.
    return (joints - joints.mean(axis=0)) @ (spin @ tilt).T + np.asarray(offset)


def skeleton_spheres(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sphere centres, radii and the bone each belongs to, swept along every bone."""
    centres, radii, bone_ids = [], [], []
    for b, (parent, child) in enumerate(BONES):
        radius = PALM_RADIUS if parent == 0 else FINGER_RADIUS
        for t in np.linspace(0.0, 1.0, 12):
            centres.append(joints[parent] + t * (joints[child] - joints[parent]))
            radii.append(radius)
            bone_ids.append(b)
    return np.array(centres), np.array(radii), np.array(bone_ids)


def raycast_depth(joints: np.ndarray, K: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth (z, metres; wall behind) and the bone id of each pixel (-1 for the wall)."""
    centres, radii, bone_ids = skeleton_spheres(joints)
    rows, cols = np.mgrid[0:size, 0:size]
    rays = np.stack([cols.ravel(), rows.ravel(), np.ones(size * size)], -1) @ np.linalg.inv(K).T  # z = 1
    dc = rays @ centres.T
    dd = (rays**2).sum(-1, keepdims=True)
    disc = dc**2 - dd * ((centres**2).sum(-1) - radii**2)
    t = np.where(disc >= 0, (dc - np.sqrt(np.maximum(disc, 0))) / dd, np.inf)
    nearest = t.argmin(axis=1)
    z = t[np.arange(len(t)), nearest]
    hit = np.isfinite(z)
    depth = np.where(hit, z, WALL_DEPTH).reshape(size, size).astype(np.float32)
    bone = np.where(hit, bone_ids[nearest], -1).reshape(size, size)
    return depth, bone


def render_hand_frame(seed: int = 0, stray_pixels: int = 6, index: int = 0, empty: bool = False) -> dict:
    """A reader-contract frame (right hand) with exact depth and mask.

    ``stray_pixels`` wall pixels next to the hand are labelled as hand, as mask
    bleed at silhouettes would: the cloud's outlier removal must drop them.
    """
    rng = np.random.default_rng(seed)
    xyz = hand_skeleton(rng)
    depth, bone = raycast_depth(xyz, K_COLOR, IMAGE_SIZE)
    mask = np.where(bone >= 0, 18 + bone % 16, 0).astype(np.uint8)
    if stray_pixels and not empty:
        rows, cols = np.nonzero(mask)
        for k in range(stray_pixels):
            r, c = rows[k * 7 % len(rows)], cols.min() - 1 - k % 2
            mask[r, max(c, 0)] = 18
    if empty:
        mask[:] = 0
    image = rng.integers(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    shade = np.clip(255 * (1.2 - depth / xyz[:, 2].max()), 60, 255)
    skin = np.stack([shade, shade * 0.75, shade * 0.6], -1).astype(np.uint8)
    image = np.where((bone >= 0)[..., None], skin, image)
    return {
        "image": image,
        "depth": depth,
        "mask": mask,
        "xyz": xyz.astype(np.float32),
        "uv": geometry.project(xyz, K_COLOR).astype(np.float32),
        "visible": np.ones(NUM_JOINTS, dtype=bool),
        "K": K_COLOR.astype(np.float32),
        "K_depth": K_COLOR.astype(np.float32),
        "depth_to_color": np.eye(4, dtype=np.float32),
        "hand_side": "right",
        "index": index,
    }


def render_maskless_frame(seed: int = 0) -> dict:
    """STB-like frame: no mask, depth from a second camera with its own intrinsics and pose."""
    frame = render_hand_frame(seed, stray_pixels=0)
    K_depth = np.array([[180.0, 0.0, 102.0], [0.0, 178.0, 97.0], [0.0, 0.0, 1.0]])
    depth_to_color = np.eye(4)
    depth_to_color[:3, :3] = geometry.axis_angle_to_matrix(np.array([0.01, -0.02, 0.005]))
    depth_to_color[:3, 3] = [-0.025, 0.001, -0.002]
    joints_depth = geometry.transform_points(frame["xyz"], np.linalg.inv(depth_to_color))
    frame["depth"], _ = raycast_depth(joints_depth, K_depth, IMAGE_SIZE)
    frame.update(mask=None, K_depth=K_depth.astype(np.float32), depth_to_color=depth_to_color.astype(np.float32), hand_side="left")
    return frame


class FrameList:
    """A dataset reader over frames held in memory (the reader contract's ``ds[i]``)."""

    TRAIN_SPLIT = "training"
    TEST_SPLIT = "evaluation"

    def __init__(self, frames: list[dict], split: str = "training") -> None:
        self.frames = frames
        self.split = split
        self.root = "memory"

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self.frames):
            raise IndexError(i)
        return self.frames[i]


def unnormalised(sample: dict, key: str) -> np.ndarray:
    return sample[key].astype(np.float64) * float(sample["scale"]) + sample["root"]


CFG = PreprocessConfig(crop_size=64, pool_size=256)


@pytest.mark.parametrize("view_correction, orient", [(True, False), (False, False), (True, True)])
def test_uv_is_projection_of_corrected_joints(view_correction: bool, orient: bool) -> None:
    cfg = dataclasses.replace(CFG, view_correction=view_correction, orient=orient)
    frame = render_hand_frame(seed=1)
    sample = preprocess_frame(frame, cfg)
    corrected = unnormalised(sample, "pose")
    np.testing.assert_allclose(geometry.project(corrected, sample["K_crop"]), sample["uv"], atol=1e-3)
    # The same keypoints via the image homography H = K_crop R K^-1 (the path the pixels took).
    H = sample["K_crop"].astype(np.float64) @ sample["rotation"] @ np.linalg.inv(frame["K"])
    np.testing.assert_allclose(geometry.apply_homography(H, frame["uv"]), sample["uv"], atol=1e-3)
    # The rotation is the only change to the 3D pose: lengths and the scale are preserved.
    np.testing.assert_allclose(corrected, frame["xyz"] @ sample["rotation"].T.astype(np.float64), atol=1e-5)
    np.testing.assert_allclose(sample["scale"], bone_scale(frame["xyz"]), rtol=1e-6)
    np.testing.assert_allclose(sample["pose"][CFG.root_joint], 0.0, atol=1e-6)
    assert np.isclose(np.linalg.norm(sample["pose"][12] - sample["pose"][11]), 1.0, atol=1e-5)
    if not view_correction:
        np.testing.assert_array_equal(sample["rotation"], np.eye(3, dtype=np.float32))


@pytest.mark.parametrize("view_correction, orient", [(True, False), (False, False), (True, True)])
def test_image_content_follows_keypoints(view_correction: bool, orient: bool) -> None:
    frame = render_hand_frame(seed=2)
    u, v = np.rint(frame["uv"][9]).astype(int)  # middle fingertip
    frame["image"][v - 1 : v + 2, u - 1 : u + 2] = 255
    frame["image"][..., 2] = np.minimum(frame["image"][..., 2], 200)  # only the dot is white
    sample = preprocess_frame(frame, dataclasses.replace(CFG, crop_size=128, view_correction=view_correction, orient=orient))
    whiteness = sample["image"].astype(int).min(axis=-1)
    peak = np.unravel_index(np.argmax(whiteness), whiteness.shape)
    dot_uv = np.array([u, v], dtype=np.float64)  # the dot's centre pixel
    H = sample["K_crop"].astype(np.float64) @ sample["rotation"] @ np.linalg.inv(frame["K"])
    expected = geometry.apply_homography(H, dot_uv)
    assert np.hypot(peak[1] - expected[0], peak[0] - expected[1]) <= 1.5


def test_view_correction_centres_the_hand() -> None:
    frame = render_hand_frame(seed=3)
    plain = preprocess_frame(frame, dataclasses.replace(CFG, view_correction=False))
    corrected = preprocess_frame(frame, CFG)
    centre = (CFG.crop_size - 1) / 2.0
    # The hand (mask box) centre lies on the optical axis, which meets the crop at its centre.
    rows, cols = np.nonzero(frame["mask"] >= 18)
    box_centre = np.array([(cols.min() + cols.max()) / 2.0, (rows.min() + rows.max()) / 2.0, 1.0])
    ray = corrected["rotation"] @ np.linalg.inv(frame["K"]) @ box_centre
    np.testing.assert_allclose(ray[:2] / ray[2], 0.0, atol=1e-6)
    np.testing.assert_allclose(corrected["K_crop"][:2, 2], centre)
    # The hand's 3D centroid: far off axis in the camera frame, near it after correction.
    cloud_camera = unnormalised(plain, "cloud")[: plain["cloud_count"]]
    cloud_corrected = unnormalised(corrected, "cloud")[: corrected["cloud_count"]]
    off_axis = lambda c: np.degrees(np.arctan2(np.linalg.norm(c.mean(0)[:2]), c.mean(0)[2]))  # noqa: E731
    assert off_axis(cloud_camera) > 8.0
    assert off_axis(cloud_corrected) < 2.0


def naive_roll_upright(points_uv: np.ndarray) -> np.ndarray:
    """Twin of ``geometry.roll_upright``: the principal axis by eigendecomposition, pointed at the
    half whose points spread more across it, turned onto image-up by the angle between them."""
    d = points_uv - points_uv.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(d.T, bias=True))
    axis = vectors[:, -1]
    along, across = d @ axis, d @ np.array([-axis[1], axis[0]])
    if np.mean(across[along >= 0] ** 2) < np.mean(across[along < 0] ** 2):
        axis = -axis
    angle = -np.pi / 2 - np.arctan2(axis[1], axis[0])
    return geometry.axis_angle_to_matrix(np.array([0.0, 0.0, angle]))


@pytest.mark.parametrize("seed", range(5))
def test_roll_upright_equals_its_naive_twin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # A narrow wrist and palm, and fingers spreading wider beyond them, along a random direction.
    angle = rng.uniform(-np.pi, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-direction[1], direction[0]])
    palm = np.outer(rng.uniform(-30.0, 0.0, 600), direction) + np.outer(rng.uniform(-6.0, 6.0, 600), across)
    fingers = np.outer(rng.uniform(0.0, 25.0, 500), direction) + np.outer(rng.uniform(-12.0, 12.0, 500), across)
    points = np.concatenate([palm, fingers]) + rng.uniform(0, 64, 2)
    R = geometry.roll_upright(points)
    np.testing.assert_allclose(R, naive_roll_upright(points), atol=1e-9)
    # The fingers' direction ends up pointing up the image (-v), and R is a rotation about z.
    np.testing.assert_allclose(R[:2, :2] @ direction, [0.0, -1.0], atol=0.15)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) > 0


def test_an_isotropic_set_is_not_turned() -> None:
    """A square grid or a disc has no long axis: the identity, not an axis picked by rounding (a
    whole-image mask turned 90 degrees apart in onnxruntime and PyTorch before). A set just
    anisotropic enough still turns."""
    v, u = np.mgrid[0:320, 0:320]
    square = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
    np.testing.assert_array_equal(geometry.roll_upright(square), np.eye(3))
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    disc = np.stack([np.cos(angles), np.sin(angles)], 1) * 40.0  # a ring of radius 40
    np.testing.assert_array_equal(geometry.roll_upright(disc + 100.0), np.eye(3))
    stretched = square * np.array([1.0, 1.0 + 1e-3])  # anisotropy 1e-3, a hundred times the threshold
    R = geometry.roll_upright(stretched)
    # The grid is centrally symmetric, so which end of the axis is "ahead" is a rounding tie that
    # another processor's BLAS or cosine may break the other way: the axis is compared up to sign.
    np.testing.assert_allclose(np.abs(R), np.abs(naive_roll_upright(stretched)), atol=1e-9)
    assert np.linalg.det(R) > 0 and not np.allclose(R, np.eye(3))  # its long axis v turned onto image-up


def test_orient_turns_the_hand_upright_and_keeps_the_crop_centred() -> None:
    """The hand's pixels, carried into the oriented crop, have their long axis along v with the
    tail (the fingers) up; the crop stays centred on the hand, which only turned about it."""
    for seed in range(3):
        frame = render_hand_frame(seed=seed)
        plain = preprocess_frame(frame, CFG)
        oriented = preprocess_frame(frame, dataclasses.replace(CFG, orient=True))
        rows, cols = np.nonzero(frame["mask"] >= 18)
        pixels = np.stack([cols, rows], axis=1).astype(np.float64)
        H = oriented["K_crop"].astype(np.float64) @ oriented["rotation"] @ np.linalg.inv(frame["K"])
        carried = geometry.apply_homography(H, pixels)
        np.testing.assert_allclose(geometry.roll_upright(carried), np.eye(3), atol=1e-4)
        # A turn about the view axis: the pose is the plain one rotated about z, and K is unchanged.
        turn = oriented["rotation"].astype(np.float64) @ plain["rotation"].T.astype(np.float64)
        np.testing.assert_allclose(turn[2], [0.0, 0.0, 1.0], atol=1e-5)
        np.testing.assert_allclose(oriented["pose"], plain["pose"] @ turn.T.astype(np.float32), atol=1e-4)
        np.testing.assert_array_equal(oriented["K_crop"], plain["K_crop"])


def test_orient_needs_view_correction_and_hand_pixels() -> None:
    from crossmodal.data.preprocess import crop_rgb
    from crossmodal.errors import ConfigError, DataError

    frame = render_hand_frame(seed=0)
    with pytest.raises(ConfigError, match="view_correction"):
        preprocess_frame(frame, dataclasses.replace(CFG, orient=True, view_correction=False))
    with pytest.raises(DataError, match="hand's pixels"):
        crop_rgb(frame["image"], frame["K"], np.array([100.0, 100.0]), 80.0, dataclasses.replace(CFG, orient=True))


def as_left_hand(frame: dict) -> dict:
    """The same pixels labelled as a left hand (RHD labels 2-17 instead of 18-33)."""
    mask = frame["mask"].copy()
    mask[mask >= 18] -= 16
    return {**frame, "mask": mask, "hand_side": "left"}


@pytest.mark.parametrize("orient", [False, True])
def test_mirrored_left_hand_is_the_mirror_image_of_the_plain_sample(orient: bool) -> None:
    """mirror_left: a left hand's sample is its plain sample seen in a mirror: the crop flipped
    left-right, u -> S - 1 - u, x -> -x for the pose and the root, the same scale."""
    frame = as_left_hand(render_hand_frame(seed=5))
    cfg = dataclasses.replace(CFG, orient=orient)
    plain = preprocess_frame(frame, cfg)
    mirrored = preprocess_frame(frame, dataclasses.replace(cfg, mirror_left=True))
    flip = np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(mirrored["pose"], plain["pose"] * flip, atol=1e-5)
    np.testing.assert_allclose(mirrored["root"], plain["root"] * flip, atol=1e-6)
    np.testing.assert_allclose(mirrored["uv"][:, 0], CFG.crop_size - 1 - plain["uv"][:, 0], atol=1e-3)
    np.testing.assert_allclose(mirrored["uv"][:, 1], plain["uv"][:, 1], atol=1e-3)
    difference = np.abs(mirrored["image"].astype(int) - plain["image"][:, ::-1].astype(int))
    assert difference.max() <= 2, difference.max()
    assert mirrored["scale"] == plain["scale"] and mirrored["hand_side"] == plain["hand_side"] == 0
    # A right hand is left as it is.
    right = render_hand_frame(seed=5)
    np.testing.assert_array_equal(preprocess_frame(right, dataclasses.replace(cfg, mirror_left=True))["pose"],
                                  preprocess_frame(right, cfg)["pose"])


def test_mirrored_maskless_frame_keeps_its_depth_camera_consistent() -> None:
    """STB's left hands, mirrored: the depth camera and its transform are mirrored too, so the
    cloud still lies on the (mirrored) skeleton and the keypoints are the pose's projection."""
    frame = render_maskless_frame(seed=6)
    sample = preprocess_frame(frame, dataclasses.replace(CFG, mirror_left=True))
    np.testing.assert_allclose(geometry.project(unnormalised(sample, "pose"), sample["K_crop"]), sample["uv"], atol=1e-3)
    cloud = unnormalised(sample, "cloud")[: sample["cloud_count"]]
    assert len(cloud) > 50
    assert np.median(distance_to_skeleton(cloud, unnormalised(sample, "pose"))) < 1.5 * FINGER_RADIUS
    plain = preprocess_frame(frame, CFG)
    np.testing.assert_allclose(sample["pose"], plain["pose"] * np.array([-1.0, 1.0, 1.0], dtype=np.float32), atol=1e-5)


def test_cloud_lies_on_the_hand_and_strays_are_removed() -> None:
    frame = render_hand_frame(seed=4, stray_pixels=8)
    sample = preprocess_frame(frame, CFG)
    count = int(sample["cloud_count"])
    assert count == CFG.pool_size
    cloud = unnormalised(sample, "cloud")
    distances = distance_to_skeleton(cloud, unnormalised(sample, "pose"))
    assert distances.mean() < 0.015
    assert distances.max() < 0.03  # the wall pixels labelled as hand (1 m away) are gone
    assert len(np.unique(sample["cloud"], axis=0)) == CFG.pool_size


def test_small_cloud_is_padded_by_repetition_and_counted() -> None:
    frame = render_hand_frame(seed=5)
    sample = preprocess_frame(frame, dataclasses.replace(CFG, pool_size=20000))
    count = int(sample["cloud_count"])
    assert 100 < count < 20000
    distinct = sample["cloud"][:count]
    assert len(np.unique(distinct, axis=0)) == count
    np.testing.assert_array_equal(sample["cloud"][count : 2 * count], distinct[: min(count, 20000 - count)])


def test_maskless_frame_uses_skeleton_region_and_depth_camera() -> None:
    frame = render_maskless_frame(seed=6)
    sample = preprocess_frame(frame, CFG)
    assert sample["cloud_count"] == CFG.pool_size
    distances = distance_to_skeleton(unnormalised(sample, "cloud"), unnormalised(sample, "pose"))
    assert distances.mean() < 0.015
    np.testing.assert_allclose(geometry.project(unnormalised(sample, "pose"), sample["K_crop"]), sample["uv"], atol=1e-3)
    assert np.all((sample["uv"] > 0) & (sample["uv"] < CFG.crop_size))
    assert sample["hand_side"] == 0


def test_empty_hand_mask_raises() -> None:
    with pytest.raises(EmptyHandError, match="no right-hand pixels"):
        preprocess_frame(render_hand_frame(seed=7, empty=True), CFG)


def test_keypoints_inside_crop_and_shapes() -> None:
    sample = preprocess_frame(render_hand_frame(seed=8, index=5), CFG)
    assert sample["image"].shape == (64, 64, 3) and sample["image"].dtype == np.uint8
    assert sample["cloud"].shape == (256, 3) and sample["cloud"].dtype == np.float32
    assert np.all((sample["uv"] > 0) & (sample["uv"] < 64))
    assert int(sample["index"]) == 5 and sample["hand_side"] == 1
