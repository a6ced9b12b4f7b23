"""How far the benchmark split moves under a last-bit change, and how far a render is from a reference.

    python scripts/benchmark_sensitivity.py [--reference DIR] [--frames N]

1. Renders the seed-0 evaluation split as is, and again with every mesh vertex moved by one
   float32 step in a random direction before ray casting: the size of difference another
   processor's rounding can make. Prints, per fingerprint key, the largest difference and the
   frames that differ.
2. With ``--reference DIR`` (a folder written by a ``make_reference.py`` on another machine:
   ``per_frame.json``, ``small_keys.npz``, ``first8_images.npz``), compares this machine's render
   with it: per key, per frame, the largest difference, and how many pixels or joints differ.

The figures go to docs/benchmark.md, where the check's tolerances cite them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from crossmodal.data.synthetic import scene as scene_module
from crossmodal.data.synthetic.fingerprint import OneStepRaycaster, differences, frame_fingerprint
from crossmodal.data.synthetic.scene import render_frame

KEYS = ("color", "depth_m", "mask", "xyz", "uv_vis", "K")


def pixel_counts(a, b) -> dict[str, int]:
    """Pixels (or joints) that differ in each key between two frames."""
    out = {}
    for key in KEYS:
        x, y = getattr(a, key), getattr(b, key)
        diff = x != y
        out[key] = int(diff.any(axis=-1).sum()) if key in ("color", "xyz", "uv_vis") else int(diff.sum())
    out["visibility"] = int((a.uv_vis[:, 2] != b.uv_vis[:, 2]).sum())
    return out


def one_ulp(frames: int) -> None:
    base, moved, counts = [], [], []
    original = scene_module.HandRaycaster
    for i in range(frames):
        a = render_frame(0, "evaluation", i)
        scene_module.HandRaycaster = OneStepRaycaster
        try:
            b = render_frame(0, "evaluation", i)
        finally:
            scene_module.HandRaycaster = original
        base.append(frame_fingerprint(a))
        moved.append(frame_fingerprint(b))
        counts.append(pixel_counts(a, b))
    print(f"one float32 step on every vertex, {frames} frames:")
    for key in KEYS + ("visibility",):
        per_frame = np.array([c[key] for c in counts])
        print(f"  {key:10s} frames differing {int((per_frame > 0).sum()):4d}, elements differing: "
              f"max {per_frame.max()} a frame, {per_frame.sum()} in all")
    stack = lambda fs: {k: np.stack([f[k] for f in fs]) for k in fs[0]}  # noqa: E731
    worst = differences(stack(base), stack(moved))
    print("  largest fingerprint difference: " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()))


def against_reference(folder: Path, frames: int) -> None:
    rows = json.loads((folder / "per_frame.json").read_text())
    small = np.load(folder / "small_keys.npz")
    images = np.load(folder / "first8_images.npz")
    differing = {key: [] for key in KEYS + ("side",)}
    largest = {key: 0.0 for key in ("xyz", "uv_vis", "K", "color_sum", "depth_sum_m", "depth_nonzero", "mask_hist")}
    for i in range(min(frames, len(rows))):
        f = render_frame(0, "evaluation", i)
        row = rows[i]
        for key in KEYS:
            if hashlib.sha256(np.ascontiguousarray(getattr(f, key)).tobytes()).hexdigest() != row[key + "_sha256"]:
                differing[key].append(i)
        if f.hand_side != str(small["side"][i]):
            differing["side"].append(i)
        for key in ("xyz", "uv_vis", "K"):
            largest[key] = max(largest[key], float(np.abs(getattr(f, key) - small[key][i]).max()))
        largest["color_sum"] = max(largest["color_sum"], abs(int(f.color.astype(np.int64).sum()) - row["color_sum"]))
        largest["depth_sum_m"] = max(largest["depth_sum_m"],
                                     abs(float(f.depth_m.astype(np.float64).sum()) - row["depth_sum_m"]))
        largest["depth_nonzero"] = max(largest["depth_nonzero"], abs(int((f.depth_m > 0).sum()) - row["depth_nonzero"]))
        hist = np.bincount(f.mask.ravel(), minlength=34)
        largest["mask_hist"] = max(largest["mask_hist"], int(np.abs(hist - np.array(row["mask_hist"])).sum()))
        if i < 8:
            for key, mine in (("color", f.color), ("depth_m", f.depth_m), ("mask", f.mask)):
                theirs = images[f"{key}_{i:03d}"]
                changed = (mine != theirs).any(axis=-1) if mine.ndim == 3 else mine != theirs
                if changed.any():
                    print(f"  frame {i} {key}: {int(changed.sum())} pixels differ, largest "
                          f"{float(np.abs(mine.astype(np.float64) - theirs).max()):.3g}")
    n = min(frames, len(rows))
    print(f"against {folder}, {n} frames:")
    for key, frames_ in differing.items():
        print(f"  {key:8s} {len(frames_)} frames differ" + (f": {frames_[:10]}" if frames_ else ""))
    print("  largest difference: " + ", ".join(f"{k} {v:.3g}" for k, v in largest.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="folder written by make_reference.py on another machine")
    parser.add_argument("--frames", type=int, default=400)
    args = parser.parse_args()
    if args.reference:
        against_reference(args.reference, args.frames)
    one_ulp(args.frames)


if __name__ == "__main__":
    main()
