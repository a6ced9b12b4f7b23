"""How the hand finder's crops differ from ground-truth-mask crops: the distributions a pose model
must tolerate end to end.

For each frame, the finder's box and hand pixels against the evaluated hand's mask:

* ``shift``: the box centre's offset, in units of the ground-truth crop side (x and y);
* ``scale``: the finder crop's side over the ground-truth crop's (both margin x the box's longer
  side, so the margin cancels);
* ``turn``: the difference, in degrees (-180, 180], between the roll that turns the finder's pixels
  upright and the roll that turns the mask's (``geometry.roll_upright``, as ``orient`` crops);
* box IoU, and whether the finder's side is the labelled one.

    python experiments/finder_errors.py --finder runs/latest-finder/checkpoints/best.ckpt [--split validation] [--frames 800]

``--split validation`` takes the last ``--frames`` of the training split (within the frames a pose
model validates on); ``unseen`` the training frames neither the finder trained on (its first
``data.train_frames``) nor a pose model validates on (the last 10%): the errors to train a pose
model with; ``test`` the evaluation split. Prints percentiles and writes them, with every frame's
values, as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np


def roll_angle(pixels_uv: np.ndarray) -> float:
    """Degrees of the roll that turns these pixels' signed long axis upright."""
    from crossmodal.data.geometry import roll_upright

    R = roll_upright(pixels_uv)
    return math.degrees(math.atan2(R[1, 0], R[0, 0]))


def wrapped(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


def measure(finder, image: np.ndarray, mask: np.ndarray, side: str) -> dict | None:
    from crossmodal.data.preprocess import mask_pixels
    from crossmodal.finder.data import mask_box

    found = finder.find(image)
    if found is None:
        return None
    gt, fb = mask_box(mask), np.asarray(found.box, dtype=np.float64)
    gt_side, f_side = float(max(gt[2:] - gt[:2])), float(max(fb[2:] - fb[:2]))
    shift = ((fb[:2] + fb[2:]) - (gt[:2] + gt[2:])) / 2.0 / gt_side
    inter = np.clip(np.minimum(gt[2:], fb[2:]) - np.maximum(gt[:2], fb[:2]), 0, None).prod()
    union = (gt[2:] - gt[:2]).prod() + (fb[2:] - fb[:2]).prod() - inter
    pixels = mask_pixels(found.pixels)
    return {"shift_x": float(shift[0]), "shift_y": float(shift[1]), "scale": f_side / gt_side,
            "turn": wrapped(roll_angle(pixels) - roll_angle(mask_pixels(mask))),
            "box_iou": float(inter / union), "side_ok": found.side == side}


def summary(rows: list[dict], frames: int) -> dict:
    out: dict = {"frames": frames, "found": len(rows)}
    for key in ("shift_x", "shift_y", "scale", "turn", "box_iou"):
        values = np.array([r[key] for r in rows])
        out[key] = {f"p{q}": float(np.percentile(values, q)) for q in (5, 10, 25, 50, 75, 90, 95)}
    turn = np.abs([r["turn"] for r in rows])
    out["turn_abs"] = {f"p{q}": float(np.percentile(turn, q)) for q in (50, 75, 90, 95)}
    out["turn_over_90_share"] = float(np.mean(turn > 90.0))
    out["box_iou_at_least_half_share"] = float(np.mean([r["box_iou"] >= 0.5 for r in rows]) * len(rows) / frames)
    out["side_accuracy"] = float(np.mean([r["side_ok"] for r in rows]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finder", required=True)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--split", default="validation", choices=["validation", "unseen", "test"])
    parser.add_argument("--frames", type=int, default=800, help="at most this many frames")
    parser.add_argument("--out", default=None, help="JSON file (default: finder_errors_<split>.json beside the finder's run)")
    parser.add_argument("--flip-average", action="store_true",
                        help="locate with the network averaged with the mirror image (finder.flip_average)")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.data.rhd import SyntheticDataset
    from crossmodal.finder.model import load_finder, with_flip_average

    finder = load_finder(args.finder)
    if args.flip_average:
        finder = with_flip_average(finder, True)
    if args.split in ("validation", "unseen"):
        dataset = SyntheticDataset(args.data, SyntheticDataset.TRAIN_SPLIT)
        validation = len(dataset) - math.ceil(0.1 * len(dataset))
        if args.split == "validation":
            frames = range(max(validation, len(dataset) - args.frames), len(dataset))
        else:
            first = int(finder.config["data"]["train_frames"])
            frames = range(first, min(validation, first + args.frames))
    else:
        dataset = SyntheticDataset(args.data, SyntheticDataset.TEST_SPLIT)
        frames = range(min(args.frames, len(dataset)))
    rows, counted = [], 0
    for i in tqdm(frames, desc="finder errors", unit="frame"):
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        if not mask.any():
            continue
        counted += 1
        row = measure(finder, read_rgb_png(paths["color"]), mask, label["hand_side"])
        if row is not None:
            rows.append({"frame": i, **row})
    result = {"finder": str(args.finder), "split": args.split, "summary": summary(rows, counted), "rows": rows}
    ckpt = Path(args.finder)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out = Path(args.out) if args.out else run_dir / f"finder_errors_{args.split}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
