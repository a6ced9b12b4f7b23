"""How far off is a trained checkpoint's 2D keypoint stage, and on which joints?

On the first ``--frames`` validation crops of the checkpoint's own data, prints the stage's
soft-argmax error in pixels (all joints, visible joints, each joint) in eval and in train mode,
the error of a hard argmax over the same maps, and how peaked the maps are (mean maximum
softmax, mean entropy beside a uniform map's). The learning study reads it in
benchmarks/results/learning.md.

    python experiments/keypoint_error.py runs/<run>/checkpoints/best.ckpt [--frames 200]
"""

from __future__ import annotations

import argparse
import math

import torch
from omegaconf import OmegaConf

from crossmodal.config import Config
from crossmodal.data.datamodule import build_datamodule
from crossmodal.trained import load_trained_module
from encoders.keypoints import soft_argmax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a checkpoint of a model with the 2D keypoint stage (rgb_resnet18 keypoints=true)")
    parser.add_argument("--frames", type=int, default=200, help="validation crops scored")
    args = parser.parse_args()
    # One thread: a few hundred crops need no more, and it leaves the other core to a training run.
    torch.set_num_threads(1)

    module = load_trained_module(args.ckpt)
    dm = build_datamodule(OmegaConf.merge(OmegaConf.structured(Config), module.cfg))
    dm.setup("fit")
    samples = [dm.datasets["val"][i] for i in range(args.frames)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "uv", "visible")}
    encoder = module.strategy.encoders["image"]
    crop = batch["image"].shape[-1]

    for mode in ("eval", "train"):
        encoder.train(mode == "train")
        with torch.no_grad():
            _, logits, _ = encoder._features_and_keypoints(batch["image"])
            uv = soft_argmax(logits, crop)
        err = (uv - batch["uv"]).norm(dim=-1)
        print(f"{mode} 2D err all {err.mean():.2f} px, visible {err[batch['visible']].mean():.2f} px, per-joint:",
              [round(x, 1) for x in err.mean(0).tolist()])

    encoder.eval()
    with torch.no_grad():
        _, logits, _ = encoder._features_and_keypoints(batch["image"])
    _, _, h, w = logits.shape
    idx = logits.flatten(2).argmax(-1)
    hard = torch.stack([(idx % w + 0.5) * crop / w - 0.5, (idx // w + 0.5) * crop / h - 0.5], -1)
    print(f"hard argmax err {(hard - batch['uv']).norm(dim=-1).mean():.2f} px")
    p = logits.flatten(2).float().softmax(-1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    print(f"max prob mean {p.max(-1).values.mean():.3f}, entropy {entropy:.2f} (uniform {math.log(h * w):.2f})")


if __name__ == "__main__":
    main()
