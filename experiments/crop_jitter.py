"""How much a pose model's error moves with its crop, and whether the model can pick its own crop.

Each validation frame is cropped, with the labelled side (the side costs nothing here) and
predict's own cropping code, by the finder's box and pixels and by eight crops around it: the box
rescaled about its centre (x 0.85, 0.92, 1.08, 1.17) and moved by 7% of its side along each image
axis; the finder's pixels turn every one. Beside them, the ground-truth crop (the mask's box) and a
crop re-cut around the model's own 2D keypoints: their box, widened to a mask box by the median
ratio measured on training frames' ground-truth crops (``--calibrate`` frames after the finder's).

Reported, as mean EPE over the frames (protocol: palm-relative, visible joints):

* ``finder``: the finder's crop, as predict cuts it;
* ``oracle``: the best of the nine crops, frame by frame: what a perfect chooser would give;
* ``by_fit``: the crop whose 2D keypoint maps peak highest (the cue that picks the side);
* ``mean``: the nine crops' poses averaged; ``fit_weighted``: averaged with weights
  softmax(fit / 0.02), fixed before measuring;
* ``keypoint_box``: the crop re-cut around the model's own keypoints.

    python experiments/crop_jitter.py --ckpt runs/s4_base/checkpoints/best.ckpt --finder runs/finder_person2/checkpoints/best.ckpt [--frames 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
SHIFT = 0.07  # of the crop side
FIT_TEMPERATURE = 0.02
ROUTES = ("finder", "oracle", "by_fit", "mean", "fit_weighted", "keypoint_box", "ground_truth")


def candidates(region, scales=SCALES, shift: float = SHIFT) -> list[tuple[str, object]]:
    """(name, region): ``region`` rescaled about its centre by each of ``scales``, then moved by
    ``shift`` times its side right, left, down and up. The finder's pixels still turn each crop."""
    out = [(f"scale {s:g}", dataclasses.replace(region, side=region.side * s)) for s in scales]
    for name, step in (("right", (1, 0)), ("left", (-1, 0)), ("down", (0, 1)), ("up", (0, -1))):
        centre = region.centre + shift * region.side * np.asarray(step, dtype=np.float64)
        out.append((f"shift {name}", dataclasses.replace(region, centre=centre)))
    return out


def keypoint_ratios(keypoints_uv: np.ndarray, centre: np.ndarray, side: float) -> np.ndarray:
    """(3,) a crop (centre, side) in units of the keypoints' box: the centre's offset from the
    box's centre (u, v) and the crop side, each over the box's longer side."""
    lo, hi = keypoints_uv.min(axis=0), keypoints_uv.max(axis=0)
    extent = float((hi - lo).max())
    return np.array([*(np.asarray(centre) - (lo + hi) / 2.0) / extent, side / extent])


def keypoint_crop(keypoints_uv: np.ndarray, ratios: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, side) of the crop that ``ratios`` (:func:`keypoint_ratios`, e.g. the median over
    training frames) place around these keypoints: the inverse of :func:`keypoint_ratios`."""
    lo, hi = keypoints_uv.min(axis=0), keypoints_uv.max(axis=0)
    extent = float((hi - lo).max())
    return (lo + hi) / 2.0 + np.asarray(ratios[:2]) * extent, float(ratios[2]) * extent


def fit_weights(fits: np.ndarray, temperature: float = FIT_TEMPERATURE) -> np.ndarray:
    """softmax(fits / temperature): the candidates' weights in ``fit_weighted``."""
    w = np.exp((np.asarray(fits, dtype=np.float64) - np.max(fits)) / temperature)
    return w / w.sum()


