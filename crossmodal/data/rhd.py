"""Reader for the Rendered Hand Pose dataset (RHD) in its published on-disk format.

Layout (``root`` is the ``RHD_published_v2`` folder)::

    root/<split>/color/%05d.png      320x320 RGB
    root/<split>/depth/%05d.png      depth: metres = (R * 256 + G) / 65535 * 5
    root/<split>/mask/%05d.png       0 background, 1 person, 2-17 left hand, 18-33 right hand
    root/<split>/anno_<split>.pickle {id: {'xyz': 42x3 m, 'uv_vis': 42x3, 'K': 3x3}}

with ``split`` in {"training", "evaluation"}. Keypoints 0-20 are the left hand,
21-41 the right, both in RHD's joint order (``crossmodal.data.joints``).

Each frame shows up to two hands; the reader returns ONE: the hand with more mask
pixels (Zimmermann & Brox's choice, which the RHD numbers in the literature use).
A tie in pixels (e.g. both hands absent from the mask) goes to the hand with more
visible keypoints, and a tie in both goes to the right hand, as in the reference
implementation, which picks the right hand unless the left has strictly more pixels.

The synthetic hands shipped with this framework are written in the same format and
read by ``SyntheticDataset``, which differs only in its name and error texts.

Errors: construction checks what directory listings and the annotation pickle can
tell (folders, ids against PNG files); everything that needs a frame (PNG decoding,
sizes, annotation array shapes) is checked when that frame is read. Every problem is
a one-line ``DataError`` naming the file, id or key and what was expected.

The annotation pickle is read with ``crossmodal.safe_pickle``: a file from a mirror is
data, and one that names any global beyond numpy's array helpers is refused unloaded.
"""

from __future__ import annotations

import operator
import os
import re
from pathlib import Path
from typing import Any, Optional, TypedDict

import numpy as np
from PIL import Image

from crossmodal.data.codecs import decode_rhd_depth
from crossmodal.data.joints import NUM_JOINTS
from crossmodal.errors import ConfigError, DataError
from crossmodal.registry import DATASETS
from crossmodal.safe_pickle import RefusedGlobal, load_data_pickle

#: Mask values of each hand's parts (inclusive ranges); 0 is background, 1 the rest of the person.
LEFT_HAND_LABELS = (2, 17)
RIGHT_HAND_LABELS = (18, 33)

_ID_PNG = re.compile(r"^(\d{5,})\.png$")


class HandFrame(TypedDict):
    """One frame as returned by every dataset reader (RHD, synthetic, STB).

    ``xyz`` and ``uv`` are in the colour camera (``K``); ``depth`` is in the depth
    camera (``K_depth``) and ``depth_to_color`` maps depth-camera points (metres,
    homogeneous) into the colour camera. For RHD both cameras are the same.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (H, W) float32 metres, depth camera
    mask: Optional[np.ndarray]  # (H, W) uint8 part labels, None where the dataset has none
    xyz: np.ndarray  # (21, 3) float32 metres, colour camera frame, RHD joint order
    uv: np.ndarray  # (21, 2) float32 pixels in the colour image
    visible: np.ndarray  # (21,) bool
    K: np.ndarray  # (3, 3) float32 colour intrinsics
    K_depth: np.ndarray  # (3, 3) float32 depth intrinsics
    depth_to_color: np.ndarray  # (4, 4) float32, metres
    hand_side: str  # "left" or "right"
    index: int  # position of the frame in the dataset: ds[index]


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line, for embedding in a DataError."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _open_png(path: Path, what: str) -> Image.Image:
    """Open and fully decode a PNG; missing or corrupt files become a DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            # copy(): the pixels must outlive the closed file handle.
            return im.copy()
    except FileNotFoundError:
        raise DataError(f"{what} PNG not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{what} PNG is corrupt or unreadable: {path} ({one_line(exc)})") from None


