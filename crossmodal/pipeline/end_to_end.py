"""End-to-end numbers as hand3d reports them: the pose model on finder crops vs ground-truth crops.

    python -m crossmodal finder-eval --ckpt runs/latest/checkpoints/best.ckpt [--finder PATH] [--split validation]

Every frame of the pose model's test split (skipping, like the cache, frames whose evaluated
hand has no mask pixels), or of its validation frames (the training cache's last
``val_fraction``, where settings are chosen), is cropped three times with the training pipeline's code: around the
ground-truth hand mask (what the cache holds, so these numbers reproduce ``make eval``), and
around the finder's box. A frame where the finder sees no hand falls back to the whole image
and is counted. All are scored with the published protocol against the same labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.finder.metrics import box_iou


def side_by_fit(model: Any, image: np.ndarray, K: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                pixels: np.ndarray | None) -> tuple[str, np.ndarray]:
    """predict's side by the model's keypoint fit (``crossmodal.predict.image.side_by_fit``) for the
    hand box ``lo``-``hi`` and its pixels, and predict's pose for it (normalised, root-relative,
    image camera): both sides' weighted by their probability where the model has a side temperature
    (``hedged_by_fit``)."""
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import hedged_by_fit
    from crossmodal.predict.image import side_by_fit as fitted_side

    region = box_region(lo, hi, model.preprocess.crop_margin, "finder-eval", pixels, found=True)
    side, fits, hypotheses = fitted_side(model, image, K, region)
    return side, hedged_by_fit(model, fits, hypotheses).joints


def _pose(model: Any, image: np.ndarray, K: np.ndarray, lo: np.ndarray, hi: np.ndarray, pixels: np.ndarray | None,
          side: str | None, found: bool) -> np.ndarray:
    """The model's pose (normalised, root-relative, image camera) for the hand box ``lo``-``hi`` of
    side ``side``, cropped by predict's own code: mirrored when the model saw the other side only
    (``plan_hand``), turned by the hand's ``pixels`` (H, W) bool for ``preprocess.orient`` (the
    finder's, ``found``, as predict takes them; else a mask's). A frame where the finder saw nothing
    has no pixels: its whole-image crop is then not turned."""
    from dataclasses import replace

    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_and_infer
    from crossmodal.predict.side import plan_hand

    pre = model.preprocess
    mirror = plan_hand(str(model.config.data.dataset), side, "finder-eval", bool(pre.mirror_left)).mirror
    region = box_region(lo, hi, pre.crop_margin, "finder-eval", pixels, found=found)
    crop, out, _ = crop_and_infer(model, image, K, region, mirror, None if pixels is not None else replace(pre, orient=False))
    # Model output: normalised, root-relative, in the crop camera; R^T takes it to the image camera.
    return (out["pose"][0].astype(np.float64) @ crop.rotation) * np.array([-1.0 if mirror else 1.0, 1.0, 1.0])


def _score(poses: list[np.ndarray], truth: np.ndarray, scale: np.ndarray, visible: np.ndarray, palm: bool) -> dict[str, Any]:
    from crossmodal.metrics import evaluate_keypoints, protocol_millimetres, protocol_visibility

    pred_mm, gt_mm = protocol_millimetres(np.stack(poses), truth, scale, palm)
    return evaluate_keypoints(pred_mm, gt_mm, protocol_visibility(visible, palm))


SPLITS = ("test", "validation")


def validation_frames(config: Any) -> np.ndarray:
    """Dataset indices of a model's validation frames: the rows the datamodule validates on."""
    from omegaconf import OmegaConf

    from crossmodal.config import Config
    from crossmodal.data.datamodule import build_datamodule

    datamodule = build_datamodule(OmegaConf.merge(OmegaConf.structured(Config), config))
    datamodule.setup("validate")
    val = datamodule.datasets["val"]
    return np.asarray(val.reader.columns["index"][val.rows], dtype=np.int64)


