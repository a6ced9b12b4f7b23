"""One image through the model: hand box, training crop, RGB-only inference, joints in the image's camera."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crossmodal.data.geometry import apply_homography, mirror_intrinsics, project
from crossmodal.predict.boxes import HandRegion, hand_region
from crossmodal.predict.finding import finder_in_box, finder_region
from crossmodal.predict.inputs import InputError, assumed_intrinsics, read_hand_mask, read_image
from crossmodal.predict.model import InferenceModel
from crossmodal.predict.side import HandPlan, plan_hand

NORMALISED_UNITS = "normalised (bone 12->11 = 1)"


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
    finder: dict[str, Any] | None = None  # what the hand finder said, when it gave the box
    side_fit: dict[str, Any] | None = None  # the model's keypoint fit of each side, when it chose the side


def predict_image(
    model: InferenceModel,
    image_path: str | Path,
    mask_path: str | Path | None = None,
    bbox: Sequence[float] | None = None,
    K: np.ndarray | None = None,
    side: str | None = None,
    bone_mm: float | None = None,
    with_cloud: bool = True,
    finder: Any = None,
) -> Prediction:
    """Crop one image like the training pipeline, run the RGB-only model, return joints (and cloud).

    The model's outputs live in the crop's (view-corrected) camera, root-relative and divided
    by the bone 12 -> 11; they are rotated back with R^T, mirrored back when the hand was
    mirrored, and scaled by ``bone_mm`` when given. With neither a mask nor a box, ``finder``
    (a ``crossmodal.finder.model.HandFinder``) gives the hand box and side, or else the whole
    image is the box; a finder that sees no hand raises :class:`NoHandFound`.
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
    region, said = None, None
    side_source = "--hand" if side else ("mask labels" if mask_side else "not given")
    if mask is None and bbox is None and finder is not None:
        region, side, side_source, found_notes, said = finder_region(finder, image, image_path, side,
                                                                     model.preprocess.crop_margin)
        notes += found_notes
    hand = plan_hand(str(model.config.data.dataset), side or mask_side, side_source, bool(model.preprocess.mirror_left))
    if K is None:
        K = assumed_intrinsics(width, height)
        K_statement = (f"assumed (no --K): pinhole, focal length = image width ({width} px), "
                       f"principal point at the image centre ({(width - 1) / 2:g}, {(height - 1) / 2:g})")
    else:
        K, K_statement = np.asarray(K, dtype=np.float64), "given with --K"
    if region is None:
        region = hand_region(image.shape, mask, bbox, model.preprocess.crop_margin)
        if bbox is not None and model.preprocess.orient and finder is not None:
            region, side, side_source, found_notes, said = finder_in_box(finder, image, image_path, region, side,
                                                                         model.preprocess.crop_margin)
            notes += found_notes
            hand = plan_hand(str(model.config.data.dataset), side, side_source, bool(model.preprocess.mirror_left))
    if bbox is not None and (region.box_lo.min() < -0.5 or region.box_hi[0] > width - 0.5 or region.box_hi[1] > height - 0.5):
        notes.append(f"--bbox extends beyond the {width}x{height} image of {image_path}; the outside reads as black")

    if model.preprocess.orient and region.hand_uv is None:
        raise InputError(f"{image_path}: this model turns each crop by the hand's pixels (preprocess.orient), and "
                         f"{'--bbox' if region.source == '--bbox' else 'the whole image'} gives none: give --mask, "
                         "or a hand finder (make finder) to find the hand's pixels")
    side_fit, sides, cropped = None, fit_sides(model), None
    if side_source not in ("--hand", "mask labels") and sides is not None:
        # The finder's side is near chance on the synthetic hands; the model's own fit is not
        # (docs/predict.md, "Which hand"). --hand and a mask's labels still win.
        fitted, fits, hypotheses = side_by_fit(model, image, K, region)
        hedged = hedged_by_fit(model, fits, hypotheses)
        side_fit = {"side": fitted, **{f"fit_{name}": round(float(v), 4) for name, v in zip(sides, fits)},
                    "probability": round(hedged.probability, 4), "side_temperature": model.side_temperature,
                    "joints": "both sides' poses weighted by their probability" if model.side_temperature > 0
                    else f"the {fitted} hand's pose (no side temperature in the checkpoint)"}
        if said is not None and said["side"] != fitted:
            notes.append(f"{image_path}: the model's keypoint fit takes the {fitted} hand where the finder said {said['side']}")
        side, side_source = fitted, f"the model's keypoint fit ({', '.join(f'{name} {v:.3f}' for name, v in zip(sides, fits))})"
        hand = plan_hand(str(model.config.data.dataset), side, side_source, bool(model.preprocess.mirror_left))
        cropped = hypotheses[int(hand.mirror)]  # the chosen hypothesis' crop, not cut again
    units_scale = float(bone_mm) if bone_mm is not None else 1.0
    if cropped is not None:
        crop, outline = cropped
        joints = hedged.joints * units_scale
        cloud = hedged.cloud * units_scale if with_cloud and hedged.cloud is not None else None
    else:
        crop, outline = crop_hand(model, image, K, region, hand.mirror)
        out = model.predict(crop.image[None])
        back = hypothesis_back(hand.mirror) * units_scale
        joints = (out["pose"][0].astype(np.float64) @ crop.rotation) * back
        cloud = (out["cloud"][0].astype(np.float64) @ crop.rotation) * back if with_cloud and "cloud" in out else None
    root = fit_root_translation(joints, K, region.box_lo, region.box_hi)
    units = "mm" if bone_mm is not None else NORMALISED_UNITS
    return Prediction(image_path, image, crop.image, joints, cloud, project(joints + root, K), root, outline, region,
                      K, K_statement, units, hand, crop.rotation, notes, said, side_fit)


