"""Camera geometry shared by preprocessing and augmentation (numpy, float64 inside).

Pixel convention, used everywhere in the framework: pixel ``(row i, column j)``
has its centre at ``(u, v) = (j, i)`` and covers ``[j - 0.5, j + 0.5]``. A camera
point ``X`` projects to ``K @ X`` divided by its third coordinate.

Viewpoint correction (docs/design.md section 3, step 2): a rotation ``R`` of the
camera about its centre turns the ray through the hand centre into the optical
axis. A camera point ``X`` becomes ``R @ X`` and the image is re-rendered by the
homography ``H = K_crop @ R @ inv(K)`` (original pixel -> crop pixel).
"""

from __future__ import annotations

import numpy as np


def project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of (..., 3) camera points with a 3x3 ``K`` -> (..., 2) pixels."""
    xyz = np.asarray(xyz, dtype=np.float64)
    homogeneous = xyz @ np.asarray(K, dtype=np.float64).T
    return homogeneous[..., :2] / homogeneous[..., 2:3]


def backproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels and (N,) z-depths -> (N, 3) camera points, the inverse of :func:`project`."""
    uv = np.asarray(uv, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    rays = np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1) @ np.linalg.inv(K).T
    return rays * depth[..., None]


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def apply_homography(H: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Map (..., 2) pixels through a 3x3 homography."""
    uv = np.asarray(uv, dtype=np.float64)
    homogeneous = np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1) @ np.asarray(H, dtype=np.float64).T
    return homogeneous[..., :2] / homogeneous[..., 2:3]


def rotation_to_optical_axis(direction: np.ndarray) -> np.ndarray:
    """Smallest rotation ``R`` with ``R @ direction / |direction| == (0, 0, 1)``.

    "Smallest" (rotation about ``direction x z``) adds no roll about the view axis,
    so the corrected crop stays upright as in the original image.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(d, z)
    sin = np.linalg.norm(axis)
    cos = float(np.dot(d, z))
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        # Ray pointing backwards: any half turn about an axis perpendicular to z works.
        return np.diag([1.0, -1.0, -1.0])
    axis = axis / sin
    return axis_angle_to_matrix(axis * np.arctan2(sin, cos))


def mirror_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """K of the left-right flipped image, which shows every camera point (x, y, z) at (-x, y, z)."""
    K = np.array(K, dtype=np.float64)
    K[0, 1] = -K[0, 1]
    K[0, 2] = width - 1 - K[0, 2]
    return K


#: A point set whose second moments are isotropic to this relative precision has no long axis and is
#: not turned. Otherwise rounding would choose its axis, differently in float32 graphs (ONNX) and
#: here: a whole-image mask, which an untrained finder gives, is such a set. The least isotropic
#: hand mask of the 32000 cpu-long training frames is 0.0038 (|(a - c, 2b)| / (a + c), on the raw masks).
ISOTROPIC = 1e-5


def roll_upright(points_uv: np.ndarray) -> np.ndarray:
    """Rotation ``Rz`` about the view axis that turns the long axis of a 2D point set upright.

    ``points_uv`` (N, 2) are the hand's pixels in a view-corrected crop. Their principal axis
    (largest second moment, in closed form so that the ONNX graph of ``crossmodal.pipeline.graph``
    computes the same) is signed towards the wider half of the set: the fingers' half of a hand
    is wider than the wrist's. On the synthetic training frames that sign agrees with the
    wrist -> middle-knuckle direction in 75% of them, against 61% for the third moment along
    the axis (benchmarks/results/learning.md). ``Rz`` maps the signed axis onto image-up
    (0, -1); with square pixels, a crop rendered through ``Rz`` is the old one turned about the
    principal point. A set of fewer than two points, or an isotropic one (``ISOTROPIC``), is
    not turned.
    """
    uv = np.asarray(points_uv, dtype=np.float64)
    if len(uv) < 2:
        return np.eye(3)
    d = uv - uv.mean(axis=0)
    a, b, c = np.mean(d[:, 0] ** 2), np.mean(d[:, 0] * d[:, 1]), np.mean(d[:, 1] ** 2)
    if np.sqrt((a - c) ** 2 + 4.0 * b**2) <= ISOTROPIC * (a + c):
        return np.eye(3)
    theta = 0.5 * np.arctan2(2.0 * b, a - c)
    axis = np.array([np.cos(theta), np.sin(theta)])
    along, across = d @ axis, d @ np.array([-axis[1], axis[0]])
    ahead = along >= 0
    width_ahead = np.sum(across**2 * ahead) / max(int(ahead.sum()), 1)
    width_behind = np.sum(across**2 * ~ahead) / max(int((~ahead).sum()), 1)
    if width_ahead < width_behind:
        axis = -axis
    # The rotation taking ``axis`` to (0, -1): angle -pi/2 - theta, written with the axis itself.
    return np.array([[-axis[1], axis[0], 0.0], [-axis[0], -axis[1], 0.0], [0.0, 0.0, 1.0]])


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation vector (axis * angle, radians) -> 3x3 matrix."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec)
    if angle < 1e-15:
        return np.eye(3)
    kx, ky, kz = rotvec / angle
    cross = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def crop_intrinsics(K: np.ndarray, center_uv: np.ndarray, side: float, crop_size: int) -> np.ndarray:
    """Intrinsics of a ``crop_size`` square image showing the ``side`` px box centred at ``center_uv``.

    The box spans ``center +- side / 2`` in continuous pixel coordinates; crop pixel
    ``k`` samples the box at ``x0 + (k + 0.5) * side / crop_size``.
    """
    s = crop_size / side
    x0 = center_uv[0] - side / 2.0
    y0 = center_uv[1] - side / 2.0
    A = np.array([[s, 0.0, -x0 * s - 0.5], [0.0, s, -y0 * s - 0.5], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)


def corrected_crop_intrinsics(K: np.ndarray, side: float, crop_size: int) -> np.ndarray:
    """Intrinsics of the view-corrected crop: the optical axis hits the crop centre.

    Focal lengths are scaled so that ``side`` original pixels near the optical axis
    span the ``crop_size`` crop, matching the plain crop's zoom.
    """
    s = crop_size / side
    centre = (crop_size - 1) / 2.0
    K = np.asarray(K, dtype=np.float64)
    return np.array([[K[0, 0] * s, K[0, 1] * s, centre], [0.0, K[1, 1] * s, centre], [0.0, 0.0, 1.0]])


def warp_image(image: np.ndarray, H_out_to_src: np.ndarray, size: int) -> np.ndarray:
    """Bilinear inverse warp: output pixel ``p`` samples ``image`` at ``H_out_to_src @ p``.

    ``image`` is (H, W, C) uint8; samples outside the image read as 0. Returns a
    (size, size, C) uint8 image.
    """
    height, width = image.shape[:2]
    grid_v, grid_u = np.mgrid[0:size, 0:size].astype(np.float64)
    src = apply_homography(H_out_to_src, np.stack([grid_u.ravel(), grid_v.ravel()], axis=-1))
    u, v = src[:, 0], src[:, 1]
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    du = (u - u0)[:, None]
    dv = (v - v0)[:, None]
    flat = image.reshape(height * width, -1).astype(np.float32)

    def tap(vv: np.ndarray, uu: np.ndarray) -> np.ndarray:
        inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
        values = flat[np.where(inside, vv * width + uu, 0)]
        return values * inside[:, None]

    out = (
        tap(v0, u0) * ((1 - du) * (1 - dv))
        + tap(v0, u0 + 1) * (du * (1 - dv))
        + tap(v0 + 1, u0) * ((1 - du) * dv)
        + tap(v0 + 1, u0 + 1) * (du * dv)
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(size, size, -1)