def end_to_end(pose_checkpoint: str | Path, finder: Any, limit: int = 0, progress: bool = True,
               split: str = "test") -> dict[str, Any]:
    """EPE/AUC with ground-truth crops and with finder crops, and how the finder's boxes compare,
    on the test split or on the model's validation frames."""
    from tqdm.auto import tqdm

    from crossmodal.data.joints import bone_scale
    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.errors import ConfigError
    from crossmodal.finder.data import mask_box
    from crossmodal.predict import load_model
    from crossmodal.predict.image import fit_sides
    from crossmodal.registry import DATASETS

    if split not in SPLITS:
        raise ConfigError(f"finder-eval --split must be one of {', '.join(SPLITS)}, got {split!r}")
    model = load_model(pose_checkpoint)
    data = model.config.data
    reader = DATASETS.get(data.dataset, key="data.dataset")
    if split == "test":
        dataset = reader(data.root, reader.TEST_SPLIT)
        frames = np.arange(len(dataset))
    else:
        dataset = reader(data.root, reader.TRAIN_SPLIT)
        frames = validation_frames(model.config)
    count = len(frames) if limit <= 0 else min(limit, len(frames))
    # "finder, labelled side": the finder's box and pixels with the side the protocol gives, which
    # separates what the finder's box costs from what its side costs.
    poses: dict[str, list[np.ndarray]] = {"ground truth": [], "finder": [], "finder, labelled side": []}
    # "finder, side by fit": the finder's box and pixels, the side by the model's own keypoint fit
    # (a model that mirrored left hands, with a keypoint stage).
    by_fit = fit_sides(model) is not None
    if by_fit:
        poses["finder, side by fit"] = []
    fit_ok = []
    truth, scales, visible, boxes, found_boxes, side_ok, missed = [], [], [], [], [], [], 0
    for i in tqdm(frames[:count].tolist(), desc="finder-eval", unit="frame", disable=not progress):
        if not hasattr(dataset, "frame_paths"):
            raise ValueError(f"finder-eval needs a dataset with part masks (rhd, synthetic), not {data.dataset!r}")
        paths = dataset.frame_paths(i)
        labels = read_label_png(paths["mask"])
        label = dataset.annotation(i)
        evaluated = hand_mask(labels, label["hand_side"])
        if not evaluated.any():
            continue  # the cache skips these too
        image = read_rgb_png(paths["color"])
        K = np.asarray(label["K"], dtype=np.float64)
        box = mask_box(evaluated)
        found = finder.find(image)
        if found is None:
            missed += 1
            found_box = np.array([-0.5, -0.5, image.shape[1] - 0.5, image.shape[0] - 0.5])
        else:
            found_box = found.box
            side_ok.append(found.side == label["hand_side"])
        # Each crop with its own side: the label's for ground-truth crops, the finder's for its own.
        found_pixels, found_side = (None, None) if found is None else (found.pixels, found.side)
        for name, (lo, hi, pixels, side) in (("ground truth", (box[:2], box[2:], evaluated, label["hand_side"])),
                                             ("finder", (found_box[:2], found_box[2:], found_pixels, found_side)),
                                             ("finder, labelled side", (found_box[:2], found_box[2:], found_pixels,
                                                                        label["hand_side"]))):
            poses[name].append(_pose(model, image, K, lo, hi, pixels, side, found=name != "ground truth"))
        if by_fit:
            if found is None:
                poses["finder, side by fit"].append(_pose(model, image, K, found_box[:2], found_box[2:], None, None,
                                                          found=True))
            else:
                fitted, pose = side_by_fit(model, image, K, found_box[:2], found_box[2:], found_pixels)
                fit_ok.append(fitted == label["hand_side"])
                poses["finder, side by fit"].append(pose)
        xyz = np.asarray(label["xyz"], dtype=np.float64)
        scale = float(bone_scale(xyz))
        truth.append((xyz - xyz[0]) / scale)
        scales.append(scale)
        visible.append(np.asarray(label["visible"], dtype=bool))
        boxes.append(box)
        found_boxes.append(found_box)
    palm = data.dataset == "stb"
    truth_arr, scale_arr, visible_arr = np.stack(truth), np.asarray(scales), np.stack(visible)
    ious = box_iou(torch.as_tensor(np.stack(found_boxes)), torch.as_tensor(np.stack(boxes)))
    result = {name: _score(p, truth_arr, scale_arr, visible_arr, palm) for name, p in poses.items()}
    return {
        "checkpoint": str(pose_checkpoint), "finder": finder.source, "dataset": data.dataset,
        "split": reader.TEST_SPLIT if split == "test" else f"{reader.TRAIN_SPLIT} (validation frames)", "frames": len(truth), "finder_missed": missed,
        "finder_box_iou": float(ious.mean()), "finder_side_accuracy": float(np.mean(side_ok)) if side_ok else 0.0,
        "ground_truth_crops": result["ground truth"], "finder_crops": result["finder"],
        "finder_crops_labelled_side": result["finder, labelled side"],
        # The row that predict (and the exported graph) reproduce: its side is the fit's where the model has one.
        "predict_row": "finder_crops_side_by_fit" if by_fit else "finder_crops",
        **({"finder_crops_side_by_fit": result["finder, side by fit"],
            "side_by_fit_accuracy": float(np.mean(fit_ok)) if fit_ok else 0.0} if by_fit else {}),
    }