def crop_and_infer(model: InferenceModel, image: np.ndarray, K: np.ndarray, region: HandRegion,
                   mirror: bool, preprocess: Any = None) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """The training crop of the hand (:func:`crop_hand`), the model's outputs on it, and the crop's
    outline in the image."""
    crop, outline = crop_hand(model, image, K, region, mirror, preprocess)
    return crop, model.predict(crop.image[None]), outline


def crop_hand(model: InferenceModel, image: np.ndarray, K: np.ndarray, region: HandRegion,
              mirror: bool, preprocess: Any = None) -> tuple[Any, np.ndarray]:
    """The training crop of the hand and the crop's outline in the image.

    When the hand is mirrored for the model, the model sees the flipped image with the flipped
    camera (:func:`mirror_intrinsics`), the crop centre and the hand's pixels flipped
    (u -> W - 1 - u); the outline is flipped back so that it is drawn on the image as given.
    ``preprocess`` replaces the model's own (finder-eval crops a missed hand unturned).
    """
    from crossmodal.data.preprocess import crop_rgb

    width = image.shape[1]
    centre, pixels = region.centre, region.hand_uv
    if mirror:
        image, K, centre = image[:, ::-1], mirror_intrinsics(K, width), np.array([width - 1 - centre[0], centre[1]])
        pixels = None if pixels is None else np.stack([width - 1 - pixels[:, 0], pixels[:, 1]], axis=1)
    crop = crop_rgb(np.ascontiguousarray(image), K, centre, region.side, preprocess or model.preprocess, pixels)
    s = model.crop_size
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
    outline = apply_homography(np.linalg.inv(crop.homography), corners)
    if mirror:
        outline[:, 0] = width - 1 - outline[:, 0]
    return crop, outline


def fit_sides(model: InferenceModel) -> tuple[str, str] | None:
    """(the side the model saw, the other) when its keypoint fit can tell a hand's side: it has a 2D
    keypoint stage and saw one side only (its other side is mirrored for it); else None."""
    from crossmodal.data.sides import training_hands

    sides = training_hands(str(model.config.data.dataset), bool(model.preprocess.mirror_left))
    if not model.has_keypoint_stage or sides is None or len(sides) != 1:
        return None
    return sides[0], "left" if sides[0] == "right" else "right"


def hypothesis_back(mirror: bool) -> np.ndarray:
    """What takes a model output to the image camera after ``@ crop.rotation`` (corrected = R @
    camera, so camera-frame rows = corrected rows @ R): un-mirrored where the crop was mirrored."""
    return np.array([-1.0 if mirror else 1.0, 1.0, 1.0])


@dataclass
class HedgedPose:
    """The pose predict gives when the model's fit takes the side (``crossmodal.side_weight``)."""

    joints: np.ndarray  # (21, 3) normalised, root-relative, image camera: the two sides' poses weighted
    cloud: np.ndarray | None  # (P, 3) the better-fitting side's cloud, likewise (clouds have no matching points to weigh)
    probability: float  # of the better-fitting side


def hedged_by_fit(model: InferenceModel, fits: np.ndarray, hypotheses: list[tuple[Any, np.ndarray]]) -> HedgedPose:
    """Both hypotheses of :func:`side_by_fit` (the side the model saw, as is; the other, mirrored)
    through the model, their poses weighted by the probability of each side; with the model's
    ``side_temperature`` 0, the better fit's pose alone."""
    import torch

    from crossmodal.side_weight import hedge, side_probability

    out = model.predict(np.stack([crop.image for crop, _ in hypotheses]))
    poses = [(out["pose"][k].astype(np.float64) @ crop.rotation) * hypothesis_back(bool(k))
             for k, (crop, _) in enumerate(hypotheses)]
    p_seen = float(side_probability(torch.tensor(float(fits[0])), torch.tensor(float(fits[1])), model.side_temperature))
    joints = hedge(torch.from_numpy(poses[0]), torch.from_numpy(poses[1]), torch.tensor(p_seen)).numpy()
    chosen = int(fits[1] > fits[0])
    crop = hypotheses[chosen][0]
    cloud = (out["cloud"][chosen].astype(np.float64) @ crop.rotation) * hypothesis_back(bool(chosen)) if "cloud" in out else None
    return HedgedPose(joints, cloud, p_seen if chosen == 0 else 1.0 - p_seen)


def side_by_fit(model: InferenceModel, image: np.ndarray, K: np.ndarray,
                region: HandRegion) -> tuple[str, np.ndarray, list[tuple[Any, np.ndarray]]]:
    """The side under which the model's keypoint stage fits the hand better, the two fits (the side
    it saw, the other), and the two crops with their outlines (:func:`crop_hand`, as is and
    mirrored, for the caller to reuse): whichever keypoint maps peak higher
    (``encoders.keypoints.keypoint_fit``). Needs :func:`fit_sides`."""
    sides = fit_sides(model)
    if sides is None:
        raise InputError(f"{model.checkpoint}: the side by the model's fit needs a 2D keypoint stage and a model "
                         "that saw one side only")
    crops = [crop_hand(model, image, K, region, mirror) for mirror in (False, True)]
    fits = model.keypoint_fit(np.stack([crop.image for crop, _ in crops]))
    return sides[1] if fits[1] > fits[0] else sides[0], fits, crops