def read_rgb_png(path: Path, what: str = "colour") -> np.ndarray:
    """(H, W, 3) uint8 RGB from a colour PNG (grey, palette and alpha PNGs are converted)."""
    im = _open_png(path, what)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def read_encoded_depth_png(path: Path, what: str = "depth") -> np.ndarray:
    """(H, W, 3) uint8 RGB channels of a depth PNG whose value is packed in R and G.

    Only true RGB(A) files are accepted: converting a grey or palette PNG to RGB would
    invent channel values and decode to plausible-looking but wrong depths.
    """
    im = _open_png(path, what)
    if im.mode not in ("RGB", "RGBA"):
        raise DataError(f"{what} PNG {path} has mode {im.mode}, expected 8-bit RGB with the depth packed in R and G")
    return np.array(im.convert("RGB") if im.mode == "RGBA" else im, dtype=np.uint8)


def read_label_png(path: Path, what: str = "mask") -> np.ndarray:
    """(H, W) uint8 label image: grey or palette indices, or the red channel of an RGB file."""
    im = _open_png(path, what)
    if im.mode in ("L", "P"):
        return np.array(im, dtype=np.uint8)
    if im.mode in ("RGB", "RGBA"):
        return np.array(im, dtype=np.uint8)[..., 0].copy()
    raise DataError(f"{what} PNG {path} has mode {im.mode}, expected 8-bit grey labels")


def hand_pixel_counts(mask: np.ndarray) -> tuple[int, int]:
    """(left, right) numbers of mask pixels labelled as each hand's parts."""
    counts = np.bincount(mask.ravel(), minlength=256)
    left = int(counts[LEFT_HAND_LABELS[0] : LEFT_HAND_LABELS[1] + 1].sum())
    right = int(counts[RIGHT_HAND_LABELS[0] : RIGHT_HAND_LABELS[1] + 1].sum())
    return left, right


def choose_hand(mask: np.ndarray, visible42: np.ndarray) -> str:
    """The evaluated hand: more mask pixels; ties -> more visible keypoints; then "right"."""
    left_px, right_px = hand_pixel_counts(mask)
    if left_px != right_px:
        return "left" if left_px > right_px else "right"
    left_vis = int(np.count_nonzero(visible42[:NUM_JOINTS]))
    right_vis = int(np.count_nonzero(visible42[NUM_JOINTS:]))
    return "left" if left_vis > right_vis else "right"


def hand_mask(mask: np.ndarray, side: str) -> np.ndarray:
    """(H, W) bool: the pixels of one hand's parts in an RHD-style mask."""
    lo, hi = LEFT_HAND_LABELS if side == "left" else RIGHT_HAND_LABELS
    return (mask >= lo) & (mask <= hi)


def check_size(path: Path, what: str, got: tuple[int, ...], expected: tuple[int, ...], against: Path) -> None:
    """Raise if an (H, W) image size differs from the colour image's."""
    if got != expected:
        raise DataError(
            f"{what} PNG {path} is {got[1]}x{got[0]} (WxH), "
            f"expected {expected[1]}x{expected[0]}, the size of {against}"
        )


def resolve_index(i: int, length: int) -> int:
    """Python-style index (negatives count from the end); IndexError past the end ends iteration."""
    i = operator.index(i)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"frame index {i} out of range for a dataset of {length} frames")
    return i


