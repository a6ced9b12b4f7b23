"""One raw frame -> one cached training sample (docs/design.md section 3, steps 1-6).

Input is a reader's frame dict (``image``, ``depth``, ``mask``, ``xyz``, ``uv``,
``visible``, ``K``, ``K_depth``, ``depth_to_color``, ``hand_side``, ``index``);
output is a dict of fixed-shape numpy arrays, the rows of the HDF5 cache.

Hand region:
  * datasets with a part mask (RHD, synthetic): the colour pixels labelled with
    the chosen hand's parts (2-17 left, 18-33 right). Depth pixels belong to the
    hand when, carried into the colour camera, they land on such a pixel (for
    RHD the depth is registered to the colour image, so this is the mask itself).
  * STB has no mask. The hand region is derived from the annotation: depth pixels
    inside the box around the joints projected into the depth image (widened by
    ``crop_margin``) whose 3D point lies within ``hand_radius * bone scale`` of a
    bone segment of the annotated skeleton. The colour crop box then covers the
    projections of those points and of the joints.

Frames whose hand region is empty raise ``EmptyHandError``; the cache skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from crossmodal.config import PreprocessConfig
from crossmodal.data import geometry, pointcloud
from crossmodal.data.joints import NUM_JOINTS, bone_scale
from crossmodal.data.rhd import hand_mask as hand_pixel_mask
from crossmodal.errors import ConfigError, DataError, EmptyHandError

HAND_SIDE_CODES = {"left": 0, "right": 1}


def _masked_hand_cloud(frame: dict[str, Any], hand_mask: np.ndarray) -> np.ndarray:
    """Colour-frame points of the depth pixels that fall on the colour hand mask."""
    points = pointcloud.points_in_color_frame(
        pointcloud.depth_to_points(frame["depth"], frame["K_depth"]), frame["depth_to_color"]
    )
    if len(points) == 0:
        return points
    uv = np.rint(geometry.project(points, frame["K"])).astype(np.int64)
    height, width = hand_mask.shape
    inside = (points[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    on_hand = np.zeros(len(points), dtype=bool)
    on_hand[inside] = hand_mask[uv[inside, 1], uv[inside, 0]]
    return points[on_hand]


def _skeleton_hand_cloud(frame: dict[str, Any], cfg: PreprocessConfig, scale: float) -> np.ndarray:
    """STB: colour-frame depth points near the annotated skeleton (see module docstring)."""
    depth = frame["depth"]
    color_to_depth = np.linalg.inv(np.asarray(frame["depth_to_color"], dtype=np.float64))
    uv_depth = geometry.project(geometry.transform_points(frame["xyz"], color_to_depth), frame["K_depth"])
    centre = (uv_depth.min(axis=0) + uv_depth.max(axis=0)) / 2.0
    half = cfg.crop_margin * (uv_depth.max(axis=0) - uv_depth.min(axis=0)).max() / 2.0
    lo = np.maximum(np.floor(centre - half), 0).astype(np.int64)
    hi = np.minimum(np.ceil(centre + half) + 1, [depth.shape[1], depth.shape[0]]).astype(np.int64)
    box = np.zeros(depth.shape, dtype=bool)
    if np.all(hi > lo):
        box[lo[1] : hi[1], lo[0] : hi[0]] = True
    points = pointcloud.points_in_color_frame(
        pointcloud.depth_to_points(depth, frame["K_depth"], box), frame["depth_to_color"]
    )
    if len(points) == 0:
        return points
    near = pointcloud.distance_to_skeleton(points, frame["xyz"]) <= cfg.hand_radius * scale
    return points[near]


def mask_pixels(mask: np.ndarray) -> np.ndarray:
    """(N, 2) float (u, v) of the true pixels of an (H, W) mask: the hand's pixels ``orient`` turns by."""
    rows, cols = np.nonzero(mask)
    return np.stack([cols, rows], axis=1).astype(np.float64)


def crop_box(hand_mask: np.ndarray | None, extra_uv: np.ndarray | None, margin: float) -> tuple[np.ndarray, float]:
    """Centre (u, v) and side of the square crop around the hand pixels (and ``extra_uv`` points).

    Public because inference (``crossmodal.predict``) must crop a user's image exactly
    as the training frames were cropped.
    """
    corners = []
    if hand_mask is not None:
        rows, cols = np.nonzero(hand_mask)
        # Pixel j covers [j - 0.5, j + 0.5]: the box spans whole pixels.
        corners += [[cols.min() - 0.5, rows.min() - 0.5], [cols.max() + 0.5, rows.max() + 0.5]]
    if extra_uv is not None and len(extra_uv):
        corners += [extra_uv.min(axis=0), extra_uv.max(axis=0)]
    corners = np.asarray(corners, dtype=np.float64)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    side = max(float((hi - lo).max()) * margin, 1.0)
    return (lo + hi) / 2.0, side


