"""Hand point clouds: back-projection, outlier removal, farthest point sampling."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from crossmodal.data.geometry import backproject, transform_points
from crossmodal.data.joints import BONES


def depth_to_points(depth: np.ndarray, K_depth: np.ndarray, pixel_mask: np.ndarray | None = None) -> np.ndarray:
    """Back-project the valid depth pixels (inside ``pixel_mask`` if given) -> (N, 3) metres, depth frame.

    Pixels with depth <= 0 or non-finite depth carry no measurement and are skipped.
    """
    valid = np.isfinite(depth) & (depth > 0)
    if pixel_mask is not None:
        valid &= pixel_mask
    rows, cols = np.nonzero(valid)
    uv = np.stack([cols, rows], axis=-1).astype(np.float64)
    return backproject(uv, depth[rows, cols], K_depth)


def points_in_color_frame(points_depth: np.ndarray, depth_to_color: np.ndarray) -> np.ndarray:
    """Depth-camera points -> colour-camera points."""
    return transform_points(points_depth, depth_to_color)


def distance_to_skeleton(points: np.ndarray, joints: np.ndarray, bones=BONES) -> np.ndarray:
    """Distance of each (N, 3) point to the nearest bone segment of (21, 3) ``joints``."""
    points = np.asarray(points, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    a = joints[[p for p, _ in bones]]  # (B, 3) segment starts
    b = joints[[c for _, c in bones]]
    ab = b - a
    ab_len2 = np.maximum((ab * ab).sum(-1), 1e-12)
    ap = points[:, None, :] - a[None]  # (N, B, 3)
    t = np.clip((ap * ab[None]).sum(-1) / ab_len2, 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - closest, axis=-1).min(axis=1)


def depth_band_filter(points: np.ndarray, joints: np.ndarray, margin: float) -> np.ndarray:
    """Keep points whose z lies within ``margin`` of the joints' z range (drops background behind the hand)."""
    z = points[:, 2]
    return (z >= joints[:, 2].min() - margin) & (z <= joints[:, 2].max() + margin)


def statistical_outlier_filter(points: np.ndarray, neighbors: int, std_ratio: float) -> np.ndarray:
    """Keep points whose mean distance to their ``neighbors`` nearest points is not unusually large.

    A point is an outlier when that mean exceeds the cloud's average by more than
    ``std_ratio`` standard deviations (flying pixels at depth edges, stray specks).
    """
    if len(points) <= neighbors:
        return np.ones(len(points), dtype=bool)
    distances, _ = cKDTree(points).query(points, k=neighbors + 1)  # first hit is the point itself
    mean_distance = distances[:, 1:].mean(axis=1)
    return mean_distance <= mean_distance.mean() + std_ratio * mean_distance.std()


def farthest_point_sampling(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``min(count, N)`` distinct points chosen by farthest point sampling.

    Deterministic: starts from the point farthest from the centroid. Vectorised over
    the points, O(N * count). Every prefix of the result is itself a farthest point
    sample, so taking the first ``k`` indices gives a well-spread subset.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    count = min(count, n)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    # Separate contiguous coordinate arrays: three fused passes beat an (N, 3) row reduction.
    x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))
    chosen = np.empty(count, dtype=np.int64)
    chosen[0] = int(np.argmax(((points - points.mean(axis=0)) ** 2).sum(-1)))
    nearest = np.full(n, np.inf)
    step = np.empty(n)
    scratch = np.empty(n)
    for k in range(count):
        if k:
            chosen[k] = int(np.argmax(nearest))
        c = chosen[k]
        np.subtract(x, x[c], out=step)
        np.multiply(step, step, out=step)
        np.subtract(y, y[c], out=scratch)
        step += scratch * scratch
        np.subtract(z, z[c], out=scratch)
        step += scratch * scratch
        np.minimum(nearest, step, out=nearest)
    return chosen


def sample_pool(points: np.ndarray, pool_size: int) -> tuple[np.ndarray, int]:
    """FPS ``pool_size`` points -> ((pool_size, 3) float32, number of distinct points).

    With fewer than ``pool_size`` points the distinct points are repeated cyclically
    to fill the pool; an empty cloud gives zeros and count 0.
    """
    pool = np.zeros((pool_size, 3), dtype=np.float32)
    order = farthest_point_sampling(points, pool_size)
    if len(order) == 0:
        return pool, 0
    pool[:] = points[order[np.arange(pool_size) % len(order)]]
    return pool, len(order)
