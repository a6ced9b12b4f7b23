"""How far does the image hold the hand's side? Probes on a pose model trained with one canonical hand.

A model trained with ``mirror_left`` sees every hand as a right one, so a whole-image pipeline must
know the side to mirror a left hand first. Each evaluated frame is cropped around its ground-truth
mask both ways (as is, and mirrored), exactly as ``predict`` crops, and each route below says which
of the two crops is the canonical right hand, i.e. which side the hand is:

* ``logvar``: the crop whose RGB posterior q(z|x) is the more certain (lower mean log-variance);
* ``keypoints``: the crop whose 2D keypoint heatmaps are the more peaked (mean of each map's
  largest probability);
* ``features``: a logistic regression on the difference of the two crops' pooled encoder features
  (the model's own features, frozen), fitted on training frames and scored on held-out frames.

Beside them, the price of a wrong side: the EPE on ground-truth crops with the labelled side and
with the other one.

    python experiments/side_probe.py --ckpt runs/s4/checkpoints/best.ckpt [--train-frames 2000] [--out side_probe.json]

Frames: ``--train-frames`` of the training split's training part fit the regression; the
model's validation frames and the test split are scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def crops_both_ways(model, image, K, mask, side):
    """The ground-truth-mask crop as the model would see it with each side hypothesis:
    [as is (the hand taken for a right one), mirrored (taken for a left one)]."""
    from crossmodal.finder.data import mask_box
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_hand

    box = mask_box(mask)
    region = box_region(box[:2], box[2:], model.preprocess.crop_margin, "side probe", mask)
    return [crop_hand(model, image, K, region, mirror)[0] for mirror in (False, True)]


def encoder_pass(model, crops):
    """Per crop, from one pass of the RGB encoder: its pooled features, the 2D keypoint stage's
    logits (None without the stage) and the pose decoded from q's mean, as ``strategy.predict``
    decodes it (tensors)."""
    encoder = model.strategy.encoders["image"]
    with torch.no_grad():
        features, logits = encoder.features_and_keypoint_maps(model.crops_to_tensor(np.stack([c.image for c in crops])))
        return features, logits, model.strategy.decoders["pose"](encoder.mu_head(features))


def measures(model, crops):
    """Per crop, from one encoder pass: pooled features, mean posterior log-variance, mean heatmap
    peak (``encoders.keypoints.keypoint_fit``, NaN without a keypoint stage), and the decoded pose."""
    from encoders.keypoints import keypoint_fit

    features, logits, pose = encoder_pass(model, crops)
    with torch.no_grad():
        logvar = model.strategy.encoders["image"].logvar_head(features).mean(1)
    peak = keypoint_fit(logits) if logits is not None else torch.full_like(logvar, float("nan"))
    return features.numpy(), logvar.numpy(), peak.numpy(), pose.numpy()


def collect(model, dataset, frames, progress_label):
    from tqdm.auto import tqdm

    from crossmodal.data.joints import bone_scale
    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png

    rows = {"features": [], "logvar": [], "peak": [], "left": [], "pose_err": []}
    for i in tqdm(frames, desc=progress_label, unit="frame"):
        paths, label = dataset.frame_paths(i), dataset.annotation(i)
        mask = hand_mask(read_label_png(paths["mask"]), label["hand_side"])
        if not mask.any():
            continue
        image, K = read_rgb_png(paths["color"]), np.asarray(label["K"], dtype=np.float64)
        crops = crops_both_ways(model, image, K, mask, label["hand_side"])
        features, logvar, peak, pose = measures(model, crops)
        xyz = np.asarray(label["xyz"], dtype=np.float64)
        scale = float(bone_scale(xyz))
        truth = (xyz - xyz[0]) / scale
        errs = []
        for k, (crop, mirror) in enumerate(zip(crops, (False, True))):
            p = (pose[k].astype(np.float64) @ crop.rotation) * np.array([-1.0 if mirror else 1.0, 1.0, 1.0])
            errs.append(float(np.linalg.norm(p - truth, axis=1).mean() * scale * 1000.0))
        rows["features"].append(features)
        rows["logvar"].append(logvar)
        rows["peak"].append(peak)
        rows["left"].append(label["hand_side"] == "left")
        rows["pose_err"].append(errs)
    return {k: np.asarray(v) for k, v in rows.items()}


class Logistic:
    """L2-regularised logistic regression on standardised features (full-batch L-BFGS)."""

    def __init__(self, l2: float = 1e-2) -> None:
        self.l2 = l2

    def fit(self, x: np.ndarray, y: np.ndarray) -> "Logistic":
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        X = torch.as_tensor((x - self.mean) / self.std, dtype=torch.float64)
        Y = torch.as_tensor(y, dtype=torch.float64)
        self.w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=500, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ self.w + self.b, Y) + self.l2 * (self.w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def probability(self, x: np.ndarray) -> np.ndarray:
        X = torch.as_tensor((x - self.mean) / self.std, dtype=torch.float64)
        with torch.no_grad():
            return torch.sigmoid(X @ self.w + self.b).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.probability(x) > 0.5


def score(rows, classifier=None):
    left = rows["left"]  # the right answer: crop 1 (mirrored) is canonical for a left hand
    out = {
        "frames": int(len(left)),
        "logvar": float(np.mean((rows["logvar"][:, 1] < rows["logvar"][:, 0]) == left)),
        "keypoints": float(np.mean((rows["peak"][:, 1] > rows["peak"][:, 0]) == left)),
        "epe_labelled_side_mm": float(np.mean(np.where(left, rows["pose_err"][:, 1], rows["pose_err"][:, 0]))),
        "epe_other_side_mm": float(np.mean(np.where(left, rows["pose_err"][:, 0], rows["pose_err"][:, 1]))),
    }
    if classifier is not None:
        out["features"] = float(np.mean(classifier.predict(rows["features"][:, 1] - rows["features"][:, 0]) == left))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--train-frames", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=0, help="scored frames per split (default: all)")
    parser.add_argument("--out", default=None, help="JSON file (default: side_probe.json beside the checkpoint's run)")
    args = parser.parse_args(argv)

    from crossmodal.pipeline.end_to_end import validation_frames
    from crossmodal.predict import load_model
    from crossmodal.registry import DATASETS

    model = load_model(args.ckpt)
    if not model.preprocess.mirror_left:
        raise SystemExit(f"side probe: {args.ckpt} was trained without mirror_left; it needs no side")
    data = model.config.data
    reader = DATASETS.get(data.dataset, key="data.dataset")
    train_set, test_set = reader(data.root, reader.TRAIN_SPLIT), reader(data.root, reader.TEST_SPLIT)
    val = validation_frames(model.config)
    limit = (lambda f: f[: args.limit]) if args.limit else (lambda f: f)
    fit_rows = collect(model, train_set, list(range(args.train_frames)), "side probe: training frames")
    classifier = Logistic().fit(fit_rows["features"][:, 1] - fit_rows["features"][:, 0], fit_rows["left"])
    result = {
        "checkpoint": str(args.ckpt),
        "training_frames": score(fit_rows, classifier),
        "validation": score(collect(model, train_set, limit(val.tolist()), "side probe: validation"), classifier),
        "test": score(collect(model, test_set, limit(list(range(len(test_set)))), "side probe: test"), classifier),
    }
    ckpt = Path(args.ckpt)
    out = Path(args.out) if args.out else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent) / "side_probe.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
