"""Can the pose model's own features say where the training crop lies? A learned crop correction.

The pose model's error swings with its crop (``crop_jitter.py``: a good crop lies within 7% of the
finder's in most frames, but the model's keypoint fit cannot tell which). Here a ridge regression
reads the crop's pooled encoder features and its 2D keypoints and predicts where the mask's crop
(the one the model was trained on) lies relative to the crop it was given: the mask crop's centre
in the given crop's pixels, and the log of the side ratio. The crop is then cut again there.

Fitted on training frames after the finder's (not the pose model's validation frames): each
frame's mask crop moved by N(0, ``--shift``) of its side on each axis and rescaled by
exp(N(0, ``--scale``)), ``--draws`` times, turned by the mask's pixels. The ridge weight is chosen
on the last fifth of those frames. Scored on validation frames as ``crop_jitter.py`` scores them:
the finder's box and pixels, the labelled side, predict's cropping code; the crop corrected once
and twice, beside the finder's and the mask's.

    python experiments/box_refine.py --ckpt runs/s4_base/checkpoints/best.ckpt --finder runs/finder_person2/checkpoints/best.ckpt [--frames 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RIDGE = (0.1, 1.0, 10.0, 100.0, 1000.0)
ROUTES = ("finder", "refined", "refined_twice", "ground_truth")


class Ridge:
    """Ridge regression on standardised inputs; the intercept is not penalised."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Ridge":
        self.mean, self.std = x.mean(0), x.std(0) + 1e-8
        z = (x - self.mean) / self.std
        self.y_mean = y.mean(0)
        self.coef = np.linalg.solve(z.T @ z + self.weight * np.eye(z.shape[1]), z.T @ (y - self.y_mean))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.coef + self.y_mean


def target(crop, centre_mirrored: np.ndarray, side: float, true_side: float, crop_size: int) -> np.ndarray:
    """(3,): where the true crop lies in this crop: its centre in crop pixels, over the crop size,
    from the crop's centre; and log(true side / this side)."""
    from crossmodal.data.geometry import apply_homography

    uv = apply_homography(crop.homography, centre_mirrored[None])[0]
    return np.array([*(uv - (crop_size - 1) / 2.0) / crop_size, np.log(true_side / side)])


def mirrored_centre(region, mirror: bool, width: int) -> np.ndarray:
    """The region's centre in the image the model crops: flipped left-right for a mirrored hand."""
    return np.array([width - 1 - region.centre[0], region.centre[1]]) if mirror else np.asarray(region.centre)


