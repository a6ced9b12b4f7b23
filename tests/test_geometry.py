"""Camera geometry, warping, and the point-cloud primitives (FPS, outlier filters)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial import cKDTree

from crossmodal.data import geometry
from crossmodal.data.pointcloud import (
    distance_to_skeleton,
    farthest_point_sampling,
    sample_pool,
    statistical_outlier_filter,
)

K = np.array([[300.0, 0.0, 150.0], [0.0, 310.0, 120.0], [0.0, 0.0, 1.0]])


def test_project_backproject_round_trip() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform([-0.2, -0.2, 0.3], [0.2, 0.2, 1.0], (50, 3))
    uv = geometry.project(points, K)
    np.testing.assert_allclose(geometry.backproject(uv, points[:, 2], K), points, atol=1e-12)


@pytest.mark.parametrize("direction", [(0.3, -0.2, 1.0), (0.0, 0.0, 1.0), (-1.0, 0.5, 0.2), (0.0, 0.0, -1.0)])
def test_rotation_to_optical_axis(direction: tuple[float, float, float]) -> None:
    R = geometry.rotation_to_optical_axis(np.array(direction))
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)
    d = np.array(direction) / np.linalg.norm(direction)
    np.testing.assert_allclose(R @ d, [0.0, 0.0, 1.0], atol=1e-12)


def test_minimal_rotation_adds_no_roll() -> None:
    # A ray tilted only horizontally is turned about the camera's y axis: y stays put.
    R = geometry.rotation_to_optical_axis(np.array([0.4, 0.0, 1.0]))
    np.testing.assert_allclose(R[:, 1], [0.0, 1.0, 0.0], atol=1e-12)


def test_axis_angle_matches_known_rotation() -> None:
    R = geometry.axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_crop_intrinsics_maps_box_to_crop() -> None:
    K_crop = geometry.crop_intrinsics(K, np.array([100.0, 80.0]), side=50.0, crop_size=25)
    H = K_crop @ np.linalg.inv(K)
    # Box edges (continuous coordinates) go to the crop's edges, -0.5 and 24.5.
    corners = geometry.apply_homography(H, np.array([[75.0, 55.0], [125.0, 105.0]]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [24.5, 24.5]], atol=1e-12)


def test_corrected_crop_intrinsics_centres_principal_point() -> None:
    K_crop = geometry.corrected_crop_intrinsics(K, side=100.0, crop_size=64)
    np.testing.assert_allclose(K_crop[:2, 2], 31.5)
    np.testing.assert_allclose(K_crop[0, 0], 300.0 * 0.64)
    np.testing.assert_allclose(K_crop[1, 1], 310.0 * 0.64)


def test_warp_image_identity_and_shift() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(geometry.warp_image(image, np.eye(3), 20), image)
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])  # output p samples p + (3, 2)
    out = geometry.warp_image(image, shift, 20)
    np.testing.assert_array_equal(out[:18, :17], image[2:, 3:])
    np.testing.assert_array_equal(out[18:], 0)  # outside the source reads as black
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    blended = geometry.warp_image(image, half, 20).astype(float)
    np.testing.assert_allclose(blended[:, :19], (image[:, :19].astype(float) + image[:, 1:]) / 2, atol=0.51)


def test_fps_returns_distinct_points_covering_the_cloud() -> None:
    rng = np.random.default_rng(2)
    points = rng.normal(size=(5000, 3)) * [1.0, 0.5, 0.2]
    chosen = farthest_point_sampling(points, 256)
    assert len(chosen) == 256 and len(np.unique(chosen)) == 256
    # Coverage: every cloud point is close to a chosen one, much closer than with a random subset.
    fps_radius = cKDTree(points[chosen]).query(points)[0].max()
    random_radius = cKDTree(points[rng.choice(5000, 256, replace=False)]).query(points)[0].max()
    assert fps_radius < 0.6 * random_radius
    # Farthest-first: the covering radius never grows as points are added (every prefix is an FPS).
    radii = [cKDTree(points[chosen[:k]]).query(points)[0].max() for k in (16, 64, 256)]
    assert radii[0] > radii[1] > radii[2]


def test_fps_is_fast() -> None:
    points = np.random.default_rng(3).normal(size=(20000, 3))
    started = time.perf_counter()
    farthest_point_sampling(points, 1024)
    assert time.perf_counter() - started < 2.0  # O(N * pool) vectorised; a Python double loop takes minutes


def test_sample_pool_pads_small_clouds() -> None:
    points = np.arange(15, dtype=float).reshape(5, 3)
    pool, count = sample_pool(points, 12)
    assert count == 5
    assert len(np.unique(pool[:5], axis=0)) == 5
    np.testing.assert_array_equal(pool[5:10], pool[:5])
    empty_pool, empty_count = sample_pool(np.zeros((0, 3)), 4)
    assert empty_count == 0 and not empty_pool.any()


def test_statistical_filter_drops_isolated_points() -> None:
    rng = np.random.default_rng(4)
    cluster = rng.normal(scale=0.01, size=(500, 3))
    strays = np.array([[0.3, 0.0, 0.0], [0.0, -0.4, 0.1], [0.2, 0.2, 0.5]])
    keep = statistical_outlier_filter(np.concatenate([cluster, strays]), neighbors=8, std_ratio=2.0)
    assert not keep[500:].any()
    assert keep[:500].mean() > 0.95


def test_distance_to_skeleton_segments() -> None:
    joints = np.zeros((21, 3))
    joints[12] = [0.0, 1.0, 0.0]  # bone 0 -> 12 along y; every other bone is degenerate at the origin
    points = np.array([[0.5, 0.5, 0.0], [0.0, 2.0, 0.0], [0.0, -0.3, 0.4]])
    np.testing.assert_allclose(distance_to_skeleton(points, joints), [0.5, 1.0, 0.5], atol=1e-12)
