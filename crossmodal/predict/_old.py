"""Inference on a user's own images: crop as in training, encode the RGB crop, decode joints and cloud.

    python -m crossmodal predict --ckpt PATH --image IMG [IMG|DIR ...] [--mask M ... | --bbox x,y,w,h]
                                 [--K fx,fy,cx,cy] [--hand left|right] [--bone-mm MM] [--cloud|--no-cloud]
                                 [--out DIR]

Each image gets a folder ``<out>/<image stem>/`` with

* ``joints.json``  the 21 joints by name in RHD order, root-relative, in the original camera frame;
* ``overlay.png``  the image with the 2D projection of the joints and the outline of the crop;
* ``skeleton.png`` a 3D plot of the joints (and of the cloud, when there is one);
* ``cloud.ply``    the point cloud decoded from the RGB crop alone (the paper's side product),
  written with Open3D and coloured by depth, when the model has a cloud decoder.

The crop is made by the training pipeline's own code (``crossmodal.data.preprocess.crop_box``
and ``crop_rgb``): the hand box (from the mask, ``--bbox``, or the whole image) widened by
``crop_margin``, the virtual camera rotated onto the hand when the checkpoint was trained with
view correction, resized to the checkpoint's crop size.

What one image cannot tell, and what is done instead (every choice is written into joints.json):

* scale: the pose decoder predicts joints divided by the length of the bone 12 -> 11. Without
  ``--bone-mm`` the output stays in those units ("normalised"); with it, millimetres.
* root position: unknown from one image. For the overlay only, the root is placed so that the
  projected joints fill the hand box; the 3D outputs stay root-relative.
* intrinsics: ``--K``, or else a pinhole camera with focal length = image width and the
  principal point at the image centre.
* hand side: see :func:`plan_hand`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crossmodal.data.geometry import apply_homography, project
from crossmodal.data.joints import JOINT_NAMES, NUM_JOINTS
from crossmodal.errors import ConfigError, CrossmodalError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Hands each dataset's frames show, unmirrored (crossmodal/data/rhd.py: the evaluated hand is
#: either one; the synthetic generator renders left and right hands; crossmodal/data/stb.py:
#: every STB sequence shows the subject's left hand).
TRAINING_HANDS = {"rhd": ("left", "right"), "synthetic": ("left", "right"), "stb": ("left",)}
NORMALISED_UNITS = "normalised (bone 12->11 = 1)"
#: RHD-style part masks: 0 background, 1 person, 2-17 left hand, 18-33 right hand.
RHD_MAX_LABEL = 33


class InputError(CrossmodalError, ValueError):
    """An image, mask, box or option given to predict is unusable; the message names it."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# ---------------------------------------------------------------------------- the model


@dataclass
class InferenceModel:
    """A checkpoint's model in eval mode, with what inference needs to know about its training."""

    module: Any  # crossmodal.module.CrossmodalModule
    config: Any  # the checkpoint's resolved config (DictConfig)
    checkpoint: Path

    @property
    def strategy(self) -> Any:
        return self.module.strategy

    @property
    def preprocess(self) -> Any:
        from omegaconf import OmegaConf

        from crossmodal.config import PreprocessConfig

        return PreprocessConfig(**OmegaConf.to_container(self.config.data.preprocess, resolve=True))

    @property
    def crop_size(self) -> int:
        return int(self.config.data.preprocess.crop_size)

    @property
    def has_cloud(self) -> bool:
        return "cloud" in self.strategy.decoders

    @property
    def cloud_points(self) -> int:
        return int(self.strategy.decoders["cloud"].output_shape[0]) if self.has_cloud else 0

    def require_cloud(self, what: str) -> None:
        """A one-line error when ``what`` needs a cloud decoder this checkpoint does not have."""
        if not self.has_cloud:
            decoders = ", ".join(self.strategy.decoders)
            raise ConfigError(
                f"{what}: {self.checkpoint} (strategy {self.config.model.strategy!r}) has no cloud decoder "
                f"(its decoders: {decoders}); use a checkpoint trained with cloud_foldingnet, or leave out the cloud"
            )

    def crops_to_tensor(self, crops: np.ndarray) -> Any:
        """(N, S, S, 3) uint8 crops -> (N, 3, S, S) floats in [0, 1], as the data loader feeds them."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)

    def predict(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """RGB-only inference on uint8 crops: z (the mean of q(z|x)) and every decoder's output."""
        out = self.strategy.predict(self.crops_to_tensor(crops))
        return {key: value.detach().cpu().numpy() for key, value in out.items()}

    def decode(self, z: Any) -> dict[str, np.ndarray]:
        """Every decoder's output for latent codes (N, latent_dim)."""
        import torch

        with torch.no_grad():
            z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
            return {key: decoder(z).cpu().numpy() for key, decoder in self.strategy.decoders.items()}


