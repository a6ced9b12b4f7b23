"""Lift a trained encoder's own 2D keypoints to 3D: is the stage's 2D, or the head on it, the limit?

`lifting_bound.py --noise` lifts ground-truth 2D keypoints with Gaussian noise. This lifts the
keypoints a trained checkpoint's stage predicts (eval mode, un-augmented crops) with the same
MLP (3 x 512), trained on the training cache's predictions and scored on the evaluation split,
with and without the hand side. If it lands far below the checkpoint's own EPE, the head that
reads the coordinates is the limit; if level with it, the 2D stage is
(benchmarks/results/learning.md).

    python -m experiments.lift_predicted runs/<run>/checkpoints/best.ckpt \
        --cache data/cache/synthetic_training_<hash>.h5 --test data/cache/synthetic_evaluation_<hash>.h5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from crossmodal.data.cache import CacheReader
from crossmodal.trained import load_trained_module
from experiments.lifting_bound import fit, inputs, load, score


@torch.no_grad()
def predict_uv(encoder: torch.nn.Module, path: str, batch: int = 200) -> torch.Tensor:
    reader = CacheReader(path)
    out = []
    for start in range(0, len(reader), batch):
        images = np.stack([reader[i]["image"] for i in range(start, min(start + batch, len(reader)))])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        out.append(encoder._features_and_keypoints(x)[2])
    reader.close()
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt")
    p.add_argument("--cache", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--steps", type=int, default=6000)
    a = p.parse_args()
    encoder = load_trained_module(a.ckpt).strategy.encoders["image"].eval()
    train, test = load(a.cache), load(a.test)
    for d, path in ((train, a.cache), (test, a.test)):
        d["uv_true"] = d["uv"]
        d["uv"] = predict_uv(encoder, path)
        print(f"{path}: 2D error of the stage {(d['uv'] - d['uv_true']).norm(dim=-1).mean():.2f} px", flush=True)
    print("| lifter input | test EPE |\n|---|---:|")
    for side in (False, True):
        net = fit(inputs(train, a.crop, False, side), train["pose"].float().flatten(1), a.steps)
        print(f"| predicted 2D keypoints{' + side' if side else ''} | {score(net, inputs(test, a.crop, False, side), test):.1f} |", flush=True)


if __name__ == "__main__":
    main()