def corrected(region, crop, step: np.ndarray, mirror: bool, width: int, crop_size: int):
    """``region`` moved and rescaled by a predicted :func:`target`."""
    from crossmodal.data.geometry import apply_homography

    uv = np.asarray(step[:2]) * crop_size + (crop_size - 1) / 2.0
    centre = apply_homography(np.linalg.inv(crop.homography), uv[None])[0]
    if mirror:
        centre[0] = width - 1 - centre[0]
    return dataclasses.replace(region, centre=centre, side=region.side * float(np.exp(step[2])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="pose model checkpoint")
    parser.add_argument("--finder", required=True, help="hand finder checkpoint")
    parser.add_argument("--frames", type=int, default=200, help="the first this many validation frames")
    parser.add_argument("--fit-frames", type=int, default=1500, help="training frames after the finder's")
    parser.add_argument("--draws", type=int, default=3, help="moved crops per fitting frame")
    parser.add_argument("--shift", type=float, default=0.06, help="centre shift s.d., in crop sides")
    parser.add_argument("--scale", type=float, default=0.12, help="log side ratio s.d.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="box_refine.json", help="the summary (JSON)")
    parser.add_argument("--dump", default=None, help="also the regression's inputs and targets (.npz)")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from crossmodal.data.joints import bone_scale
    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.finder.data import mask_box
    from crossmodal.finder.model import load_finder
    from crossmodal.metrics import protocol_millimetres, protocol_visibility
    from crossmodal.pipeline.end_to_end import validation_frames
    from crossmodal.predict import load_model
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_hand
    from crossmodal.predict.side import plan_hand
    from crossmodal.registry import DATASETS
    from encoders.keypoints import keypoint_fit, soft_argmax
    from side_probe import encoder_pass

    model, finder = load_model(args.ckpt), load_finder(args.finder)
    reader = DATASETS.get(model.config.data.dataset, key="data.dataset")
    dataset = reader(model.config.data.root, reader.TRAIN_SPLIT)
    margin, size = model.preprocess.crop_margin, model.crop_size
    if not model.has_keypoint_stage:
        parser.error(f"{args.ckpt}: the correction reads the 2D keypoint stage; this model has none")
    rng = np.random.default_rng(args.seed)

    def load(i: int):
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        if not mask.any():
            return None
        mirror = plan_hand(str(model.config.data.dataset), label["hand_side"], "labels",
                           bool(model.preprocess.mirror_left)).mirror
        return read_rgb_png(paths["color"]), mask, label, np.asarray(label["K"], dtype=np.float64), mirror

    def run(crops: list) -> tuple[np.ndarray, np.ndarray]:
        """Inputs of the regression, and poses in the crop's frame, from one encoder pass."""
        features, logits, pose = encoder_pass(model, crops)
        keypoints = soft_argmax(logits, size).numpy().reshape(len(crops), -1) / size
        x = np.concatenate([features.numpy(), keypoints, keypoint_fit(logits).numpy()[:, None]], axis=1)
        return x.astype(np.float64), pose.numpy().astype(np.float64)

    validation = validation_frames(model.config)
    skip = set(validation.tolist())
    first = int(finder.config["data"]["train_frames"])
    xs, ys = [], []
    for i in tqdm([i for i in range(first, len(dataset)) if i not in skip][: args.fit_frames],
                  desc="fitting crops", unit="frame"):
        frame = load(i)
        if frame is None:
            continue
        image, mask, _, K, mirror = frame
        box = mask_box(mask)
        truth = box_region(box[:2], box[2:], margin, "mask", mask)
        crops = []
        for _ in range(args.draws):
            moved = dataclasses.replace(truth, centre=truth.centre + rng.normal(0, args.shift, 2) * truth.side,
                                        side=truth.side * float(np.exp(rng.normal(0, args.scale))))
            crop = crop_hand(model, image, K, moved, mirror)[0]
            crops.append(crop)
            ys.append(target(crop, mirrored_centre(truth, mirror, image.shape[1]), moved.side, truth.side, size))
        xs.append(run(crops)[0])
    x, y = np.concatenate(xs), np.asarray(ys)
    if args.dump:
        np.savez(args.dump, x=x, y=y)
    cut = int(len(x) * 0.8) // args.draws * args.draws  # whole frames on each side of the cut
    held = {w: float(np.mean((Ridge(w).fit(x[:cut], y[:cut]).predict(x[cut:]) - y[cut:]) ** 2)) for w in RIDGE}
    weight = min(held, key=held.get)
    ridge = Ridge(weight).fit(x, y)
    baseline = float(np.mean((y[cut:] - y[:cut].mean(0)) ** 2))

    rows = []
    for i in tqdm(validation[: args.frames].tolist(), desc="corrected crops", unit="frame"):
        frame = load(i)
        if frame is None:
            continue
        image, mask, label, K, mirror = frame
        found = finder.find(image)
        if found is None:
            continue
        xyz = np.asarray(label["xyz"], dtype=np.float64)
        scale = float(bone_scale(xyz))
        visible = protocol_visibility(np.asarray(label["visible"], dtype=bool)[None], False)[0]
        flip = np.array([-1.0 if mirror else 1.0, 1.0, 1.0])

        def error(crop, pose: np.ndarray) -> float:
            pose = pose @ crop.rotation * flip
            pred, truth = protocol_millimetres(pose[None], ((xyz - xyz[0]) / scale)[None], np.array([scale]), False)
            return float(np.linalg.norm(pred[0] - truth[0], axis=1)[visible].mean())

        box = mask_box(mask)
        row = {"frame": i}
        region = box_region(found.box[:2], found.box[2:], margin, "finder", found.pixels, found=True)
        truth = box_region(box[:2], box[2:], margin, "mask", mask)
        crop = crop_hand(model, image, K, truth, mirror)[0]
        row["ground_truth"] = error(crop, run([crop])[1][0])
        for route in ROUTES[:3]:
            crop = crop_hand(model, image, K, region, mirror)[0]
            x_i, pose = run([crop])
            row[route] = error(crop, pose[0])
            region = corrected(region, crop, ridge.predict(x_i)[0], mirror, image.shape[1], size)
        rows.append(row)
    result = {"checkpoint": args.ckpt, "finder": args.finder, "fit_samples": len(x), "ridge_weight": weight,
              "held_out_mse": held, "held_out_mse_of_the_mean": baseline,
              "summary": {"frames": len(rows), **{r: float(np.mean([row[r] for row in rows])) for r in ROUTES}},
              "args": vars(args)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
