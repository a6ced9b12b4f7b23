"""Where the end-to-end error lies between the finder's box and its turn, frame by frame.

Each validation frame of a pose model is cropped three ways, all with the labelled side (so the
side costs nothing here) and predict's own cropping code:

* ``ground_truth``: the mask's box, turned by the mask's pixels (what the model trained on);
* ``finder_box``: the finder's box, turned by the mask's pixels: what the box alone costs;
* ``finder``: the finder's box and pixels, as predict crops it.

and the EPE (protocol: palm-relative, visible joints) of each crop is kept per frame, with the turn
between the finder's crop and the ground truth's (degrees) and the box IoU. The summary splits
the frames by whether the finder's crop is turned by more than 90 degrees (its upright rule took
the other end of the hand) and by box IoU.

    python experiments/crop_error_split.py --ckpt runs/s4_base/checkpoints/best.ckpt --finder runs/finder_zoom/checkpoints/best.ckpt [--frames 400]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

CROPS = ("ground_truth", "finder_box", "finder")


def frame_errors(model, image: np.ndarray, K: np.ndarray, mask: np.ndarray, found, label: dict) -> dict:
    from crossmodal.data.joints import bone_scale
    from crossmodal.finder.data import mask_box
    from crossmodal.finder.metrics import box_iou
    from crossmodal.metrics import protocol_millimetres, protocol_visibility
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_hand
    from crossmodal.predict.side import plan_hand

    import torch

    mirror = plan_hand(str(model.config.data.dataset), label["hand_side"], "labels", bool(model.preprocess.mirror_left)).mirror
    margin, truth_box = model.preprocess.crop_margin, mask_box(mask)
    regions = {"ground_truth": box_region(truth_box[:2], truth_box[2:], margin, "mask", mask),
               "finder_box": box_region(found.box[:2], found.box[2:], margin, "finder", mask),
               "finder": box_region(found.box[:2], found.box[2:], margin, "finder", found.pixels, found=True)}
    xyz = np.asarray(label["xyz"], dtype=np.float64)
    scale = float(bone_scale(xyz))
    visible = protocol_visibility(np.asarray(label["visible"], dtype=bool)[None], False)[0]
    row, rotations = {}, {}
    for name, region in regions.items():
        crop, _ = crop_hand(model, image, K, region, mirror)
        pose = (model.predict(crop.image[None])["pose"][0].astype(np.float64) @ crop.rotation)
        pose = pose * np.array([-1.0 if mirror else 1.0, 1.0, 1.0])
        pred_mm, gt_mm = protocol_millimetres(pose[None], ((xyz - xyz[0]) / scale)[None], np.array([scale]), False)
        row[name] = float(np.linalg.norm(pred_mm[0] - gt_mm[0], axis=1)[visible].mean())
        rotations[name] = crop.rotation
    relative = rotations["finder"] @ rotations["ground_truth"].T
    row["turn"] = math.degrees(math.atan2(relative[1, 0], relative[0, 0]))
    row["box_iou"] = float(box_iou(torch.as_tensor(found.box[None]), torch.as_tensor(truth_box[None]))[0])
    return row


def summary(rows: list[dict]) -> dict:
    turned = np.abs([r["turn"] for r in rows]) > 90.0
    low_iou = np.array([r["box_iou"] for r in rows]) < 0.5
    groups = {"all": np.ones(len(rows), dtype=bool), "turned over 90 degrees": turned,
              "turned within 90 degrees": ~turned, "box IoU < 0.5": low_iou, "box IoU >= 0.5": ~low_iou}
    out = {}
    for name, keep in groups.items():
        out[name] = {"frames": int(keep.sum()),
                     **{crop: float(np.mean([r[crop] for r, k in zip(rows, keep) if k])) if keep.any() else None
                        for crop in CROPS}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="pose model checkpoint")
    parser.add_argument("--finder", required=True, help="hand finder checkpoint")
    parser.add_argument("--frames", type=int, default=400, help="the first this many validation frames")
    parser.add_argument("--out", default="crop_error_split.json")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.finder.model import load_finder
    from crossmodal.pipeline.end_to_end import validation_frames
    from crossmodal.predict import load_model
    from crossmodal.registry import DATASETS

    model, finder = load_model(args.ckpt), load_finder(args.finder)
    reader = DATASETS.get(model.config.data.dataset, key="data.dataset")
    dataset = reader(model.config.data.root, reader.TRAIN_SPLIT)
    rows = []
    for i in tqdm(validation_frames(model.config)[: args.frames].tolist(), desc="crop error split", unit="frame"):
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        image = read_rgb_png(paths["color"])
        found = finder.find(image) if mask.any() else None
        if found is None:
            continue  # no mask (the cache skips it) or no hand found (finder-eval counts those)
        rows.append({"frame": i, **frame_errors(model, image, np.asarray(label["K"], dtype=np.float64), mask, found, label)})
    result = {"checkpoint": args.ckpt, "finder": args.finder, "summary": summary(rows), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name, values in result["summary"].items():
        print(f"{name:26s} {values['frames']:4d} frames: " + " | ".join(
            f"{crop} {values[crop]:.2f} mm" for crop in CROPS if values[crop] is not None))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
