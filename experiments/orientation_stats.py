"""How well a hand mask's long axis stands in for the palm's (learning study, canonical hand).

    python experiments/orientation_stats.py --root data/synthetic --caches data/cache/synthetic_training_<hash>.h5 ...

1. In the source images: how often the mask's principal axis, signed by the third moment along
   it or towards the wider half of the mask, points the way of the ground-truth palm axis
   (wrist -> middle knuckle, joints 0 -> 12).
2. In each cache's crops: the angle between the ground-truth palm axis and image-up.
"""

from __future__ import annotations

import argparse

import numpy as np


def sign_agreement(root: str, frames: int, every: int) -> dict[str, float]:
    import crossmodal.data  # noqa: F401 - registers the datasets
    from crossmodal.data.geometry import roll_upright
    from crossmodal.data.preprocess import mask_pixels
    from crossmodal.data.rhd import hand_mask
    from crossmodal.registry import DATASETS

    dataset = DATASETS.get("synthetic")(root, "training")
    votes: dict[str, list[bool]] = {"third moment": [], "wider half": []}
    for i in range(0, min(frames, len(dataset)), every):
        frame = dataset[i]
        pixels = mask_pixels(hand_mask(np.asarray(frame["mask"]), frame["hand_side"]))
        uv = np.asarray(frame["uv"], dtype=np.float64)
        palm = uv[12] - uv[0]
        # The kept sign is geometry.roll_upright's own: the axis it turns onto (0, -1) is Rz^T (0, -1).
        kept = roll_upright(pixels)[:2, :2].T @ np.array([0.0, -1.0])
        votes["wider half"].append(kept @ palm > 0)
        # The first version's sign: the third moment along the same (unsigned) axis.
        d = pixels - pixels.mean(axis=0)
        along = d @ kept
        votes["third moment"].append((np.mean(along**3) >= 0) == (kept @ palm > 0))
    return {k: float(np.mean(v)) for k, v in votes.items()}


def crop_angles(path: str, count: int) -> dict[str, float]:
    from crossmodal.data.cache import CacheReader

    reader = CacheReader(path)
    uv = np.stack([reader[i]["uv"] for i in range(min(count, len(reader)))]).astype(np.float64)
    reader.close()
    palm = uv[:, 12] - uv[:, 0]
    angle = np.degrees(np.abs(np.arctan2(palm[:, 0], -palm[:, 1])))  # 0: pointing up the image
    return {"within 30": float(np.mean(angle < 30)), "within 90": float(np.mean(angle < 90)),
            "beyond 150": float(np.mean(angle > 150))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/synthetic", help="synthetic data root (RHD format)")
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--every", type=int, default=4, help="use every n-th frame in part 1")
    p.add_argument("--caches", nargs="*", default=[], help="training caches for part 2")
    p.add_argument("--crops", type=int, default=2000)
    a = p.parse_args()
    for name, share in sign_agreement(a.root, a.frames, a.every).items():
        print(f"sign by {name}: agrees with wrist -> knuckle in {100 * share:.0f}% of frames")
    for path in a.caches:
        stats = crop_angles(path, a.crops)
        print(f"{path}: palm axis within 30 deg of up {100 * stats['within 30']:.0f}%, within 90 "
              f"{100 * stats['within 90']:.0f}%, flipped (beyond 150) {100 * stats['beyond 150']:.0f}%")


if __name__ == "__main__":
    main()
