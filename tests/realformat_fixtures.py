"""Write tiny but format-exact RHD and STB folders for tests.

    from realformat_fixtures import write_rhd_fixture, write_stb_fixture

    rhd = write_rhd_fixture(tmp_path / "RHD_published_v2", "training", num_frames=3)
    stb = write_stb_fixture(tmp_path / "STB", sequences=("B1Counting", "B1Random"))

Files are what the published datasets hold: PNGs written with Pillow (RGB colour, depth
packed in R and G, grey part masks), RHD's annotation pickle and STB's MATLAB label
files (scipy.io.savemat). The scenes are simple but geometrically consistent: a hand
skeleton placed in front of the camera, its 2D keypoints the projection of its 3D
joints, its mask and depth drawn as capsules around the bones, so that cropping and
back-projection code sees a real hand-shaped blob at the right depth.

This module deliberately does not import the readers: its conversions (projection,
STB calibration via scipy's rotation code) are written independently of them.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import scipy.io
from PIL import Image
from scipy.spatial.transform import Rotation

STB_SEQUENCES = tuple(f"B{b}{kind}" for b in range(1, 7) for kind in ("Counting", "Random"))

# Published SK calibration, repeated here so the fixture does not depend on the reader.
STB_K_COLOR = np.array([[607.92271, 0, 314.78337], [0, 607.88192, 236.42484], [0, 0, 1]])
STB_K_DEPTH = np.array([[475.62768, 0, 336.41179], [0, 474.77709, 238.77962], [0, 0, 1]])
STB_ROTATION_VECTOR = np.array([0.00531, -0.01196, 0.00301])
STB_TRANSLATION_MM = np.array([-24.0381, -0.4563, -1.2326])

# Right hand, metres, wrist at the origin, fingers pointing up the image (-y), curling
# slightly towards the camera (-z). Per finger: base joint and three segment lengths.
_FINGERS_RIGHT = {
    "thumb": ((0.025, -0.020, 0.0), (0.62, -0.78, -0.08), (0.035, 0.030, 0.025)),
    "index": ((0.022, -0.085, 0.0), (0.10, -0.99, -0.10), (0.040, 0.025, 0.020)),
    "middle": ((0.000, -0.090, 0.0), (0.00, -0.99, -0.12), (0.045, 0.028, 0.022)),
    "ring": ((-0.020, -0.085, 0.0), (-0.08, -0.99, -0.12), (0.042, 0.026, 0.020)),
    "little": ((-0.038, -0.075, 0.0), (-0.18, -0.98, -0.10), (0.032, 0.020, 0.018)),
}
_PARENTS = (-1,) + tuple((0 if k == 3 else base + k + 1) for base in (1, 5, 9, 13, 17) for k in range(4))


def canonical_hand(side: str) -> np.ndarray:
    """(21, 3) metres in RHD's joint order (wrist; thumb..little, each tip to root)."""
    joints = np.zeros((21, 3))
    for f, (root, direction, lengths) in enumerate(_FINGERS_RIGHT.values()):
        base = 1 + 4 * f
        d = np.asarray(direction) / np.linalg.norm(direction)
        joints[base + 3] = root
        for k, length in enumerate(lengths):  # root -> pip/ip -> dip -> tip
            joints[base + 2 - k] = joints[base + 3 - k] + length * d
    if side == "left":
        joints[:, 0] *= -1.0
    return joints


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 (H, W) grey or (H, W, 3) RGB array as a PNG with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, compress_level=1)