@DATASETS.register("rhd")
class RHDDataset:
    """Frames of one RHD split; ``ds[i]`` is a ``HandFrame`` dict for the hand with more mask pixels."""

    TRAIN_SPLIT = "training"
    TEST_SPLIT = "evaluation"
    NAME = "RHD"
    LAYOUT = "RHD_published_v2/{training,evaluation}/{color,depth,mask}/%05d.png and anno_<split>.pickle"

    def __init__(self, root: str | os.PathLike, split: str) -> None:
        if split not in (self.TRAIN_SPLIT, self.TEST_SPLIT):
            raise ConfigError(
                f"{self.NAME} split {split!r} is not one of {self.TRAIN_SPLIT!r}, {self.TEST_SPLIT!r}"
            )
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        if not self.root.is_dir():
            raise DataError(f"{self.NAME} root folder not found: {self.root} (expected {self.LAYOUT})")
        if not self.split_dir.is_dir():
            raise DataError(f"{self.NAME} split folder not found: {self.split_dir} (expected {self.LAYOUT})")
        self.anno_path = self.split_dir / f"anno_{split}.pickle"
        self._annotations = self._load_annotations()
        self.ids: list[int] = sorted(self._annotations)
        self._check_listings()

    # ----- construction-time checks: directory listings and the pickle's id set -----

    def _load_annotations(self) -> dict[int, Any]:
        if not self.anno_path.is_file():
            raise DataError(f"{self.NAME} annotation file not found: {self.anno_path} (expected {self.LAYOUT})")
        try:
            with open(self.anno_path, "rb") as f:
                data = load_data_pickle(f)
        except RefusedGlobal as exc:
            raise DataError(
                f"{self.NAME} annotation file {self.anno_path} refers to {exc.name}, which is not allowed: "
                "only dicts, lists, numbers, strings and numpy arrays are loaded (a pickle can run code)"
            ) from None
        except Exception as exc:  # a corrupt pickle can raise nearly anything
            raise DataError(
                f"{self.NAME} annotation file {self.anno_path} is not a readable pickle ({one_line(exc)})"
            ) from None
        if not isinstance(data, dict):
            raise DataError(
                f"{self.NAME} annotation file {self.anno_path} holds a {type(data).__name__}, "
                "expected a dict from integer frame id to {'xyz', 'uv_vis', 'K'}"
            )
        annotations: dict[int, Any] = {}
        for key, value in data.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or key < 0:
                raise DataError(
                    f"{self.NAME} annotation file {self.anno_path} has key {key!r}, "
                    "expected non-negative integer frame ids"
                )
            annotations[int(key)] = value
        return annotations

    def _listed_ids(self, kind: str) -> set[int]:
        folder = self.split_dir / kind
        if not folder.is_dir():
            raise DataError(f"{self.NAME} {kind} folder not found: {folder} (expected {self.LAYOUT})")
        ids = set()
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _ID_PNG.match(entry.name)
                if match and f"{int(match.group(1)):05d}.png" == entry.name:
                    ids.add(int(match.group(1)))
        return ids

    def _check_listings(self) -> None:
        annotated = set(self.ids)
        for kind in ("color", "depth", "mask"):
            on_disk = self._listed_ids(kind)
            missing = sorted(annotated - on_disk)
            if missing:
                raise DataError(
                    f"{self.NAME} {self.anno_path} annotates {len(missing)} frame(s) with no {kind} PNG "
                    f"(first missing: {self.split_dir / kind / f'{missing[0]:05d}.png'})"
                )
            if kind == "color":
                extra = sorted(on_disk - annotated)
                if extra:
                    raise DataError(
                        f"{self.NAME} {self.split_dir / 'color'} has {len(extra)} PNG(s) without an annotation in "
                        f"{self.anno_path.name} (first: {extra[0]:05d}.png); the pickle does not match the images"
                    )

    # ----- per-frame access -----

    def __len__(self) -> int:
        return len(self.ids)

    def frame_id(self, i: int) -> int:
        """RHD's integer id of frame ``i`` (the number in its file names)."""
        return self.ids[resolve_index(i, len(self))]

    def frame_paths(self, i: int) -> dict[str, Path]:
        """The colour, depth and mask PNGs of frame ``i``."""
        name = f"{self.frame_id(i):05d}.png"
        return {kind: self.split_dir / kind / name for kind in ("color", "depth", "mask")}

    def frame_path(self, i: int) -> Path:
        """The colour PNG of frame ``i``, for messages that point at a frame."""
        return self.frame_paths(i)["color"]

    def raw_annotation(self, i: int) -> dict[str, np.ndarray]:
        """Both hands' validated labels: 'xyz' (42, 3), 'uv_vis' (42, 3), 'K' (3, 3), float32."""
        frame = self.frame_id(i)
        entry = self._annotations[frame]
        where = f"{self.NAME} annotation {self.anno_path} id {frame}"
        if not isinstance(entry, dict):
            raise DataError(f"{where} is a {type(entry).__name__}, expected a dict with keys 'xyz', 'uv_vis', 'K'")
        expected = {
            "xyz": ((42, 3), "metres, camera frame; keypoints 0-20 left hand, 21-41 right"),
            "uv_vis": ((42, 3), "u, v pixels and visible == 1"),
            "K": ((3, 3), "camera intrinsics"),
        }
        out = {}
        for key, (shape, meaning) in expected.items():
            if key not in entry:
                raise DataError(f"{where} has no key {key!r} (expected {shape[0]}x{shape[1]}: {meaning})")
            try:
                arr = np.asarray(entry[key], dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{where} key {key!r} is not a numeric array ({one_line(exc)})") from None
            if arr.shape != shape:
                raise DataError(f"{where} key {key!r} has shape {arr.shape}, expected {shape} ({meaning})")
            if not np.all(np.isfinite(arr)):
                raise DataError(f"{where} key {key!r} contains NaN or infinite values")
            out[key] = arr
        return out

    def _labels(self, i: int, mask: np.ndarray) -> dict[str, Any]:
        raw = self.raw_annotation(i)
        visible42 = raw["uv_vis"][:, 2] == 1
        side = choose_hand(mask, visible42)
        hand = slice(0, NUM_JOINTS) if side == "left" else slice(NUM_JOINTS, 2 * NUM_JOINTS)
        return {
            "xyz": raw["xyz"][hand].copy(),
            "uv": raw["uv_vis"][hand, :2].copy(),
            "visible": visible42[hand].copy(),
            "K": raw["K"],
            "K_depth": raw["K"].copy(),
            "depth_to_color": np.eye(4, dtype=np.float32),
            "hand_side": side,
            "index": resolve_index(i, len(self)),
        }

    def annotation(self, i: int) -> dict[str, Any]:
        """Labels of frame ``i`` (every ``HandFrame`` key but image, depth, mask).

        Decodes only the small mask PNG, which the hand choice needs; the colour and
        depth PNGs are not opened.
        """
        mask = read_label_png(self.frame_paths(i)["mask"], f"{self.NAME} mask")
        return self._labels(i, mask)

    def __getitem__(self, i: int) -> HandFrame:
        paths = self.frame_paths(i)
        image = read_rgb_png(paths["color"], f"{self.NAME} colour")
        size = image.shape[:2]
        depth_rgb = read_encoded_depth_png(paths["depth"], f"{self.NAME} depth")
        check_size(paths["depth"], f"{self.NAME} depth", depth_rgb.shape[:2], size, paths["color"])
        mask = read_label_png(paths["mask"], f"{self.NAME} mask")
        check_size(paths["mask"], f"{self.NAME} mask", mask.shape, size, paths["color"])
        frame: dict[str, Any] = {"image": image, "depth": decode_rhd_depth(depth_rgb), "mask": mask}
        frame.update(self._labels(i, mask))
        return frame  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, frames={len(self)})"


@DATASETS.register("synthetic")
class SyntheticDataset(RHDDataset):
    """The procedural synthetic hands, written in RHD's format: same reader, own name and error text."""

    NAME = "synthetic-hands"
    LAYOUT = (
        "<root>/{training,evaluation}/{color,depth,mask}/%05d.png and anno_<split>.pickle "
        "in RHD's format, as written by `python -m crossmodal synth`"
    )
