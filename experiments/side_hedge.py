"""Hedge the side: average the two side hypotheses' poses, weighted by how likely each is.

``predict`` takes the side whose 2D keypoint maps peak higher (the keypoint fit) and is right in
about 0.73 of the finder's crops; a wrong side costs 20-27 mm. A hard choice with probability p of
being right costs, on average over such frames, p |a| + (1 - p) |a + d| (a the right hypothesis'
error, d the step to the other one); the pose averaged with weights p and 1 - p errs by
|a + (1 - p) d|, never more, since a norm is convex. So when the fit is unsure, a calibrated
average should cost less than the choice.

Each validation frame is cropped by the finder's box and pixels (and, for reference, by its mask)
both ways, as a right hand and mirrored as a left one, exactly as ``predict`` crops it. The
probability that the hand is a right one is a logistic function of the two crops' fit difference,
fitted on training frames after the finder's (not the validation frames), on their finder crops
or (``--calibrate-on mask``) their mask crops, which a pose model's training could fit alone. Reported
per crop source, as mean EPE over the frames where the finder found a hand:

* ``labelled``: the labelled side (no side error);
* ``by_fit``: the side whose fit is higher (what ``predict`` gives);
* ``mean``: the two poses averaged, 1/2 each;
* ``hedged``: averaged with weights p and 1 - p;
* ``hedged_sure``: the fit's side where p is beyond ``--sure`` either way, the hedged pose elsewhere;
* ``oracle``: the better of the two, frame by frame.

    python experiments/side_hedge.py --ckpt runs/s4_base/checkpoints/best.ckpt --finder runs/finder_person2/checkpoints/best.ckpt [--frames 800]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROUTES = ("labelled", "by_fit", "mean", "hedged", "hedged_sure", "oracle")


def hedge(poses: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(N, J, 3) the two hypotheses' poses (N, 2, J, 3) [as a right hand, as a left one]
    averaged with weights p(right) and 1 - p(right), each (N,)."""
    p = np.asarray(right, dtype=np.float64)[:, None, None]
    return p * poses[:, 0] + (1.0 - p) * poses[:, 1]