def load_model(path: str | Path) -> InferenceModel:
    """The model of a checkpoint in eval mode; a missing, corrupt or foreign file is a one-line error."""
    from omegaconf import OmegaConf

    from crossmodal.config import Config
    from crossmodal.train import load_trained_module

    module = load_trained_module(path)
    module.eval()
    config = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(module.cfg))
    return InferenceModel(module, config, Path(path))


# ---------------------------------------------------------------------------- inputs


def read_image(path: str | Path, option: str = "--image") -> tuple[np.ndarray, list[str]]:
    """(H, W, 3) uint8 RGB and the conversions made, stated; a file Pillow cannot decode is an InputError.

    Grayscale (8 or 16 bit), RGBA, palette and other colour modes are converted to RGB, and a
    photo carrying an EXIF orientation is turned upright, because the model only knows upright
    8-bit RGB crops.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file")
    try:
        with Image.open(path) as opened:
            opened.load()
            orientation = opened.getexif().get(0x0112, 1)
            im = ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{option} {path}: too large to decode safely ({_one_line(exc)})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{option} {path}: not a readable image ({_one_line(exc)})") from None
    notes = [f"{path} was rotated upright by its EXIF orientation ({orientation})"] if orientation not in (1, None) else []
    return _to_rgb(im, path, notes), notes


def _to_rgb(im: Any, path: Path, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8, appending what was converted to ``notes``."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(values.max()), 1e-12)
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"{path} is {mode} grayscale; scaled to 8 bits and converted to RGB")
        return np.repeat(grey[..., None], 3, axis=-1)
    what = {
        "L": "grayscale", "1": "a 1-bit (black and white) image", "LA": "grayscale with alpha",
        "RGBA": "RGBA", "RGBa": "RGBA", "P": "a palette image", "PA": "a palette image with alpha",
    }.get(mode, f"in colour mode {mode}")
    dropped = "; alpha dropped," if "A" in mode or (mode == "P" and "transparency" in im.info) else ";"
    notes.append(f"{path} is {what}{dropped} converted to RGB")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_hand_mask(path: str | Path, image_shape: tuple[int, ...], side: str | None) -> tuple[np.ndarray, str | None, list[str]]:
    """The hand's pixels from a mask file: ``(mask (H, W) bool, side it shows or None, notes)``.

    Two kinds of masks are understood. An RHD-style part mask (values 0-33 with some hand
    labels 2-33, as RHD and the synthetic data store them) gives the hand of ``side``, or the
    hand with more pixels, and says which side that is. Any other mask is binary: pixels
    above half its maximum are the hand.
    """
    from PIL import Image, UnidentifiedImageError

    from crossmodal.data.rhd import hand_mask, hand_pixel_counts

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--mask {path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            values = np.asarray(im.convert("RGB") if im.mode in ("P", "PA", "CMYK", "YCbCr") else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"--mask {path}: not a readable image ({_one_line(exc)})") from None
    if values.ndim == 3:
        values = values[..., :3].max(axis=-1)  # any colour channel marks the hand
    height, width = image_shape[:2]
    if values.shape != (height, width):
        raise InputError(
            f"--mask {path} is {values.shape[1]}x{values.shape[0]} but the image is {width}x{height}; "
            "the mask must have the image's size"
        )
    labels_2_33 = (values >= 2) & (values <= RHD_MAX_LABEL)
    if values.max() <= RHD_MAX_LABEL and labels_2_33.any():
        left, right = hand_pixel_counts(values.astype(np.uint8))
        chosen = side or ("left" if left > right else "right")
        mask = hand_mask(values.astype(np.uint8), chosen)
        how = "--hand" if side else "the hand with more pixels"
        notes = [f"--mask {path} holds RHD part labels; using the {chosen} hand's ({how})"]
        if not mask.any():
            raise InputError(f"--mask {path}: no pixels of the {chosen} hand (labels {'2-17' if chosen == 'left' else '18-33'})")
        return mask, chosen, notes
    mask = values.astype(np.float64) > float(values.max()) / 2.0 if values.max() > 0 else np.zeros(values.shape, bool)
    if not mask.any():
        raise InputError(f"--mask {path} is empty (no hand pixels); give a mask with the hand's pixels set, or --bbox")
    return mask, None, []


def _numbers(text: str, count: int, option: str, form: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option}: expected {count} comma-separated numbers {form}, got {text!r}")
    return values


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` (pixels: left column, top row, width, height) -> a tuple; w, h must be > 0."""
    x, y, w, h = _numbers(text, 4, "--bbox", "x,y,w,h")
    if w <= 0 or h <= 0:
        raise InputError(f"--bbox {text}: width and height must be > 0")
    return x, y, w, h


