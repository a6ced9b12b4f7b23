"""Is the hand's side learnable from its crop? A ResNet-18 left/right classifier on unmirrored crops.

Trained on a preprocessing cache made without ``mirror_left`` (each crop shows the hand as it is,
turned upright when the cache has ``orient``), with the cache's labelled side as the target. A
crop flipped left-right shows the other side's hand exactly, so every batch is flipped at random
with its label swapped: the classifier cannot lean on a side imbalance, and sees twice the views.
The training cache's last ``--val-fraction`` is held out (the pose model's validation frames); the
test cache is the evaluation split.

    python experiments/side_classifier.py --train data/cache/synthetic_training_<hash>.h5 \\
        --test data/cache/synthetic_evaluation_<hash>.h5 [--steps 3000] [--out side_classifier.json]

Prints accuracy on training, validation and test frames as it trains; writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 crops and (N,) 1 for a right hand, from a cache."""
    from crossmodal.data.cache import CacheReader

    reader = CacheReader(path)
    if reader.config.get("mirror_left"):
        raise SystemExit(f"side classifier: {path} holds mirrored left hands (mirror_left); use a cache made without it")
    import h5py

    with h5py.File(path, "r") as f:
        images = f["image"][()]
    right = (reader.columns["hand_side"] == 1).astype(np.float32)
    return images, right


class SideNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from encoders.resnet import ResNet18Trunk

        self.trunk = ResNet18Trunk()
        self.head = nn.Linear(ResNet18Trunk.out_channels, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk((x - self.mean) / self.std)).squeeze(1)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def accuracy(net: SideNet, images: np.ndarray, right: np.ndarray, batch: int = 256) -> float:
    net.eval()
    hits = 0
    for i in range(0, len(images), batch):
        logits = net(to_tensor(images[i:i + batch]))
        hits += int(((logits > 0).float().numpy() == right[i:i + batch]).sum())
    net.train()
    return hits / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training cache (made without mirror_left)")
    parser.add_argument("--test", required=True, help="evaluation cache (made without mirror_left)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="side_classifier.json")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, right = load(args.train)
    test_images, test_right = load(args.test)
    n_val = math.ceil(len(images) * args.val_fraction)
    train_x, train_y, val_x, val_y = images[:-n_val], right[:-n_val], images[-n_val:], right[-n_val:]
    print(f"side classifier: {len(train_x)} training crops ({train_y.mean():.1%} right), {len(val_x)} validation, "
          f"{len(test_images)} test, {images.shape[1]} px")
    net = SideNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=args.steps, pct_start=0.05)
    history, started, losses = [], time.perf_counter(), []
    for step in range(1, args.steps + 1):
        pick = rng.integers(0, len(train_x), args.batch_size)
        x, y = to_tensor(train_x[pick]), torch.from_numpy(train_y[pick])
        flip = torch.from_numpy(rng.random(args.batch_size) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip, 1.0 - y, y)
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "loss": float(np.mean(losses[-args.eval_every:])),
                   "train": accuracy(net, train_x[:1000], train_y[:1000]), "validation": accuracy(net, val_x, val_y),
                   "test": accuracy(net, test_images, test_right), "seconds": time.perf_counter() - started}
            history.append(row)
            print(json.dumps(row), flush=True)
    result = {"train_cache": args.train, "test_cache": args.test, "settings": vars(args), "history": history}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