def route_errors(error, poses: np.ndarray, fits: np.ndarray, right_p: float, left: bool, sure: float) -> dict:
    """Every route's EPE for one frame; ``error`` maps a (J, 3) camera-frame pose to its EPE."""
    both = [error(poses[0]), error(poses[1])]
    fit_side = int(fits[1] > fits[0])  # 1: taken for a left hand
    hedged = hedge(poses[None], np.array([right_p]))[0]
    return {"labelled": both[int(left)], "by_fit": both[fit_side], "mean": error(poses.mean(axis=0)),
            "hedged": error(hedged),
            "hedged_sure": both[fit_side] if abs(right_p - 0.5) > sure - 0.5 else error(hedged),
            "oracle": min(both)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="pose model checkpoint (trained with mirror_left)")
    parser.add_argument("--finder", required=True, help="hand finder checkpoint")
    parser.add_argument("--frames", type=int, default=800, help="the first this many validation frames")
    parser.add_argument("--fit-frames", type=int, default=800, help="training frames after the finder's")
    parser.add_argument("--sure", type=float, default=0.8, help="hedged_sure: p beyond which the fit's side is kept")
    parser.add_argument("--calibrate-on", choices=("finder", "mask"), default="finder",
                        help="the training frames' crops the probability is fitted on")
    parser.add_argument("--flip-average", action="store_true", help="the finder averaged with its mirror image")
    parser.add_argument("--out", default="side_hedge.json", help="the summary (JSON)")
    parser.add_argument("--rows", default=None, help="also every frame's errors (JSON)")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from crossmodal.data.joints import bone_scale
    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.finder.data import mask_box
    from crossmodal.finder.model import load_finder, with_flip_average
    from crossmodal.metrics import protocol_millimetres, protocol_visibility
    from crossmodal.pipeline.end_to_end import validation_frames
    from crossmodal.predict import load_model
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_hand
    from crossmodal.registry import DATASETS
    from encoders.keypoints import keypoint_fit
    from side_probe import Logistic, encoder_pass

    model, finder = load_model(args.ckpt), load_finder(args.finder)
    if args.flip_average:
        finder = with_flip_average(finder, True)
    if not (model.preprocess.mirror_left and model.has_keypoint_stage):
        parser.error(f"{args.ckpt}: the hedge needs a model trained with mirror_left and a 2D keypoint stage")
    reader = DATASETS.get(model.config.data.dataset, key="data.dataset")
    dataset = reader(model.config.data.root, reader.TRAIN_SPLIT)
    margin = model.preprocess.crop_margin

    def frame(i: int, sources: tuple[str, ...]):
        """Per crop source: the two hypotheses' camera-frame poses (2, J, 3) and fits (2,); None
        when the hand has no pixels or the finder finds none."""
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        image = read_rgb_png(paths["color"])
        found = finder.find(image)
        if not mask.any() or found is None:
            return None, label
        box = mask_box(mask)
        regions = {"finder": box_region(found.box[:2], found.box[2:], margin, "finder", found.pixels, found=True),
                   "mask": box_region(box[:2], box[2:], margin, "mask", mask)}
        K = np.asarray(label["K"], dtype=np.float64)
        out = {}
        for source in sources:
            crops = [crop_hand(model, image, K, regions[source], mirror)[0] for mirror in (False, True)]
            _, logits, pose = encoder_pass(model, crops)
            flips = (np.array([1.0, 1.0, 1.0]), np.array([-1.0, 1.0, 1.0]))
            poses = np.stack([p @ c.rotation * f for p, c, f in zip(pose.numpy().astype(np.float64), crops, flips)])
            out[source] = (poses, keypoint_fit(logits).numpy())
        return out, label

    validation = validation_frames(model.config)
    skip = set(validation.tolist())
    first = int(finder.config["data"]["train_frames"])
    margins: dict[str, list[float]] = {"finder": [], "mask": []}
    lefts = []
    for i in tqdm([i for i in range(first, len(dataset)) if i not in skip][: args.fit_frames],
                  desc="calibrating the fit", unit="frame"):
        got, label = frame(i, ("finder", "mask"))
        if got is None:
            continue
        for source, (_, fits) in got.items():
            margins[source].append(fits[0] - fits[1])
        lefts.append(label["hand_side"] == "left")
    right = 1.0 - np.asarray(lefts, dtype=np.float64)
    calibrations = {source: Logistic(l2=0.0).fit(np.asarray(m)[:, None], right) for source, m in margins.items()}
    calibration = calibrations[args.calibrate_on]

    rows = []
    for i in tqdm(validation[: args.frames].tolist(), desc="hedging", unit="frame"):
        got, label = frame(i, ("finder", "mask"))
        if got is None:
            continue
        xyz = np.asarray(label["xyz"], dtype=np.float64)
        scale = float(bone_scale(xyz))
        visible = protocol_visibility(np.asarray(label["visible"], dtype=bool)[None], False)[0]

        def error(pose: np.ndarray) -> float:
            pred, truth = protocol_millimetres(pose[None], ((xyz - xyz[0]) / scale)[None], np.array([scale]), False)
            return float(np.linalg.norm(pred[0] - truth[0], axis=1)[visible].mean())

        row = {"frame": i, "left": label["hand_side"] == "left"}
        for source, (poses, fits) in got.items():
            p = float(calibration.probability(np.array([[fits[0] - fits[1]]]))[0])
            row[source] = {"p_right": p, **route_errors(error, poses, fits, p, row["left"], args.sure)}
            row[source]["hedged_by"] = {
                name: error(hedge(poses[None], c.probability(np.array([[fits[0] - fits[1]]])))[0])
                for name, c in calibrations.items()}
        rows.append(row)
    summary = {"frames": len(rows)}
    for source in ("finder", "mask"):
        summary[source] = {r: float(np.mean([row[source][r] for row in rows])) for r in ROUTES}
        summary[source]["hedged_by_calibration_on"] = {
            name: float(np.mean([row[source]["hedged_by"][name] for row in rows])) for name in calibrations}
        p = np.array([row[source]["p_right"] for row in rows])
        left = np.array([row["left"] for row in rows])
        summary[source]["fit_accuracy"] = float(np.mean((p < 0.5) == left))
        summary[source]["unsure_share"] = float(np.mean(np.abs(p - 0.5) <= args.sure - 0.5))
    result = {"checkpoint": args.ckpt, "finder": args.finder, "calibration_frames": len(lefts),
              "calibration": {source: {"weight": float(c.w.detach()[0] / c.std[0]),
                                       "bias": float(c.b.detach() - c.w.detach()[0] * c.mean[0] / c.std[0])}
                              for source, c in calibrations.items()},
              "summary": summary, "args": vars(args)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.rows:
        Path(args.rows).write_text(json.dumps(rows) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
