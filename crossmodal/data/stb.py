"""Reader for the Stereo Hand Pose Benchmark (STB), SK (RealSense) camera, published format.

    !!! STB HAS NO WRIST. Joint 0 of every STB frame returned here is STB's PALM CENTRE, !!!
    !!! not a wrist: it sits in joint 0's slot of the RHD order so that shapes line up.  !!!

The evaluation protocol replaces joint 0 by the palm centre in every dataset, so STB's
palm is compared with a palm; anything else that treats joint 0 as a wrist (bone
lengths to the wrist, kinematic-chain angles) is wrong on STB frames.

Layout (``root`` holds ``images/`` and ``labels/``)::

    root/images/<seq>/SK_color_<i>.png   640x480 RGB, i = 0, 1, ... (no zero padding)
    root/images/<seq>/SK_depth_<i>.png   depth: millimetres = R + 256 * G
    root/labels/<seq>_SK.mat             'handPara': 3 x 21 x N, millimetres, depth camera frame

with ``seq`` in B1Counting, B1Random, ..., B6Counting, B6Random. Split "train" is
B2-B6, "test" is B1. N is read from each label file; images beyond N (and the
stereo BB_* files) are ignored.

Conversions, all done here so that every reader returns the same ``HandFrame``:

* joint order: STB lists the palm centre, then little, ring, middle, index, thumb,
  each from MCP to tip; ``rhd = stb[STB_TO_RHD]`` reorders to RHD's order;
* frame: labels live in the depth camera; ``colour = R^-1 (depth - T)`` with R the
  Rodrigues rotation of the SK calibration, so ``xyz`` is in metres in the COLOUR
  camera and ``uv`` its projection with the colour intrinsics ``K``;
* ``depth`` stays in the depth camera (``K_depth``); ``depth_to_color`` (4x4,
  metres) brings back-projected depth points into the colour camera;
* ``visible`` is all True (STB labels every joint), ``mask`` is None;
* ``hand_side`` is "left": every STB sequence shows the subject's left hand.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from crossmodal.data.codecs import decode_stb_depth
from crossmodal.data.joints import NUM_JOINTS, STB_TO_RHD
from crossmodal.data.rhd import HandFrame, one_line, check_size, read_encoded_depth_png, read_rgb_png, resolve_index
from crossmodal.errors import ConfigError, DataError
from crossmodal.registry import DATASETS

STB_SEQUENCES: tuple[str, ...] = tuple(f"B{b}{kind}" for b in range(1, 7) for kind in ("Counting", "Random"))
STB_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(s for s in STB_SEQUENCES if not s.startswith("B1")),
    "test": tuple(s for s in STB_SEQUENCES if s.startswith("B1")),
}

LAYOUT = (
    "<root>/images/<seq>/SK_color_<i>.png, SK_depth_<i>.png and "
    "<root>/labels/<seq>_SK.mat holding 'handPara' 3x21xN mm"
)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 pinhole matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def rodrigues(rotation_vector: np.ndarray) -> np.ndarray:
    """3x3 rotation for an axis-angle vector: R = I + sin(t) [k]x + (1 - cos(t)) [k]x^2."""
    r = np.asarray(rotation_vector, dtype=np.float64).reshape(3)
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    kx, ky, kz = r / theta
    cross = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    return np.eye(3) + np.sin(theta) * cross + (1.0 - np.cos(theta)) * (cross @ cross)


@dataclass(frozen=True)
class STBCalibration:
    """SK camera pair: intrinsics and the depth-to-colour extrinsics (published values by default)."""

    K_color: np.ndarray = field(default_factory=lambda: intrinsics(607.92271, 607.88192, 314.78337, 236.42484))
    K_depth: np.ndarray = field(default_factory=lambda: intrinsics(475.62768, 474.77709, 336.41179, 238.77962))
    rotation_vector: np.ndarray = field(default_factory=lambda: np.array([0.00531, -0.01196, 0.00301]))
    translation_mm: np.ndarray = field(default_factory=lambda: np.array([-24.0381, -0.4563, -1.2326]))

    def depth_to_color(self) -> np.ndarray:
        """4x4 metres: colour = R^-1 (depth - T), i.e. [R^T | -R^T T]."""
        r_inv = rodrigues(self.rotation_vector).T
        out = np.eye(4)
        out[:3, :3] = r_inv
        out[:3, 3] = -r_inv @ (np.asarray(self.translation_mm, dtype=np.float64) / 1000.0)
        return out


def load_hand_para(path: Path) -> np.ndarray:
    """'handPara' of one label file as (N, 21, 3) float64 millimetres, STB joint order, depth frame."""
    try:
        contents = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... on a bad file
        raise DataError(f"STB label file {path} is not a readable MATLAB file ({one_line(exc)})") from None
    if "handPara" not in contents:
        keys = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise DataError(
            f"STB label file {path} has no 'handPara' (its variables: {keys}); expected 3x21xN millimetres"
        )
    para = np.asarray(contents["handPara"])
    if para.shape == (3, NUM_JOINTS):  # MATLAB drops the trailing singleton axis of a 1-frame sequence
        para = para[:, :, None]
    if para.ndim != 3 or para.shape[:2] != (3, NUM_JOINTS) or para.shape[2] == 0:
        raise DataError(
            f"STB label file {path}: 'handPara' has shape {para.shape}, expected 3x21xN (N >= 1 frames, mm)"
        )
    if not np.issubdtype(para.dtype, np.number) or not np.all(np.isfinite(para)):
        raise DataError(f"STB label file {path}: 'handPara' must hold finite numbers (millimetres)")
    return np.transpose(para.astype(np.float64), (2, 1, 0))


@DATASETS.register("stb")
class STBDataset:
    """Frames of STB's SK camera; ``ds[i]`` is a ``HandFrame`` (see the module docstring for conventions)."""

    TRAIN_SPLIT = "train"
    TEST_SPLIT = "test"
    NAME = "STB"

    def __init__(self, root: str | os.PathLike, split: str, calibration: STBCalibration | None = None) -> None:
        if split not in STB_SPLITS:
            raise ConfigError(f"STB split {split!r} is not one of {', '.join(map(repr, STB_SPLITS))}")
        self.root = Path(root)
        self.split = split
        self.sequences = STB_SPLITS[split]
        self.calibration = calibration or STBCalibration()
        for folder in (self.root, self.root / "images", self.root / "labels"):
            if not folder.is_dir():
                raise DataError(f"STB folder not found: {folder} (expected {LAYOUT})")

        xyz_parts, counts = [], []
        for seq in self.sequences:
            label_path = self.label_path(seq)
            if not label_path.is_file():
                raise DataError(f"STB label file not found: {label_path} (expected {LAYOUT})")
            hand_para = load_hand_para(label_path)
            self._check_images_listed(seq, len(hand_para))
            xyz_parts.append(self._to_color_metres(hand_para, label_path))
            counts.append(len(hand_para))

        self._xyz = np.concatenate(xyz_parts).astype(np.float32)  # (total, 21, 3) colour frame, RHD order
        self._uv = self._project(self._xyz)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
        self._K = self.calibration.K_color.astype(np.float32)
        self._K_depth = self.calibration.K_depth.astype(np.float32)
        self._depth_to_color = self.calibration.depth_to_color().astype(np.float32)

    def label_path(self, seq: str) -> Path:
        return self.root / "labels" / f"{seq}_SK.mat"

    def _check_images_listed(self, seq: str, num_labels: int) -> None:
        folder = self.root / "images" / seq
        if not folder.is_dir():
            raise DataError(f"STB sequence folder not found: {folder} (expected {LAYOUT})")
        names = set(os.listdir(folder))
        for kind in ("color", "depth"):
            missing = [i for i in range(num_labels) if f"SK_{kind}_{i}.png" not in names]
            if missing:
                raise DataError(
                    f"STB {folder} holds {num_labels - len(missing)} of the {num_labels} SK_{kind} images labelled in "
                    f"{self.label_path(seq)}: fewer images than labels (first missing: SK_{kind}_{missing[0]}.png)"
                )

    def _to_color_metres(self, hand_para_mm: np.ndarray, label_path: Path) -> np.ndarray:
        rhd_order_mm = hand_para_mm[:, list(STB_TO_RHD), :]
        m = self.calibration.depth_to_color()
        xyz = rhd_order_mm / 1000.0 @ m[:3, :3].T + m[:3, 3]
        behind = np.flatnonzero((xyz[..., 2] <= 0).any(axis=1))
        if behind.size:
            raise DataError(
                f"STB label file {label_path}: frame {behind[0]} has joints at or behind the colour camera (z <= 0)"
            )
        return xyz

    def _project(self, xyz: np.ndarray) -> np.ndarray:
        k = self.calibration.K_color
        u = k[0, 0] * xyz[..., 0] / xyz[..., 2] + k[0, 2]
        v = k[1, 1] * xyz[..., 1] / xyz[..., 2] + k[1, 2]
        return np.stack([u, v], axis=-1).astype(np.float32)

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, i: int) -> tuple[str, int]:
        """(sequence, frame number within it) of dataset frame ``i``."""
        i = resolve_index(i, len(self))
        s = bisect.bisect_right(self._starts, i) - 1
        return self.sequences[s], i - self._starts[s]

    def frame_paths(self, i: int) -> dict[str, Path]:
        """The colour and depth PNGs of frame ``i``."""
        seq, n = self.locate(i)
        folder = self.root / "images" / seq
        return {"color": folder / f"SK_color_{n}.png", "depth": folder / f"SK_depth_{n}.png"}

    def frame_path(self, i: int) -> Path:
        """The colour PNG of frame ``i``, for messages that point at a frame."""
        return self.frame_paths(i)["color"]

    def annotation(self, i: int) -> dict[str, Any]:
        """Labels of frame ``i`` (every ``HandFrame`` key but image, depth, mask); no file is read."""
        i = resolve_index(i, len(self))
        return {
            "xyz": self._xyz[i].copy(),
            "uv": self._uv[i].copy(),
            "visible": np.ones(NUM_JOINTS, dtype=bool),
            "K": self._K.copy(),
            "K_depth": self._K_depth.copy(),
            "depth_to_color": self._depth_to_color.copy(),
            "hand_side": "left",
            "index": i,
        }

    def __getitem__(self, i: int) -> HandFrame:
        paths = self.frame_paths(i)
        image = read_rgb_png(paths["color"], "STB colour")
        depth_rgb = read_encoded_depth_png(paths["depth"], "STB depth")
        check_size(paths["depth"], "STB depth", depth_rgb.shape[:2], image.shape[:2], paths["color"])
        frame: dict[str, Any] = {"image": image, "depth": decode_stb_depth(depth_rgb), "mask": None}
        frame.update(self.annotation(i))
        return frame  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"STBDataset(root={str(self.root)!r}, split={self.split!r}, frames={len(self)})"