def project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., 3) camera points -> (..., 2) pixels."""
    p = xyz @ np.asarray(K, dtype=np.float64).T
    return p[..., :2] / p[..., 2:3]


def _draw_capsules(label: np.ndarray, depth: np.ndarray, joints: np.ndarray, K: np.ndarray,
                   radius_m: float, part_labels: Sequence[int], bones: Sequence[tuple[int, int]]) -> None:
    """Paint discs along each bone into ``label`` (part id) and ``depth`` (point depth, metres)."""
    h, w = label.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for (a, b), part in zip(bones, part_labels):
        for t in np.linspace(0.0, 1.0, 10):
            point = joints[a] + t * (joints[b] - joints[a])
            u, v = project(point, K)
            r = radius_m * K[0, 0] / point[2]
            x0, x1 = int(max(0, np.floor(u - r))), int(min(w, np.ceil(u + r) + 1))
            y0, y1 = int(max(0, np.floor(v - r))), int(min(h, np.ceil(v + r) + 1))
            if x0 >= x1 or y0 >= y1:
                continue
            inside = (xx[y0:y1, x0:x1] - u) ** 2 + (yy[y0:y1, x0:x1] - v) ** 2 <= r * r
            label[y0:y1, x0:x1][inside] = part
            depth[y0:y1, x0:x1][inside] = point[2]


def _hand_bones() -> list[tuple[int, int]]:
    return [(_PARENTS[j], j) for j in range(1, 21)]


def _rhd_part_labels(side: str) -> list[int]:
    """Mask id per bone: the palm (wrist -> finger roots) is one part, each finger segment its own."""
    base = 2 if side == "left" else 18
    labels = []
    for j in range(1, 21):
        finger, k = divmod(j - 1, 4)  # k: 0 tip .. 3 root; the bone ends at joint j
        labels.append(base if k == 3 else base + 1 + 3 * finger + k)
    return labels


def _posed_hand(side: str, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    roll = Rotation.from_rotvec([0.0, 0.0, rng.uniform(-0.3, 0.3)])
    return roll.apply(canonical_hand(side)) + centre + rng.uniform(-0.01, 0.01, size=3)


def _encode_rhd_depth(metres: np.ndarray) -> np.ndarray:
    code = np.rint(np.clip(metres, 0, 5.0) / 5.0 * 65535).astype(np.uint32)
    return np.stack([code >> 8, code & 0xFF, np.zeros_like(code)], axis=-1).astype(np.uint8)


def _shade(label: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plain RGB rendering: gradient background, skin for hand parts, grey for the person."""
    h, w = label.shape
    image = np.empty((h, w, 3), dtype=np.float64)
    image[...] = rng.uniform(40, 200, size=3)
    image += np.linspace(-30, 30, w)[None, :, None]
    shade = np.clip(1.3 - depth, 0.3, 1.0)[..., None]
    image = np.where((label >= 2)[..., None], np.array([224, 172, 140]) * shade, image)
    image = np.where((label == 1)[..., None], np.array([90, 90, 110]) * shade, image)
    return np.clip(image, 0, 255).astype(np.uint8)