def summary(rows: list[dict]) -> dict:
    """Mean EPE of every route over the frames, and of each candidate crop alone."""
    out = {"frames": len(rows), **{route: float(np.mean([r[route] for r in rows])) for route in ROUTES}}
    names = rows[0]["candidates"] if rows else []
    out["candidates"] = {name: float(np.mean([r["errors"][k] for r in rows])) for k, name in enumerate(names)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="pose model checkpoint")
    parser.add_argument("--finder", required=True, help="hand finder checkpoint")
    parser.add_argument("--frames", type=int, default=200, help="the first this many validation frames")
    parser.add_argument("--calibrate", type=int, default=600,
                        help="training frames after the finder's that set the keypoint box's ratios")
    parser.add_argument("--out", default="crop_jitter.json", help="the summary (JSON)")
    parser.add_argument("--rows", default=None, help="also every frame's errors (JSON)")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from crossmodal.data.geometry import apply_homography
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
    margin = model.preprocess.crop_margin
    if not model.has_keypoint_stage:
        parser.error(f"{args.ckpt}: the keypoint routes need a model with a 2D keypoint stage")

    def load(i: int):
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        if not mask.any():
            return None
        mirror = plan_hand(str(model.config.data.dataset), label["hand_side"], "labels",
                           bool(model.preprocess.mirror_left)).mirror
        return read_rgb_png(paths["color"]), mask, label, np.asarray(label["K"], dtype=np.float64), mirror

    def run(crops: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Poses (in the crop's frame), fits and keypoints (crop pixels), from one encoder pass."""
        _, logits, pose = encoder_pass(model, crops)
        return (pose.numpy().astype(np.float64), keypoint_fit(logits).numpy(),
                soft_argmax(logits, model.crop_size).numpy().astype(np.float64))

    def keypoints_in_image(crop, keypoints: np.ndarray, mirror: bool, width: int) -> np.ndarray:
        uv = apply_homography(np.linalg.inv(crop.homography), keypoints)
        if mirror:
            uv[:, 0] = width - 1 - uv[:, 0]
        return uv

    validation = validation_frames(model.config)
    skip = set(validation.tolist())
    first = int(finder.config["data"]["train_frames"])
    ratios = []
    for i in tqdm([i for i in range(first, len(dataset)) if i not in skip][: args.calibrate],
                  desc="keypoint box ratios", unit="frame"):
        frame = load(i)
        if frame is None:
            continue
        image, mask, _, K, mirror = frame
        box = mask_box(mask)
        region = box_region(box[:2], box[2:], margin, "mask", mask)
        crop, _ = crop_hand(model, image, K, region, mirror)
        uv = keypoints_in_image(crop, run([crop])[2][0], mirror, image.shape[1])
        ratios.append(keypoint_ratios(uv, region.centre, region.side))
    median_ratios = np.median(np.asarray(ratios), axis=0)

    rows = []
    for i in tqdm(validation[: args.frames].tolist(), desc="crop jitter", unit="frame"):
        frame = load(i)
        if frame is None:
            continue
        image, mask, label, K, mirror = frame
        found = finder.find(image)
        if found is None:
            continue  # finder-eval counts the missed hands; here only crops are compared
        xyz = np.asarray(label["xyz"], dtype=np.float64)
        scale = float(bone_scale(xyz))
        visible = protocol_visibility(np.asarray(label["visible"], dtype=bool)[None], False)[0]
        flip = np.array([-1.0 if mirror else 1.0, 1.0, 1.0])

        def error(pose: np.ndarray) -> float:
            pred, truth = protocol_millimetres(pose[None], ((xyz - xyz[0]) / scale)[None], np.array([scale]), False)
            return float(np.linalg.norm(pred[0] - truth[0], axis=1)[visible].mean())

        base = box_region(found.box[:2], found.box[2:], margin, "finder", found.pixels, found=True)
        box = mask_box(mask)
        named = candidates(base) + [("ground truth", box_region(box[:2], box[2:], margin, "mask", mask))]
        crops = [crop_hand(model, image, K, region, mirror)[0] for _, region in named]
        poses, fits, keypoints = run(crops)
        poses = np.stack([pose @ crop.rotation * flip for pose, crop in zip(poses, crops)])
        errors = [error(pose) for pose in poses]
        n, at = len(named) - 1, SCALES.index(1.0)
        centre, side = keypoint_crop(keypoints_in_image(crops[at], keypoints[at], mirror, image.shape[1]), median_ratios)
        again = crop_hand(model, image, K, dataclasses.replace(base, centre=centre, side=side), mirror)[0]
        weights = fit_weights(fits[:n])
        rows.append({"frame": i, "candidates": [name for name, _ in named[:n]], "errors": errors[:n],
                     "fits": fits[:n].tolist(), "finder": errors[at], "oracle": min(errors[:n]),
                     "by_fit": errors[int(np.argmax(fits[:n]))], "mean": error(poses[:n].mean(axis=0)),
                     "fit_weighted": error((weights[:, None, None] * poses[:n]).sum(axis=0)),
                     "keypoint_box": error(run([again])[0][0] @ again.rotation * flip), "ground_truth": errors[n]})
    result = {"checkpoint": args.ckpt, "finder": args.finder, "keypoint_box_ratios": median_ratios.tolist(),
              "keypoint_box_ratio_iqr": (np.percentile(ratios, 75, axis=0) - np.percentile(ratios, 25, axis=0)).tolist(),
              "summary": summary(rows)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.rows:
        Path(args.rows).write_text(json.dumps(rows) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
