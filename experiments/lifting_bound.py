"""How much of the 3D pose do the 2D keypoints hold? Lift ground-truth 2D keypoints to 3D.

An MLP (3 x 512) maps a frame's ground-truth 2D keypoints (crop pixels, centred and scaled
to [-1, 1]), optionally with their visibility flags and the hand side, to its normalised 3D
pose. Trained on the training cache minus frames 1800-1999 (the probe's validation frames),
scored with the evaluation protocol on those and on the test split. If this is far below what
the image model reaches, the model is limited by how well it finds the 2D layout, not by an
ambiguity of the benchmark (benchmarks/results/learning.md).

    python experiments/lifting_bound.py --cache data/cache/synthetic_training_<hash>.h5 \
        --test data/cache/synthetic_evaluation_<hash>.h5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from crossmodal.data.cache import CacheReader
from crossmodal.metrics import KeypointMetrics


def load(path: str) -> dict[str, torch.Tensor]:
    columns = CacheReader(path).columns  # every key but image and cloud is held in memory
    return {k: torch.from_numpy(np.asarray(columns[k])) for k in ("pose", "uv", "visible", "scale", "hand_side")}


def inputs(d: dict[str, torch.Tensor], crop: int, visibility: bool, side: bool) -> torch.Tensor:
    half = crop / 2.0
    parts = [((d["uv"].float() - (half - 0.5)) / half).flatten(1)]
    if visibility:
        parts.append(d["visible"].float())
    if side:
        parts.append(d["hand_side"].float().view(-1, 1))
    return torch.cat(parts, 1)


def score(net: nn.Module, x: torch.Tensor, d: dict[str, torch.Tensor]) -> float:
    metric = KeypointMetrics()
    with torch.no_grad():
        metric.update(net(x).view(-1, 21, 3), d["pose"].float(), d["scale"].float(), d["visible"])
    return float(metric.compute()["epe_mean"])


def fit(x: torch.Tensor, y: torch.Tensor, steps: int, noise: float = 0.0, coords: int = 42) -> nn.Module:
    """An MLP (3 x 512) from ``x`` to ``y``; ``noise`` (in [-1, 1] units) is drawn afresh on the
    first ``coords`` inputs at every step."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(x.shape[1], 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 63))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for step in range(steps):
        idx = torch.randint(len(x), (128,))
        xb = x[idx]
        if noise:
            xb = xb.clone()
            xb[:, :coords] += noise * torch.randn(len(idx), coords)
        loss = (net(xb) - y[idx]).square().sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == steps * 2 // 3:
            for group in opt.param_groups:
                group["lr"] = 1e-4
    return net


def noise_sweep(a: argparse.Namespace) -> None:
    """3D test EPE of a lifter trained (on every frame of the training cache) and tested on 2D
    keypoints with Gaussian noise."""
    train, test = load(a.cache), load(a.test)
    half = a.crop / 2.0
    print("| noise std (px per axis) | mean 2D error (px) | test EPE | test EPE with side |\n|---:|---:|---:|---:|")
    for sigma in a.noise:
        row = []
        for side in (False, True):
            net = fit(inputs(train, a.crop, False, side), train["pose"].float().flatten(1), a.steps, sigma / half)
            g = torch.Generator().manual_seed(1)
            xt = inputs(test, a.crop, False, side)
            xt[:, :42] += sigma / half * torch.randn(xt.shape[0], 42, generator=g)
            row.append(score(net, xt, test))
        shift = sigma * float(np.sqrt(np.pi / 2))  # mean length of a 2D Gaussian displacement
        print(f"| {sigma:g} | {shift:.1f} | {row[0]:.1f} | {row[1]:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--noise", type=float, nargs="*", default=[],
                   help="instead of the table: lift 2D keypoints with Gaussian noise of these std (crop pixels per axis), "
                        "without and with the side, to see how 3D error grows with 2D error")
    a = p.parse_args()
    if a.noise:
        return noise_sweep(a)
    train, test = load(a.cache), load(a.test)
    keep = torch.ones(len(train["pose"]), dtype=torch.bool)
    keep[1800:2000] = False
    subset = lambda d, m: {k: v[m] for k, v in d.items()}  # noqa: E731
    print("| inputs | train EPE | val EPE | test EPE |\n|---|---:|---:|---:|")
    for visibility in (False, True):
        for side in (False, True):
            x = inputs(train, a.crop, visibility, side)
            net = fit(x[keep], train["pose"].float().flatten(1)[keep], a.steps)
            name = "2D keypoints" + (" + visibility" if visibility else "") + (" + side" if side else "")
            print(f"| {name} | {score(net, x[keep], subset(train, keep)):.1f} | {score(net, x[~keep], subset(train, ~keep)):.1f} "
                  f"| {score(net, inputs(test, a.crop, visibility, side), test):.1f} |", flush=True)


if __name__ == "__main__":
    main()
