"""Which views hold the hand's side? The model's keypoint fit against the way the palm faces.

A left hand is a right hand mirrored, and a mirror in depth leaves a near-orthographic silhouette
unchanged: the image of a left hand is, up to perspective, the image of a right hand seen from its
other face. What tells the two apart is appearance: the synthetic generator tints the surfaces that
face the palmar side lighter and pinker (``crossmodal.data.synthetic.scene.render_scene``), so the
side should be visible where the palm is, and lost where the back of the hand or its edge faces the
camera. This measures it.

Each frame is cut both ways (as is, and mirrored, as ``predict`` cuts it) around its ground-truth
mask, and with ``--finder`` also around the finder's box and pixels; the side is the hypothesis whose
2D keypoint maps peak higher (``predict``'s side by fit). Frames are binned by how the palm faces the
camera: the cosine between the palmar normal (from the wrist and the index and little-finger MCPs;
its sign set by the labelled side) and the direction from the palm to the camera, +1 for a palm
facing the camera, -1 for the back of the hand, 0 edge-on. Per bin: frames, the side's accuracy,
and the EPE with the labelled side and with the other one (what a wrong side costs there).

    python experiments/side_views.py --ckpt runs/s4/checkpoints/best.ckpt [--finder F] [--split validation] [--out DIR]

Frames are also binned by the fingers' mean bend: a flat hand seen edge-on is where a mirror in
depth changes least. Writes ``side_views_<split>.json`` (the tables), ``side_views_<split>_rows.json``
(per frame) and ``side_views_<split>.jpg`` (the two crops of frames from three views, right and
wrong) to ``--out`` (default: beside the checkpoint's run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_probe import crops_both_ways, measures  # noqa: E402

#: Bin edges of the palm's facing cosine: the back of the hand, oblique back, edge-on, oblique palm, palm.
EDGES = (-1.0, -0.5, -0.2, 0.2, 0.5, 1.0)
BIN_NAMES = ("back of the hand (< -0.5)", "back, oblique (-0.5 to -0.2)", "edge-on (-0.2 to 0.2)",
             "palm, oblique (0.2 to 0.5)", "palm (> 0.5)")
#: Bin edges of the fingers' mean bend (degrees): a flat hand to a fist.
BEND_EDGES = (0.0, 20.0, 40.0, 60.0, 180.0)
BEND_NAMES = ("flat (< 20 deg)", "20-40 deg", "40-60 deg", "curled (> 60 deg)")


def palm_facing(xyz: np.ndarray, side: str) -> float:
    """Cosine between the palmar normal of the joints ``xyz`` (21, 3), camera frame, and the direction
    from the palm to the camera: > 0 where the palm faces the camera. The generator's palmar axis is
    (index MCP - wrist) x (little MCP - wrist) for a right hand and its opposite for a left one."""
    wrist, index, little = xyz[0], xyz[8], xyz[20]
    normal = np.cross(index - wrist, little - wrist)
    normal = normal / max(float(np.linalg.norm(normal)), 1e-12) * (1.0 if side == "right" else -1.0)
    to_camera = -(wrist + index + little) / 3.0
    return float(normal @ to_camera / max(float(np.linalg.norm(to_camera)), 1e-12))


def finger_bend(xyz: np.ndarray) -> float:
    """Mean bend (degrees) at the MCP, PIP and DIP joints of the four fingers of the joints ``xyz``
    (21, 3): 0 for a flat hand. Whichever way a finger bends, a depth mirror of a bent hand puts
    the bend on the other face, so a flat hand is where the silhouette and shading say least."""
    angles = []
    for finger in range(1, 5):  # index .. little; RHD lists each finger from the tip to the MCP
        chain = [xyz[0]] + [xyz[4 * finger + 4 - k] for k in range(4)]
        for k in range(1, 4):
            a, b = chain[k] - chain[k - 1], chain[k + 1] - chain[k]
            cos = a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
            angles.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return float(np.mean(angles))


def collect(model, dataset, frames, finder=None, progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    from crossmodal.data.joints import bone_scale
    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_hand

    rows = []
    for i in tqdm(frames, desc="side views", unit="frame", disable=not progress):
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        if not mask.any():
            continue  # the cache skips these too
        image, K = read_rgb_png(paths["color"]), np.asarray(label["K"], dtype=np.float64)
        xyz = np.asarray(label["xyz"], dtype=np.float64)
        scale = float(bone_scale(xyz))
        truth = (xyz - xyz[0]) / scale
        left = label["hand_side"] == "left"  # the mirrored crop is the canonical one
        row = {"frame": int(i), "side": label["hand_side"], "facing": round(palm_facing(xyz, label["hand_side"]), 4),
               "bend": round(finger_bend(xyz), 2)}
        found = finder.find(image) if finder is not None else None
        ways = [("truth", crops_both_ways(model, image, K, mask, label["hand_side"]))]
        if found is not None:
            region = box_region(found.box[:2], found.box[2:], model.preprocess.crop_margin, "side views", found.pixels,
                                found=True)
            ways.append(("finder", [crop_hand(model, image, K, region, mirror)[0] for mirror in (False, True)]))
        for name, crops in ways:
            _, _, peak, pose = measures(model, crops)
            errors = []
            for k, (crop, mirror) in enumerate(zip(crops, (False, True))):
                joints = (pose[k].astype(np.float64) @ crop.rotation) * np.array([-1.0 if mirror else 1.0, 1.0, 1.0])
                errors.append(float(np.linalg.norm(joints - truth, axis=1).mean() * scale * 1000.0))
            row[name] = {"fit": [round(float(p), 5) for p in peak], "right": bool((peak[1] > peak[0]) == left),
                         "epe_labelled_mm": round(errors[int(left)], 3), "epe_other_mm": round(errors[1 - int(left)], 3)}
        rows.append(row)
    return rows


def table(rows: list[dict], crops: str, key: str = "facing", edges=EDGES, names=BIN_NAMES, where=None) -> list[dict]:
    """Per bin of ``key`` (its ``edges``, the last bin closed): frames, the fit's side accuracy, and
    EPE with the labelled and the other side; ``where`` keeps only the rows it accepts."""
    out = []
    for k, name in enumerate(names):
        inside = [r for r in rows if (where is None or where(r))
                  and (edges[k] <= r[key] < edges[k + 1] or (k == len(names) - 1 and r[key] == edges[-1]))]
        scored = [r[crops] for r in inside if crops in r]
        out.append({"bin": name, "frames": len(scored),
                    "accuracy": float(np.mean([s["right"] for s in scored])) if scored else None,
                    "epe_labelled_mm": float(np.mean([s["epe_labelled_mm"] for s in scored])) if scored else None,
                    "epe_other_mm": float(np.mean([s["epe_other_mm"] for s in scored])) if scored else None})
    return out


def figure(model, dataset, rows: list[dict], path: Path, per_bin: int = 3) -> None:
    """For three views (the back of the hand, a flat hand edge-on, the palm): frames whose side the fit got right and wrong, each
    as its two ground-truth crops (as is | mirrored) with their fits, the canonical one outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png

    bins = [(BIN_NAMES[0], lambda r: r["facing"] < -0.5),
            ("flat (< 20 deg) and edge-on", lambda r: abs(r["facing"]) < 0.2 and r["bend"] < 20.0),
            (BIN_NAMES[4], lambda r: r["facing"] >= 0.5)]
    fig, axes = plt.subplots(len(bins), 4 * per_bin, figsize=(2.0 * per_bin * 4, 2.4 * len(bins)), squeeze=False)
    for b, (name, inside) in enumerate(bins):
        chosen = []
        for want in (True, False):
            chosen += [r for r in rows if inside(r) and r["truth"]["right"] == want][:per_bin]
        for c in range(2 * per_bin):
            for half in range(2):
                ax = axes[b, 2 * c + half]
                ax.axis("off")
                if c >= len(chosen):
                    continue
                row = chosen[c]
                paths, label = dataset.frame_paths(row["frame"]), dataset.annotation(row["frame"])
                mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
                crops = crops_both_ways(model, read_rgb_png(paths["color"]), np.asarray(label["K"], dtype=np.float64), mask,
                                        label["hand_side"])
                ax.imshow(crops[half].image)
                canonical = half == int(row["side"] == "left")
                ok = row["truth"]["right"]
                ax.set_title(f"{'mirrored' if half else 'as is'} {row['truth']['fit'][half]:.3f}" +
                             (f"\n{row['side']}, fit {'right' if ok else 'WRONG'}, cos {row['facing']:+.2f}" if half == 0 else "\n"),
                             fontsize=7, color="black" if ok else "crimson")
                if canonical:
                    for spine in ax.spines.values():
                        spine.set_visible(True)
                        spine.set_color("limegreen")
                        spine.set_linewidth(3)
                    ax.axis("on")
                    ax.set_xticks([])
                    ax.set_yticks([])
        axes[b, 0].text(-0.15, 0.5, name, transform=axes[b, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    fig.suptitle("Ground-truth crops both ways with the keypoint fit of each (the canonical crop outlined green): "
                 f"{per_bin} frames the fit got right, then {per_bin} it got wrong, per view", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=64, pil_kwargs={"quality": 85})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a pose model trained with mirror_left and a keypoint stage")
    parser.add_argument("--finder", default=None, help="also score the finder's crops")
    parser.add_argument("--flip-average", action="store_true", help="the finder averaged with its mirror image (finder.flip_average)")
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--limit", type=int, default=0, help="frames (default: all of the split)")
    parser.add_argument("--out", default=None, help="folder (default: beside the checkpoint's run)")
    args = parser.parse_args(argv)

    from crossmodal.finder.model import load_finder, with_flip_average
    from crossmodal.io import atomic_write_text
    from crossmodal.pipeline.end_to_end import validation_frames
    from crossmodal.predict import load_model
    from crossmodal.predict.image import fit_sides
    from crossmodal.registry import DATASETS

    model = load_model(args.ckpt)
    if fit_sides(model) is None:
        raise SystemExit(f"side views: {args.ckpt} has no side to fit (it needs mirror_left and a 2D keypoint stage)")
    finder = load_finder(args.finder) if args.finder else None
    if finder is not None and args.flip_average:
        finder = with_flip_average(finder, True)
    data = model.config.data
    reader = DATASETS.get(data.dataset, key="data.dataset")
    if args.split == "validation":
        dataset, frames = reader(data.root, reader.TRAIN_SPLIT), validation_frames(model.config).tolist()
    else:
        dataset = reader(data.root, reader.TEST_SPLIT)
        frames = list(range(len(dataset)))
    frames = frames[: args.limit] if args.limit else frames
    rows = collect(model, dataset, frames, finder)
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(ckpt), "finder": finder.source if finder else None, "split": args.split,
              "frames": len(rows), "edges": EDGES,
              "tables": {}}
    for crops in ("truth", "finder") if finder else ("truth",):
        result["tables"][f"{crops} crops, by facing"] = table(rows, crops)
        result["tables"][f"{crops} crops, by bend"] = table(rows, crops, "bend", BEND_EDGES, BEND_NAMES)
        result["tables"][f"{crops} crops, edge-on (|facing| < 0.2), by bend"] = table(
            rows, crops, "bend", BEND_EDGES, BEND_NAMES, where=lambda r: abs(r["facing"]) < 0.2)
    stem = out / f"side_views_{args.split}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    atomic_write_text(stem.with_name(stem.name + "_rows.json"), "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    figure(model, dataset, rows, stem.with_suffix(".jpg"))
    for name, rows_ in result["tables"].items():
        print(f"{name}:")
        for r in rows_:
            if r["frames"]:
                print(f"  {r['bin']:30s} {r['frames']:4d} frames  side by fit {r['accuracy']:.3f}  "
                      f"EPE labelled side {r['epe_labelled_mm']:.2f} mm, other side {r['epe_other_mm']:.2f} mm")
    print(f"wrote {stem}.json (tables), {stem.name}_rows.json (per frame) and {stem.name}.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