@dataclass
class RHDFixture:
    """What ``write_rhd_fixture`` wrote: ``root`` is the RHD_published_v2 folder."""

    root: Path
    split: str
    annotations: dict[int, dict[str, np.ndarray]]  # exactly what the pickle holds
    sides: dict[int, str]  # the hand drawn with more mask pixels in each frame
    depth_m: dict[int, np.ndarray] = field(default_factory=dict)  # the depth each PNG decodes to

    @property
    def split_dir(self) -> Path:
        return self.root / self.split

    def path(self, kind: str, frame_id: int) -> Path:
        """``kind`` in color, depth, mask."""
        return self.split_dir / kind / f"{frame_id:05d}.png"

    @property
    def anno_path(self) -> Path:
        return self.split_dir / f"anno_{self.split}.pickle"

    def write_annotations(self) -> None:
        """Rewrite the pickle from ``self.annotations`` (after a test edited them)."""
        with open(self.anno_path, "wb") as f:
            pickle.dump(self.annotations, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_rhd_fixture(root: Path, split: str = "training", num_frames: int = 3, size: int = 320,
                      seed: int = 0, first_id: int = 0) -> RHDFixture:
    """Write ``root/<split>/{color,depth,mask}/%05d.png`` and ``anno_<split>.pickle``.

    Each frame holds both hands; the dominant one (left on even ids, right on odd)
    is near the camera (~0.5 m) and has more mask pixels, the other is far and small.
    Both hands are annotated (42 keypoints); keypoints outside the image are not visible.
    """
    root = Path(root)
    split_dir = root / split
    focal = 283.0 * size / 320.0
    K = np.array([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    annotations: dict[int, dict[str, np.ndarray]] = {}
    sides: dict[int, str] = {}
    depths: dict[int, np.ndarray] = {}
    for frame_id in range(first_id, first_id + num_frames):
        rng = np.random.default_rng([seed, 0 if split == "training" else 1, frame_id])
        near = "left" if frame_id % 2 == 0 else "right"
        far = "right" if near == "left" else "left"
        hands = {
            near: _posed_hand(near, rng, np.array([0.0, 0.04, 0.5])),
            far: _posed_hand(far, rng, np.array([0.16 if far == "right" else -0.16, 0.02, 0.85])),
        }
        label = np.zeros((size, size), dtype=np.uint8)
        depth = np.full((size, size), 2.5)
        for side in (far, near):  # the near hand is drawn last, over the far one
            wrist = hands[side][0]
            forearm = [wrist, wrist + np.array([0.0, 0.18, 0.02])]
            _draw_capsules(label, depth, np.array(forearm), K, 0.03, [1], [(0, 1)])
            _draw_capsules(label, depth, hands[side], K, 0.009, _rhd_part_labels(side), _hand_bones())
        xyz = np.concatenate([hands["left"], hands["right"]]).astype(np.float32)
        uv = project(xyz.astype(np.float64), K)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < size) & (uv[:, 1] >= 0) & (uv[:, 1] < size)
        uv_vis = np.concatenate([uv, inside[:, None].astype(np.float64)], axis=1).astype(np.float32)
        depth_rgb = _encode_rhd_depth(depth)
        write_png(split_dir / "color" / f"{frame_id:05d}.png", _shade(label, depth, rng))
        write_png(split_dir / "depth" / f"{frame_id:05d}.png", depth_rgb)
        write_png(split_dir / "mask" / f"{frame_id:05d}.png", label)
        annotations[frame_id] = {"xyz": xyz, "uv_vis": uv_vis, "K": K.copy()}
        sides[frame_id] = near
        depths[frame_id] = ((depth_rgb[..., 0] * 256.0 + depth_rgb[..., 1]) / 65535.0 * 5.0).astype(np.float32)
    fixture = RHDFixture(root=root, split=split, annotations=annotations, sides=sides, depth_m=depths)
    fixture.write_annotations()
    return fixture


@dataclass
class STBFixture:
    """What ``write_stb_fixture`` wrote: ``root`` holds images/ and labels/."""

    root: Path
    hand_para: dict[str, np.ndarray]  # sequence -> 3 x 21 x N millimetres, depth frame, STB order

    def color_path(self, seq: str, i: int) -> Path:
        return self.root / "images" / seq / f"SK_color_{i}.png"

    def depth_path(self, seq: str, i: int) -> Path:
        return self.root / "images" / seq / f"SK_depth_{i}.png"

    def label_path(self, seq: str) -> Path:
        return self.root / "labels" / f"{seq}_SK.mat"


def write_stb_label(path: Path, hand_para_mm: np.ndarray) -> None:
    """Write a ``<seq>_SK.mat`` holding ``handPara`` (3 x 21 x N millimetres)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"handPara": np.asarray(hand_para_mm, dtype=np.float64)})


def _stb_hand_mm(rng: np.random.Generator) -> np.ndarray:
    """(21, 3) millimetres in STB order (palm, little..thumb, each MCP to tip), depth frame."""
    rhd = _posed_hand("left", rng, np.array([0.0, 0.07, 0.42])) * 1000.0
    stb = np.empty_like(rhd)
    stb[0] = 0.5 * (rhd[0] + rhd[12])  # STB's joint 0 is the palm centre, not the wrist
    for stb_finger, rhd_finger in enumerate((4, 3, 2, 1, 0)):  # little, ring, middle, index, thumb
        for k in range(4):  # MCP -> tip in STB is root -> tip, i.e. RHD's base+3 .. base
            stb[1 + 4 * stb_finger + k] = rhd[1 + 4 * rhd_finger + 3 - k]
    return stb


def write_stb_fixture(root: Path, sequences: Sequence[str] = STB_SEQUENCES,
                      num_frames: int | Mapping[str, int] = 2, size: tuple[int, int] = (640, 480),
                      seed: int = 0) -> STBFixture:
    """Write ``images/<seq>/SK_{color,depth}_<i>.png`` and ``labels/<seq>_SK.mat`` per sequence.

    ``num_frames`` is one count for every sequence or a per-sequence mapping; ``size``
    is (width, height). A left hand ~0.4 m from the depth camera; its depth PNG holds
    capsules around the bones (mm = R + 256 G), the colour PNG the same hand drawn at
    its projection into the colour camera.
    """
    root = Path(root)
    width, height = size
    depth_to_color = Rotation.from_rotvec(STB_ROTATION_VECTOR).inv()
    hand_para: dict[str, np.ndarray] = {}
    palm_bones = [(0, 1 + 4 * f) for f in range(5)]  # palm centre -> each MCP
    stb_bones = palm_bones + [(1 + 4 * f + k, 2 + 4 * f + k) for f in range(5) for k in range(3)]
    for s, seq in enumerate(sequences):
        n = num_frames if isinstance(num_frames, int) else num_frames[seq]
        frames = np.empty((n, 21, 3))
        for i in range(n):
            rng = np.random.default_rng([seed, s, i])
            joints_mm = _stb_hand_mm(rng)
            frames[i] = joints_mm
            label = np.zeros((height, width), dtype=np.uint8)
            depth = np.full((height, width), 1.2)
            _draw_capsules(label, depth, joints_mm / 1000.0, STB_K_DEPTH, 0.009, [2] * 20, stb_bones)
            mm = np.rint(depth * 1000.0).astype(np.uint32)
            depth_rgb = np.stack([mm & 0xFF, mm >> 8, np.zeros_like(mm)], axis=-1).astype(np.uint8)
            color_joints = depth_to_color.apply(joints_mm - STB_TRANSLATION_MM) / 1000.0
            color_label = np.zeros_like(label)
            color_depth = np.full((height, width), 1.2)
            _draw_capsules(color_label, color_depth, color_joints, STB_K_COLOR, 0.009, [2] * 20, stb_bones)
            write_png(root / "images" / seq / f"SK_color_{i}.png", _shade(color_label, color_depth, rng))
            write_png(root / "images" / seq / f"SK_depth_{i}.png", depth_rgb)
        hand_para[seq] = np.transpose(frames, (2, 1, 0))
        write_stb_label(root / "labels" / f"{seq}_SK.mat", hand_para[seq])
    return STBFixture(root=root, hand_para=hand_para)