def parse_intrinsics(text: str) -> np.ndarray:
    """``"fx,fy,cx,cy"`` (pixels) -> the 3x3 K; focal lengths must be > 0."""
    fx, fy, cx, cy = _numbers(text, 4, "--K", "fx,fy,cx,cy")
    if fx <= 0 or fy <= 0:
        raise InputError(f"--K {text}: focal lengths must be > 0")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def assumed_intrinsics(width: int, height: int) -> np.ndarray:
    """The camera assumed without --K: focal length = image width, principal point at the centre."""
    return np.array([[float(width), 0.0, (width - 1) / 2.0], [0.0, float(width), (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def expand_images(paths: Sequence[str | Path], option: str) -> list[Path]:
    """Files as given, folders as their image files sorted by name; nothing found is an error."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise InputError(f"{option} {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif not path.is_file():
            raise InputError(f"{option} {path}: no such file or folder")
        else:
            found.append(path)
    return found


# ---------------------------------------------------------------------------- hand side and region


@dataclass(frozen=True)
class HandPlan:
    """Which hand the image shows, whether it is mirrored for the model, and the sentence saying so."""

    side: str | None  # "left" / "right", or None when neither the user nor the mask says
    side_source: str  # "--hand", "mask labels", "assumed: the training data's only side", "not given"
    mirror: bool
    training_hands: str
    statement: str


def plan_hand(dataset: str, side: str | None, side_source: str) -> HandPlan:
    """Mirror only when the training data holds one side and the image shows the other.

    RHD and the synthetic hands hold left and right hands unmirrored, so their models see
    either side as it is. STB holds only left hands: a right hand is flipped left-right for
    the model and its prediction flipped back (x -> -x in the camera frame).
    """
    sides = TRAINING_HANDS.get(dataset)
    if sides is None:
        training = f"{dataset}: which hands it holds is not known to predict"
        return HandPlan(side, side_source, False, training, f"training data {training}; the image is used as is (no mirroring)")
    training = f"{dataset}: " + (" and ".join(sides) + " hands, unmirrored" if len(sides) > 1 else f"{sides[0]} hands only")
    if len(sides) > 1:
        seen = f"the {side} hand" if side else "the hand (side not given)"
        return HandPlan(side, side_source, False, training,
                        f"training data holds left and right hands unmirrored: {seen} is predicted as seen, no mirroring")
    only = sides[0]
    if side is None:
        return HandPlan(only, "assumed: the training data's only side", False, training,
                        f"training data holds {only} hands only; --hand not given, so a {only} hand is assumed; no mirroring")
    if side == only:
        return HandPlan(side, side_source, False, training, f"training data holds {only} hands only; the {side} hand is used as is")
    return HandPlan(side, side_source, True, training,
                    f"training data holds {only} hands only: the {side} hand was mirrored left-right for the model "
                    f"and its prediction mirrored back (x -> -x), so the outputs describe the {side} hand")


@dataclass(frozen=True)
class HandRegion:
    """Where the hand is in the image: the hand box, and the square crop the training pipeline makes of it."""

    box_lo: np.ndarray  # (u, v) top-left corner of the hand box, pixel edges
    box_hi: np.ndarray  # bottom-right corner
    centre: np.ndarray  # crop centre (u, v)
    side: float  # crop side, pixels (hand box * crop_margin)
    source: str  # "mask", "--bbox" or "whole image"


def hand_region(shape: tuple[int, ...], mask: np.ndarray | None, bbox: Sequence[float] | None, margin: float) -> HandRegion:
    """The hand box from the mask, the box, or the whole image, cropped by ``preprocess.crop_box``."""
    from crossmodal.data.preprocess import crop_box

    height, width = shape[:2]
    if mask is not None:
        rows, cols = np.nonzero(mask)
        lo, hi = np.array([cols.min() - 0.5, rows.min() - 0.5]), np.array([cols.max() + 0.5, rows.max() + 0.5])
        centre, side = crop_box(mask, None, margin)
        return HandRegion(lo, hi, centre, side, "mask")
    if bbox is not None:
        x, y, w, h = bbox
        # The box covers columns x .. x+w-1 and rows y .. y+h-1, like a mask of those pixels.
        lo, hi = np.array([x - 0.5, y - 0.5]), np.array([x + w - 0.5, y + h - 0.5])
        if hi[0] <= -0.5 or hi[1] <= -0.5 or lo[0] >= width - 0.5 or lo[1] >= height - 0.5:
            raise InputError(f"--bbox {x:g},{y:g},{w:g},{h:g} lies outside the {width}x{height} image")
        centre, side = crop_box(None, np.stack([lo, hi]), margin)
        return HandRegion(lo, hi, centre, side, "--bbox")
    lo, hi = np.array([-0.5, -0.5]), np.array([width - 0.5, height - 0.5])
    centre, side = crop_box(None, np.stack([lo, hi]), margin)
    return HandRegion(lo, hi, centre, side, "whole image")


def mirror_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """K of the left-right flipped image, which shows every camera point (x, y, z) at (-x, y, z)."""
    K = np.array(K, dtype=np.float64)
    K[0, 1] = -K[0, 1]
    K[0, 2] = width - 1 - K[0, 2]
    return K


def fit_root_translation(joints: np.ndarray, K: np.ndarray, box_lo: np.ndarray, box_hi: np.ndarray) -> np.ndarray:
    """A root position that makes the projected joints fill the hand box: NOT a measured depth.

    Fixed-point iteration on the pinhole projection: the depth scales the joints' 2D extent
    to the box's longer side, and the lateral offset moves their 2D box centre onto the
    box's centre. Used only to draw the overlay; the 3D outputs stay root-relative.
    """
    joints = np.asarray(joints, dtype=np.float64)
    target_centre, target_size = (box_lo + box_hi) / 2.0, float(np.max(box_hi - box_lo))
    focal = float(np.mean([K[0, 0], K[1, 1]]))
    extent = float(np.max(joints[:, :2].max(axis=0) - joints[:, :2].min(axis=0))) or 1.0
    depth = focal * extent / max(target_size, 1e-6)
    ray = np.linalg.inv(K) @ np.array([target_centre[0], target_centre[1], 1.0])
    t = ray * depth - joints.mean(axis=0) * np.array([1.0, 1.0, 0.0])
    closest = float(joints[:, 2].min())
    for _ in range(50):
        t[2] = max(t[2], 1e-3 * extent - closest)  # every joint stays in front of the camera
        uv = project(joints + t, K)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        if np.max(hi - lo) > 0:  # a degenerate pose (all joints on one ray) keeps its depth
            t[2] *= float(np.max(hi - lo)) / max(target_size, 1e-6)
        shift = target_centre - (lo + hi) / 2.0
        t[0] += shift[0] * t[2] / K[0, 0]
        t[1] += shift[1] * t[2] / K[1, 1]
    return t


# ---------------------------------------------------------------------------- one image


@dataclass
class Prediction:
    """Everything predicted and assumed for one image, in the original image's camera frame."""

    image_path: Path
    image: np.ndarray  # (H, W, 3) uint8 as read and converted
    crop: np.ndarray  # (S, S, 3) uint8, what the encoder saw
    joints: np.ndarray  # (21, 3) root-relative (root = joint 0), output units
    cloud: np.ndarray | None  # (P, 3) same frame and units
    uv: np.ndarray  # (21, 2) image pixels of the overlay (with the fitted root)
    root: np.ndarray  # (3,) the fitted root translation (output units), for the overlay only
    crop_outline: np.ndarray  # (4, 2) image pixels of the crop's corners
    region: HandRegion  # in the image as given (not mirrored)
    K: np.ndarray
    K_statement: str
    units: str
    hand: HandPlan
    rotation: np.ndarray  # the view correction R (identity without it)
    notes: list[str] = field(default_factory=list)


def predict_image(
    model: InferenceModel,
    image_path: str | Path,
    mask_path: str | Path | None = None,
    bbox: Sequence[float] | None = None,
    K: np.ndarray | None = None,
    side: str | None = None,
    bone_mm: float | None = None,
    with_cloud: bool = True,
) -> Prediction:
    """Crop one image like the training pipeline, run the RGB-only model, return joints (and cloud).

    The model's outputs live in the crop's (view-corrected) camera, root-relative and divided
    by the bone 12 -> 11; they are rotated back with R^T, mirrored back when the hand was
    mirrored, and scaled by ``bone_mm`` when given.
    """
    if bone_mm is not None and not (math.isfinite(bone_mm) and bone_mm > 0):
        raise InputError(f"--bone-mm must be a length > 0 in millimetres, got {bone_mm}")
    image_path = Path(image_path)
    image, notes = read_image(image_path)
    height, width = image.shape[:2]
    mask, mask_side = None, None
    if mask_path is not None:
        mask, mask_side, mask_notes = read_hand_mask(mask_path, image.shape, side)
        notes += mask_notes
    hand = plan_hand(str(model.config.data.dataset), side or mask_side,
                     "--hand" if side else ("mask labels" if mask_side else "not given"))
    if K is None:
        K = assumed_intrinsics(width, height)
        K_statement = (f"assumed (no --K): pinhole, focal length = image width ({width} px), "
                       f"principal point at the image centre ({(width - 1) / 2:g}, {(height - 1) / 2:g})")
    else:
        K, K_statement = np.asarray(K, dtype=np.float64), "given with --K"
    region = hand_region(image.shape, mask, bbox, model.preprocess.crop_margin)
    if bbox is not None and (region.box_lo.min() < -0.5 or region.box_hi[0] > width - 0.5 or region.box_hi[1] > height - 0.5):
        notes.append(f"--bbox extends beyond the {width}x{height} image of {image_path}; the outside reads as black")

    crop, out, outline = _crop_and_infer(model, image, K, region, hand.mirror)
    # corrected = R @ camera, so camera-frame rows = corrected rows @ R; then un-mirror and scale.
    back = np.array([-1.0 if hand.mirror else 1.0, 1.0, 1.0]) * (float(bone_mm) if bone_mm is not None else 1.0)
    joints = (out["pose"][0].astype(np.float64) @ crop.rotation) * back
    cloud = (out["cloud"][0].astype(np.float64) @ crop.rotation) * back if with_cloud and "cloud" in out else None
    root = fit_root_translation(joints, K, region.box_lo, region.box_hi)
    units = "mm" if bone_mm is not None else NORMALISED_UNITS
    return Prediction(image_path, image, crop.image, joints, cloud, project(joints + root, K), root, outline, region,
                      K, K_statement, units, hand, crop.rotation, notes)


def _crop_and_infer(model: InferenceModel, image: np.ndarray, K: np.ndarray, region: HandRegion,
                    mirror: bool) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """The training crop of the hand, the model's outputs on it, and the crop's outline in the image.

    When the hand is mirrored for the model, the model sees the flipped image with the flipped
    camera (:func:`mirror_intrinsics`) and the crop centre flipped (u -> W - 1 - u); the
    outline is flipped back so that it is drawn on the image as given.
    """
    from crossmodal.data.preprocess import crop_rgb

    width = image.shape[1]
    centre = region.centre
    if mirror:
        image, K, centre = image[:, ::-1], mirror_intrinsics(K, width), np.array([width - 1 - centre[0], centre[1]])
    crop = crop_rgb(np.ascontiguousarray(image), K, centre, region.side, model.preprocess)
    s = model.crop_size
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
    outline = apply_homography(np.linalg.inv(crop.homography), corners)
    if mirror:
        outline[:, 0] = width - 1 - outline[:, 0]
    return crop, model.predict(crop.image[None]), outline


# ---------------------------------------------------------------------------- outputs


def prediction_record(pred: Prediction, model: InferenceModel, bone_mm: float | None, files: dict[str, str]) -> dict[str, Any]:
    """The content of joints.json: the joints by name and every assumption made to get them."""
    pre = model.preprocess
    units_note = (f"millimetres: normalised output x --bone-mm {bone_mm:g}" if bone_mm is not None
                  else "normalised: divided by the length of bone 12->11 (middle MCP -> PIP); pass --bone-mm for millimetres")
    record: dict[str, Any] = {
        "image": str(pred.image_path),
        "checkpoint": str(model.checkpoint),
        "strategy": str(model.config.model.strategy),
        "trained_on": str(model.config.data.dataset),
        "joint_order": "RHD: 0 wrist; thumb, index, middle, ring, little, each tip -> root",
        "units": pred.units,
        "units_note": units_note,
        "frame": ("original camera (x right, y down, z forward), root-relative: the model was trained with the "
                  "wrist (joint 0) at the origin; its predicted wrist is reported as predicted"),
        "joints": {name: _rounded(xyz) for name, xyz in zip(JOINT_NAMES, pred.joints)},
        "overlay": {
            "joints_2d": {name: _rounded(uv, 3) for name, uv in zip(JOINT_NAMES, pred.uv)},
            "root_translation": _rounded(pred.root),
            "method": ("root depth is not measured from one image: for the overlay the root was placed so "
                       f"that the projected joints fill the hand box ({pred.region.source})"),
        },
        "camera": {"K": [_rounded(row, 6) for row in pred.K], "intrinsics": pred.K_statement},
        "crop": {
            "hand_box_source": pred.region.source,
            "hand_box": _rounded([*pred.region.box_lo, *pred.region.box_hi], 3),
            "crop_margin": float(pre.crop_margin),
            "crop_size": int(pre.crop_size),
            "view_correction": bool(pre.view_correction),
            "rotation_corrected_from_camera": [_rounded(row, 9) for row in pred.rotation],
            "note": ("the model's output lives in the view-corrected crop camera; it was rotated back with R^T"
                     if pre.view_correction else "no view correction: the crop camera has the image camera's axes"),
        },
        "hand": {
            "side": pred.hand.side,
            "side_source": pred.hand.side_source,
            "training_data": pred.hand.training_hands,
            "mirrored": pred.hand.mirror,
            "statement": pred.hand.statement,
        },
        "notes": pred.notes,
        "files": files,
    }
    if pred.cloud is not None:
        record["cloud"] = {"file": files.get("cloud"), "points": int(len(pred.cloud)), "units": pred.units,
                           "frame": "as the joints", "colours": "depth (camera z), turbo colormap: near blue, far red"}
    else:
        record["cloud"] = None
    return record


def _rounded(values: Any, decimals: int = 6) -> list[float]:
    """Plain floats, rounded so that joints.json stays readable (6 decimals: well below a micrometre in mm)."""
    return [round(float(v), decimals) for v in values]


def write_cloud_ply(points: np.ndarray, path: str | Path) -> None:
    """The cloud as a binary PLY through Open3D, coloured by depth like the paper's Figure 3."""
    import open3d as o3d

    from crossmodal.io import atomic_path
    from crossmodal.report import depth_colours

    points = np.asarray(points, dtype=np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.colors = o3d.utility.Vector3dVector(depth_colours(points[:, 2]))
    with atomic_path(path, suffix=".ply") as tmp:  # Open3D picks the format from the suffix
        if not o3d.io.write_point_cloud(str(tmp), cloud):
            raise CrossmodalError(f"{path}: Open3D could not write the point cloud")


def plot_overlay(pred: Prediction, path: str | Path) -> None:
    """The image with the joints' 2D projection (one colour per finger), the hand box and the crop."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    height, width = pred.image.shape[:2]
    fig, ax = plt.subplots(figsize=(6.0, max(2.5, 6.0 * height / width)))
    ax.imshow(pred.image)
    outline = np.vstack([pred.crop_outline, pred.crop_outline[:1]])
    ax.plot(outline[:, 0], outline[:, 1], "--", color="white", linewidth=1, label="crop")
    lo, hi = pred.region.box_lo, pred.region.box_hi
    ax.plot([lo[0], hi[0], hi[0], lo[0], lo[0]], [lo[1], lo[1], hi[1], hi[1], lo[1]], ":", color="yellow",
            linewidth=1, label=f"hand box ({pred.region.source})")
    report.draw_skeleton(ax, pred.uv, None, "joints")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.axis("off")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"{pred.image_path.name}: 2D projection of the 3D joints\n"
                 f"root depth not measured: placed so the joints fill the hand box ({pred.region.source})", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, path)


def plot_skeleton(pred: Prediction, path: str | Path) -> None:
    """The 3D joints (and the cloud, coloured by depth) in the camera frame, root-relative."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    panels = 2 if pred.cloud is not None else 1
    fig = plt.figure(figsize=(4.5 * panels, 4.5))
    ax = fig.add_subplot(1, panels, 1, projection="3d")
    report.draw_skeleton_3d(ax, pred.joints)
    report.set_equal_limits_3d(ax, pred.joints)
    ax.set_title(f"3D joints ({pred.units})", fontsize=9)
    _label_axes(ax, pred.units)
    if pred.cloud is not None:
        ax = fig.add_subplot(1, panels, 2, projection="3d")
        report.scatter_cloud_by_depth(ax, pred.cloud)
        report.draw_skeleton_3d(ax, pred.joints, colour="0.25", linewidth=1.0)
        report.set_equal_limits_3d(ax, pred.joints, pred.cloud)
        ax.set_title(f"decoded cloud ({len(pred.cloud)} points, by depth) + joints", fontsize=9)
        _label_axes(ax, pred.units)
    fig.suptitle(f"{pred.image_path.name}: camera frame, root-relative; {pred.hand.side or 'side not given'} hand"
                 f"{' (mirrored for the model)' if pred.hand.mirror else ''}", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def _label_axes(ax: Any, units: str) -> None:
    short = "mm" if units == "mm" else "bone units"
    ax.set_xlabel(f"x ({short})", fontsize=7)
    ax.set_ylabel(f"z, depth ({short})", fontsize=7)
    ax.set_zlabel(f"-y, up ({short})", fontsize=7)
    ax.tick_params(labelsize=6)


def write_prediction(pred: Prediction, model: InferenceModel, folder: str | Path, bone_mm: float | None) -> dict[str, str]:
    """joints.json, overlay.png, skeleton.png and (with a cloud) cloud.ply in ``folder``, each atomically."""
    from crossmodal.io import atomic_write_text

    folder = Path(folder)
    files = {"joints": "joints.json", "overlay": "overlay.png", "skeleton": "skeleton.png"}
    if pred.cloud is not None:
        files["cloud"] = "cloud.ply"
        write_cloud_ply(pred.cloud, folder / files["cloud"])
    plot_overlay(pred, folder / files["overlay"])
    plot_skeleton(pred, folder / files["skeleton"])
    record = prediction_record(pred, model, bone_mm, files)
    atomic_write_text(folder / files["joints"], json.dumps(record, indent=2) + "\n")
    return files


# ---------------------------------------------------------------------------- the command


def _output_folders(images: Sequence[Path], out: Path) -> list[Path]:
    """``<out>/<stem>``, with ``_2``, ``_3`` ... for images of the same stem from different folders."""
    taken: dict[str, int] = {}
    folders = []
    for image in images:
        n = taken[image.stem] = taken.get(image.stem, 0) + 1
        folders.append(out / (image.stem if n == 1 else f"{image.stem}_{n}"))
    return folders


def predict_images(
    ckpt: str | Path,
    images: Sequence[str | Path],
    masks: Sequence[str | Path] | None = None,
    bbox: str | None = None,
    intrinsics: str | None = None,
    hand: str | None = None,
    bone_mm: float | None = None,
    cloud: bool | None = None,
    out: str | Path = "predictions",
) -> list[Path]:
    """``python -m crossmodal predict``: every image through the model, outputs in ``<out>/<stem>/``.

    ``cloud``: None writes the cloud when the model has a cloud decoder (and says when it has
    not), True requires one, False skips it. Conversions and assumptions are printed as
    ``note:`` lines; returns the output folders.
    """
    from tqdm.auto import tqdm

    if hand not in (None, "left", "right"):
        raise InputError(f"--hand must be left or right, got {hand!r}")
    files = expand_images(images, "--image")
    mask_files = expand_images(masks, "--mask") if masks else None
    if mask_files is not None and len(mask_files) != len(files):
        raise InputError(f"--mask: {len(mask_files)} masks for {len(files)} images; give one mask per image (same order)")
    box = parse_bbox(bbox) if bbox else None
    K = parse_intrinsics(intrinsics) if intrinsics else None
    if box is not None and mask_files is not None:
        raise InputError("--mask and --bbox both locate the hand; give one of them")
    model = load_model(ckpt)
    if cloud:
        model.require_cloud("--cloud")
    elif cloud is None and not model.has_cloud:
        print(f"note: {model.checkpoint} (strategy {model.config.model.strategy!r}) has no cloud decoder; no cloud.ply is written")
    if K is None:
        print("note: no --K given: assuming a pinhole camera with focal length = image width and the principal "
              "point at the image centre (stated in each joints.json)")
    if bone_mm is None:
        print(f"note: joints are {NORMALISED_UNITS}; pass --bone-mm (the hand's middle MCP->PIP bone) for millimetres")
    folders = _output_folders(files, Path(out))
    with_cloud = cloud is not False and model.has_cloud
    progress = tqdm(list(zip(files, folders)), desc="predict", unit="image", disable=len(files) < 2)
    for i, (image, folder) in enumerate(progress):
        mask = mask_files[i] if mask_files else None
        pred = predict_image(model, image, mask, box, K, hand, bone_mm, with_cloud)
        for note in pred.notes:
            tqdm.write(f"note: {note}")
        written = write_prediction(pred, model, folder, bone_mm)
        side = pred.hand.side or "side not given"
        tqdm.write(f"{image} -> {folder}/ ({', '.join(written.values())}); {NUM_JOINTS} joints in "
                   f"{pred.units}; {side} hand{', mirrored for the model' if pred.hand.mirror else ''}")
    return folders