def _render_crop(image: np.ndarray, H_crop_from_src: np.ndarray, side: float, crop_size: int) -> np.ndarray:
    """Warp ``image`` into the crop; shrinks it first with a box filter so bilinear sampling does not alias."""
    factor = int(side // crop_size)
    H_src_from_crop = np.linalg.inv(H_crop_from_src)
    if factor >= 2:
        image = np.asarray(Image.fromarray(image).reduce(factor))
        # Reduced pixel j averages original pixels [f j, f j + f - 1]: centre f j + (f - 1) / 2.
        shrink = np.array([[1 / factor, 0, -(factor - 1) / (2 * factor)], [0, 1 / factor, -(factor - 1) / (2 * factor)], [0, 0, 1]])
        H_src_from_crop = shrink @ H_src_from_crop
    return geometry.warp_image(image, H_src_from_crop, crop_size)


@dataclass(frozen=True)
class RGBCrop:
    """The RGB part of a preprocessed frame and the camera that sees it."""

    image: np.ndarray  # (crop_size, crop_size, 3) uint8
    rotation: np.ndarray  # R: corrected camera point = R @ original camera point (identity without view correction)
    K_crop: np.ndarray  # intrinsics of the crop (in the corrected camera when view-corrected)
    homography: np.ndarray  # original pixel -> crop pixel, K_crop @ R @ inv(K)


def crop_rgb(image: np.ndarray, K: np.ndarray, centre: np.ndarray, side: float, cfg: PreprocessConfig,
             hand_uv: np.ndarray | None = None) -> RGBCrop:
    """Steps 2-3 for the image alone: virtual camera, crop intrinsics, warped and resized crop.

    Shared by training (``preprocess_frame``) and inference (``crossmodal.predict``) so a
    user's image reaches the encoder exactly as the training crops did. With ``cfg.orient``
    the camera is also rolled so that the hand's pixels ``hand_uv`` (N, 2, source image) have
    their long axis upright (``geometry.roll_upright``; fewer than two pixels: not rolled).
    """
    K = np.asarray(K, dtype=np.float64)
    if cfg.orient and not cfg.view_correction:
        raise ConfigError("preprocess.orient needs preprocess.view_correction: the roll turns the corrected camera")
    # An empty set is given, not missing: a tiny hand with no pixel on the finder's upright grid
    # (``crossmodal.finder.locate.upright_pixels``) is not turned, as the exported graph leaves it.
    if cfg.orient and hand_uv is None:
        raise DataError("preprocess.orient: this model's crops are turned by the hand's pixels, and none were given "
                         "(give a hand mask, or let the hand finder find the hand)")
    if cfg.view_correction:
        ray = np.linalg.inv(K) @ np.array([centre[0], centre[1], 1.0])
        R = geometry.rotation_to_optical_axis(ray)
        K_crop = geometry.corrected_crop_intrinsics(K, side, cfg.crop_size)
        if cfg.orient:
            pixels = geometry.apply_homography(K_crop @ R @ np.linalg.inv(K), hand_uv)
            R = geometry.roll_upright(pixels) @ R
    else:
        R = np.eye(3)
        K_crop = geometry.crop_intrinsics(K, centre, side, cfg.crop_size)
    H = K_crop @ R @ np.linalg.inv(K)
    warped = _render_crop(np.ascontiguousarray(np.asarray(image)[..., :3]), H, side, cfg.crop_size)
    return RGBCrop(warped, R, K_crop, H)


def mirror_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """The frame's scene seen in a mirror: every image flipped left-right, every camera point
    (x, y, z) -> (-x, y, z), intrinsics and the depth -> colour transform to match. A mirrored left
    hand is a right hand, with the same joint order and part labels."""
    out = dict(frame)
    M = np.diag([-1.0, 1.0, 1.0])
    width = np.asarray(frame["image"]).shape[1]
    out["image"] = np.ascontiguousarray(np.asarray(frame["image"])[:, ::-1])
    out["K"] = geometry.mirror_intrinsics(frame["K"], width)
    out["xyz"] = np.asarray(frame["xyz"], dtype=np.float64) @ M
    if frame.get("uv") is not None:
        uv = np.array(frame["uv"], dtype=np.float64)
        uv[:, 0] = width - 1 - uv[:, 0]
        out["uv"] = uv
    if frame.get("mask") is not None:
        out["mask"] = np.ascontiguousarray(np.asarray(frame["mask"])[:, ::-1])
    if frame.get("depth") is not None:
        depth = np.asarray(frame["depth"])
        out["depth"] = np.ascontiguousarray(depth[:, ::-1])
        out["K_depth"] = geometry.mirror_intrinsics(frame["K_depth"], depth.shape[1])
        M4 = np.diag([-1.0, 1.0, 1.0, 1.0])
        out["depth_to_color"] = M4 @ np.asarray(frame["depth_to_color"], dtype=np.float64) @ M4
    return out


def preprocess_frame(frame: dict[str, Any], cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """Crop, view-correct, resize, build the cloud and normalise one frame.

    Returns arrays: ``image`` (S, S, 3) uint8; ``pose`` (21, 3) and ``cloud``
    (pool, 3) float32, root-relative and divided by ``scale``; ``cloud_count``
    (distinct points in the pool); ``uv`` (21, 2) crop pixels, equal to the
    projection of the corrected joints ``pose * scale + root`` with ``K_crop``;
    ``visible``; ``K_crop``; ``root`` (3,) metres in the corrected camera frame;
    ``scale`` (metres, bone 12 -> 11); ``rotation`` (3, 3), corrected = R @ camera;
    ``K_source`` (3, 3) original colour intrinsics; ``index``; ``hand_side`` (0 left, 1 right).
    Raises ``EmptyHandError`` when the hand region has no pixels.
    """
    xyz = np.asarray(frame["xyz"], dtype=np.float64)
    K = np.asarray(frame["K"], dtype=np.float64)
    if xyz.shape != (NUM_JOINTS, 3):
        raise DataError(f"frame {frame.get('index')}: xyz must be (21, 3), got {xyz.shape}")
    scale = float(bone_scale(xyz))
    if not np.isfinite(scale) or scale <= 0:
        raise DataError(f"frame {frame.get('index')}: bone 12->11 has length {scale}; the annotation is degenerate")
    hand_side = frame["hand_side"]
    if hand_side not in HAND_SIDE_CODES:
        raise DataError(f"frame {frame.get('index')}: hand_side must be 'left' or 'right', got {hand_side!r}")
    if cfg.mirror_left and hand_side == "left":
        # The mask keeps its left-hand labels (only flipped), so the hand's pixels are still found
        # by hand_side; ``hand_side`` in the sample stays the side that was photographed.
        frame = mirror_frame(frame)
        xyz, K = frame["xyz"], np.asarray(frame["K"], dtype=np.float64)

    # Step 1 and the cloud's raw points (step 4): hand region and crop box.
    if frame.get("mask") is not None:
        hand_mask = hand_pixel_mask(np.asarray(frame["mask"]), hand_side)
        if not hand_mask.any():
            raise EmptyHandError(f"frame {frame.get('index')}: no {hand_side}-hand pixels in the mask")
        points = _masked_hand_cloud(frame, hand_mask)
        centre, side = crop_box(hand_mask, None, cfg.crop_margin)
        hand_uv = mask_pixels(hand_mask) if cfg.orient else None
    else:
        points = _skeleton_hand_cloud(frame, cfg, scale)
        if len(points) == 0:
            raise EmptyHandError(f"frame {frame.get('index')}: no depth pixels near the {hand_side}-hand skeleton")
        hand_uv = geometry.project(points, K)
        extra = np.concatenate([hand_uv, geometry.project(xyz, K)])
        centre, side = crop_box(None, extra, cfg.crop_margin)

    # Step 2-3: virtual camera R and crop intrinsics; the warped, resized crop.
    crop = crop_rgb(frame["image"], K, centre, side, cfg, hand_uv)
    image, R, K_crop = crop.image, crop.rotation, crop.K_crop

    # Step 4: outliers, then the pool, all in the corrected frame.
    if len(points):
        margin = cfg.outlier_max_dist * scale
        points = points[pointcloud.depth_band_filter(points, xyz, margin)]
        points = points[pointcloud.statistical_outlier_filter(points, cfg.outlier_neighbors, cfg.outlier_std_ratio)]
    xyz_corrected = xyz @ R.T
    points_corrected = points @ R.T

    # Step 5: normalisation.
    root = xyz_corrected[cfg.root_joint]
    pool, count = pointcloud.sample_pool((points_corrected - root) / scale, cfg.pool_size)

    return {
        "image": image,
        "pose": ((xyz_corrected - root) / scale).astype(np.float32),
        "cloud": pool,
        "cloud_count": np.int32(count),
        # Step 6: keypoints in crop pixels, by construction the projection of the corrected joints.
        "uv": geometry.project(xyz_corrected, K_crop).astype(np.float32),
        "visible": np.asarray(frame["visible"], dtype=bool).reshape(NUM_JOINTS),
        "K_crop": K_crop.astype(np.float32),
        "root": root.astype(np.float32),
        "scale": np.float32(scale),
        "rotation": R.astype(np.float32),
        "K_source": K.astype(np.float32),
        "index": np.int64(frame["index"]),
        "hand_side": np.uint8(HAND_SIDE_CODES[hand_side]),
    }
