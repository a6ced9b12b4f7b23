"""Fast probe of what lets the RGB encoder learn: a plain deterministic regressor on cached crops.

The sanity anchor of the learning study (benchmarks/results/learning.md): ResNet-18 straight to
the 63 pose numbers, trained outside Lightning on the whole cache held in memory, so that a
question about the encoder (pooling, stem, loss scale, schedule, frames) costs minutes. Same
cache, same augmentation (crossmodal.data.augment) and the same evaluation protocol
(crossmodal.metrics) as the framework.

    python experiments/learning_probe.py --cache data/cache/synthetic_training_<hash>.h5 \
        --test data/cache/synthetic_evaluation_<hash>.h5 --steps 1000 [--head flatten] ...

Prints validation EPE against wall time and, at the end, train / val / test EPE. Runs on one
torch thread unless PROBE_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.config import AugmentConfig
from crossmodal.data.augment import augment_batch
from crossmodal.data.cache import CacheReader
from crossmodal.data.heatmaps import make_heatmaps
from crossmodal.data.joints import BONES
from crossmodal.metrics import KeypointMetrics
from encoders.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet18Trunk


def load(path: str, rows: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    reader = CacheReader(path)
    rows = np.arange(len(reader)) if rows is None else rows
    samples = [reader[int(i)] for i in rows]
    out = {
        "image": torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2).contiguous(),
        "pose": torch.from_numpy(np.stack([s["pose"] for s in samples])).float(),
        "uv": torch.from_numpy(np.stack([s["uv"] for s in samples])).float(),
        "visible": torch.from_numpy(np.stack([s["visible"] for s in samples])),
        "K": torch.from_numpy(np.stack([s["K_crop"] for s in samples])).float(),
        "scale": torch.tensor([float(s["scale"]) for s in samples]),
        "side": torch.tensor([float(s["hand_side"]) for s in samples]),
    }
    reader.close()
    return out


def mirror_left(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Left hands (side 0) mirrored into right hands: image flipped left-right, u -> S - 1 - u, x -> -x.
    The protocol's EPE is unchanged when prediction and ground truth are mirrored alike."""
    out = dict(data)
    left = data["side"] == 0
    size = data["image"].shape[-1]
    out["image"] = torch.where(left.view(-1, 1, 1, 1), data["image"].flip(-1), data["image"])
    flip_uv = torch.stack([size - 1 - data["uv"][..., 0], data["uv"][..., 1]], -1)
    out["uv"] = torch.where(left.view(-1, 1, 1), flip_uv, data["uv"])
    out["pose"] = torch.where(left.view(-1, 1, 1), data["pose"] * torch.tensor([-1.0, 1.0, 1.0]), data["pose"])
    return out


def orient_upright(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upper bound of an in-plane orientation normalisation: each crop rotated about its centre
    so that the ground-truth palm axis (wrist -> middle knuckle, joints 0 -> 12) points up, with
    the same rotation Rz about the view axis applied to the 3D pose. The protocol's EPE is
    unchanged by a rotation of prediction and ground truth alike. Not usable at test time (it
    reads the labels): it measures what a canonical orientation could be worth."""
    from crossmodal.data.augment import similarity, warp_images
    d = data["uv"][:, 12] - data["uv"][:, 0]
    angle = -math.pi / 2 - torch.atan2(d[:, 1], d[:, 0])  # rotate the axis onto (0, -1)
    A, Rz = similarity(torch.ones_like(angle), torch.zeros(len(angle), 2), angle, data["image"].shape[-1])
    out = dict(data)
    images = []
    for i in range(0, len(angle), 256):
        images.append((warp_images(data["image"][i:i + 256].float(), A[i:i + 256]).round().clamp(0, 255)).to(torch.uint8))
    out["image"] = torch.cat(images)
    uv = torch.cat([data["uv"], torch.ones_like(data["uv"][..., :1])], -1) @ A.transpose(1, 2)
    out["uv"] = uv[..., :2]
    out["pose"] = data["pose"] @ Rz.transpose(1, 2)
    return out


class Regressor(nn.Module):
    def __init__(self, head: str, crop: int, maxpool: bool, heat: bool, keypoints: bool = False, side: bool = False,
                 stem_lateral: bool = False, lifter: int = 0, fc: str = "mlp", refine: bool = False,
                 bones: bool = False, topdown: int = 0) -> None:
        super().__init__()
        # A top-down path (FPN / U-Net decoder): at each scale the upsampled coarser map plus a
        # lateral of the trunk's map goes through a 3x3 conv, so context and detail mix
        # nonlinearly at every scale instead of in one sum at the end.
        self.topdown = None
        if topdown:
            conv = lambda: nn.Sequential(nn.Conv2d(topdown, topdown, 3, padding=1, bias=False), nn.BatchNorm2d(topdown), nn.ReLU())
            self.topdown = nn.ModuleDict({"lat": nn.ModuleList([nn.Conv2d(c, topdown, 1) for c in (64, 128, 256, 512)]),
                                          "conv": nn.ModuleList([conv() for _ in range(3)]),
                                          "out": nn.Conv2d(topdown, 64, 1)})
        self.side = side
        # The stem's output (stride 2) as a fifth lateral: the maps run at twice layer1's resolution.
        self.stem_lateral = nn.Conv2d(64, 64, 1) if stem_lateral else None
        # A second keypoint stage (as in Convolutional Pose Machines): it sees the first stage's
        # maps of every joint beside the features, with a receptive field over the whole map.
        self.refine = None
        if refine:
            layers, c = [], 64 + 21
            for d in (1, 2, 4):
                layers += [nn.Conv2d(c, 64, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
                c = 64
            self.refine = nn.Sequential(*layers, nn.Conv2d(64, 21, 1))
        # Bone maps: a dense target along the 20 bones from the same fused features.
        self.bones = nn.Conv2d(64, 20, 1) if bones else None
        # 2D keypoint stage: heatmaps at layer1's resolution from layer1 + upsampled layer2,
        # soft-argmax to crop coordinates, which join the pooled features.
        self.keypoints = keypoints
        if keypoints:
            self.kp_laterals = nn.ModuleList([nn.Conv2d(c, 64, 1) for c in (64, 128, 256, 512)])
            self.kp_head = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 21, 1))
        self.trunk = ResNet18Trunk()
        if not maxpool:
            self.trunk.maxpool = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        cells = crop // (16 if maxpool else 8) // 2
        self.head = head
        feat = (512 * cells * cells if head == "flatten" else 512) + (42 if keypoints else 0) + (1 if side else 0)
        # A lifter over the keypoints (Martinez et al. 2017: Linear-BN-ReLU blocks with a residual),
        # its output joins the features: lifting 2D to 3D is nonlinear in the coordinates.
        self.lifter = None
        if lifter:
            block = lambda: nn.Sequential(nn.Linear(lifter, lifter), nn.BatchNorm1d(lifter), nn.ReLU(),
                                          nn.Linear(lifter, lifter), nn.BatchNorm1d(lifter), nn.ReLU())
            self.lifter = nn.ModuleDict({"inp": nn.Sequential(nn.Linear(42 + (1 if side else 0), lifter), nn.BatchNorm1d(lifter), nn.ReLU()),
                                         "b1": block(), "b2": block()})
            feat += lifter
        if fc == "linear":  # the framework's regressor: mu head then pose_linear
            self.fc = nn.Sequential(nn.Linear(feat, 64), nn.Linear(64, 63))
        else:
            self.fc = nn.Sequential(nn.Linear(feat, 64), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                                    nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 63))
        self.heat = nn.Conv2d(128, 21, 1) if heat else None

    def forward(self, image: torch.Tensor, side: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.trunk
        x = (image - self.mean) / self.std
        x0 = t.relu(t.bn1(t.conv1(x)))
        x = t.maxpool(x0)
        x1 = t.layer1(x)
        x = t.layer2(x1)
        heat = self.heat(x) if self.heat is not None else None
        x3 = t.layer3(x)
        x4 = t.layer4(x3)
        coords = None
        self.maps = None
        if self.keypoints:
            size = x0.shape[-2:] if self.stem_lateral is not None else x1.shape[-2:]
            if self.topdown is not None:
                td = self.topdown
                f = td["lat"][3](x4)
                for i, c in ((2, x3), (1, x), (0, x1)):
                    f = td["conv"][i](F.interpolate(f, size=c.shape[-2:], mode="nearest") + td["lat"][i](c))
                fused = td["out"](f)
            else:
                fused = sum(F.interpolate(lat(c), size=size, mode="bilinear", align_corners=False) if c.shape[-2:] != size else lat(c)
                            for lat, c in zip(self.kp_laterals, (x1, x, x3, x4)))
            if self.stem_lateral is not None:
                fused = fused + self.stem_lateral(x0)
            maps = self.kp_head(fused)  # (B, 21, h, w)
            self.first_maps = maps
            if self.refine is not None:
                maps = self.refine(torch.cat([fused, maps], 1))
            self.maps = maps
            self.bone_logits = self.bones(fused) if self.bones is not None else None
            b, j, h, w = maps.shape
            prob = maps.flatten(2).float().softmax(-1).view(b, j, h, w)
            # Soft-argmax in crop pixels (cell centres at (i + 0.5) * stride - 0.5).
            stride = image.shape[-1] / w
            axis = (torch.arange(w, device=image.device, dtype=prob.dtype) + 0.5) * stride - 0.5
            coords = torch.stack([(prob.sum(2) * axis).sum(-1), (prob.sum(3) * axis).sum(-1)], -1)  # (B, 21, 2) u, v
        x = x4
        x = x.flatten(1) if self.head == "flatten" else x.mean((2, 3))
        if coords is not None:
            norm = (coords.flatten(1) - image.shape[-1] / 2) / (image.shape[-1] / 2)
            x = torch.cat([x, norm], 1)
            heat = coords
            if self.lifter is not None:
                h = norm if not self.side else torch.cat([norm, side.view(-1, 1).to(norm.dtype)], 1)
                h = self.lifter["inp"](h)
                h = h + self.lifter["b1"](h)
                h = h + self.lifter["b2"](h)
                x = torch.cat([x, h], 1)
        if self.side:
            x = torch.cat([x, side.view(-1, 1).to(x.dtype)], 1)
        return self.fc(x).view(-1, 21, 3), heat


def bone_maps(uv: torch.Tensor, crop: int, size: int, sigma: float = 1.0) -> torch.Tensor:
    """(B, 20, size, size) maps, exp(-d^2 / 2 sigma^2) with d the distance (in map cells) from each
    cell centre to a bone's segment."""
    p = uv * (size / crop) + (size / crop - 1) / 2  # crop pixel centres -> map cell centres
    grid = torch.stack(torch.meshgrid(torch.arange(size, dtype=uv.dtype), torch.arange(size, dtype=uv.dtype), indexing="xy"), -1)
    a = p[:, [i for i, _ in BONES]][:, :, None, None]  # (B, 20, 1, 1, 2)
    b = p[:, [j for _, j in BONES]][:, :, None, None]
    ab = b - a
    t = (((grid - a) * ab).sum(-1) / ab.square().sum(-1).clamp_min(1e-6)).clamp(0, 1)
    d2 = (grid - (a + t[..., None] * ab)).square().sum(-1)
    return torch.exp(-d2 / (2 * sigma**2))


@torch.no_grad()
def epe(model: nn.Module, data: dict[str, torch.Tensor], batch: int = 200) -> float:
    model.eval()
    metric = KeypointMetrics()
    px = []
    for i in range(0, len(data["pose"]), batch):
        pred, aux = model(data["image"][i : i + batch].float() / 255, data["side"][i : i + batch])
        metric.update(pred, data["pose"][i : i + batch], data["scale"][i : i + batch], data["visible"][i : i + batch])
        if aux is not None and aux.shape[-1] == 2:
            px.append((aux - data["uv"][i : i + batch]).norm(dim=-1).mean().item())
    model.train()
    if px:
        print(f"  2D keypoint error {sum(px) / len(px):.2f} px", flush=True)
    return float(metric.compute()["epe_mean"])


def main() -> None:
    # One thread by default: probes run side by side on a 2-core machine, and their samples/s are
    # compared with each other at that setting.
    torch.set_num_threads(int(os.environ.get("PROBE_THREADS", "1")))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--frames", type=int, default=2000, help="frames of the cache used (0: all); 1800-1999 validate")
    p.add_argument("--steps", type=int, default=1000, help="budget in optimizer steps (wall time is noisy on a shared machine)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="const", choices=["const", "cosine"])
    p.add_argument("--warmup", type=float, default=0.0, help="fraction of the budget")
    p.add_argument("--head", default="gap", choices=["gap", "flatten"])
    p.add_argument("--no-maxpool", action="store_true")
    p.add_argument("--heat", type=float, default=0.0, help="weight of an auxiliary 2D heatmap loss on layer2")
    p.add_argument("--kp", type=float, default=0.0, help="weight of the 2D keypoint stage's L1 loss (crop-normalised)")
    p.add_argument("--kpce", type=float, default=0.0, help="weight of a cross-entropy between the keypoint maps' softmax and Gaussian targets")
    p.add_argument("--mirror", action="store_true", help="mirror left hands into right hands (train, val, test)")
    p.add_argument("--side", action="store_true", help="the hand side joins the features")
    p.add_argument("--loss", default="l2sum", choices=["l2sum", "l1", "l2mean"])
    p.add_argument("--stem-lateral", action="store_true", help="keypoint maps at stride 2 with the stem as a fifth lateral")
    p.add_argument("--lifter", type=int, default=0, help="width of a residual MLP lifter over the keypoints (0: none)")
    p.add_argument("--fc", default="mlp", choices=["mlp", "linear"], help="head: 64 -> 4 x 128 MLP, or 64 -> linear (the framework's pose_linear)")
    p.add_argument("--refine", action="store_true", help="a second keypoint stage over the first's maps and the features")
    p.add_argument("--bones", type=float, default=0.0, help="weight of a BCE to bone maps (20 Gaussian segments) on the fused features")
    p.add_argument("--topdown", type=int, default=0, help="width of a top-down path (3x3 conv per scale) feeding the keypoint head (0: the summed laterals)")
    p.add_argument("--orient", action="store_true", help="upper bound: crops rotated so the ground-truth palm axis points up")
    p.add_argument("--pose-weight", type=float, default=1.0, help="weight of the 3D pose loss (0: the 2D stage alone)")
    p.add_argument("--rotate", type=float, default=0.5)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.manual_seed(a.seed)

    reader = CacheReader(a.cache)
    n = a.frames or len(reader)
    reader.close()
    # Validation is always frames 1800-1999 (the default run's held-out part), whatever n.
    full = load(a.cache, np.arange(0, n))
    keep = torch.ones(n, dtype=torch.bool)
    keep[1800:2000] = False
    train = {k: v[keep] for k, v in full.items()}
    val = {k: v[~keep] for k, v in full.items()}
    test = load(a.test)
    if a.mirror:
        train, val, test = mirror_left(train), mirror_left(val), mirror_left(test)
    if a.orient:
        train, val, test = orient_upright(train), orient_upright(val), orient_upright(test)
    crop = train["image"].shape[-1]
    model = Regressor(a.head, crop, not a.no_maxpool, a.heat > 0, a.kp > 0 or a.kpce > 0, a.side, a.stem_lateral, a.lifter, a.fc, a.refine, a.bones > 0, a.topdown)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    aug = AugmentConfig(enabled=not a.no_augment, rotate=a.rotate)
    heat_size = crop // (8 if not a.no_maxpool else 4)  # layer2 runs at stride 8 (4 without the max-pool)

    start = time.perf_counter()
    curve, step, seen = [], 0, 0
    every = max(1, a.steps // 12)
    g = torch.Generator().manual_seed(a.seed)
    order = torch.randperm(len(train["pose"]), generator=g)
    pos = 0
    while True:
        elapsed = time.perf_counter() - start
        if step % every == 0 or step == a.steps:
            v = epe(model, val)
            curve.append((round(elapsed, 1), step, round(v, 2)))
            print(f"t={elapsed:6.0f}s step={step:5d} val EPE {v:6.2f} mm", flush=True)
        if step >= a.steps:
            break
        frac = step / a.steps
        lr = a.lr
        if a.warmup and frac < a.warmup:
            lr = a.lr * frac / a.warmup
        elif a.schedule == "cosine":
            f = (frac - a.warmup) / (1 - a.warmup)
            lr = a.lr * 0.5 * (1 + math.cos(math.pi * f))
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + a.batch > len(order):
            order, pos = torch.randperm(len(train["pose"]), generator=g), 0
        idx = order[pos : pos + a.batch]
        pos += a.batch
        batch = {k: v[idx] for k, v in train.items()}
        batch["image"] = batch["image"].float() / 255
        batch = augment_batch(batch, aug)
        image = batch["image"]
        if a.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            pred, heat = model(image, batch["side"])
        pred = pred.float()
        diff = pred - batch["pose"]
        if a.loss == "l2sum":
            loss = diff.square().sum((1, 2)).mean()
        elif a.loss == "l2mean":
            loss = diff.square().mean()
        else:
            loss = diff.abs().sum((1, 2)).mean()
        loss = a.pose_weight * loss
        if a.kp > 0:
            loss = loss + a.kp * ((heat.float() - batch["uv"]) / (crop / 2)).abs().sum((1, 2)).mean()
        if a.kpce > 0:
            for maps in ([model.maps, model.first_maps] if a.refine else [model.maps]):
                maps = maps.float()
                target = make_heatmaps(batch["uv"], torch.ones_like(batch["visible"]), crop, maps.shape[-1], 1.0)
                target = target.flatten(2) / target.flatten(2).sum(-1, keepdim=True).clamp_min(1e-6)
                loss = loss + a.kpce * -(target * maps.flatten(2).log_softmax(-1)).sum(-1).sum(-1).mean()
        if a.bones > 0:
            logits = model.bone_logits.float()
            target = bone_maps(batch["uv"], crop, logits.shape[-1])
            loss = loss + a.bones * F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((1, 2, 3)).mean() / 20
        if a.heat > 0:
            target = make_heatmaps(batch["uv"], batch["visible"], crop, heat_size, 1.0)
            loss = loss + a.heat * (heat.float() - target).square().sum((2, 3)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        seen += a.batch
    wall = time.perf_counter() - start
    result = {
        "args": vars(a),
        "steps": step,
        "samples_per_s": round(seen / wall, 1),
        "train_epe": round(epe(model, {k: v[:400] for k, v in train.items()}), 2),
        "val_epe": curve[-1][2],
        "best_val": min(c[2] for c in curve),
        "test_epe": round(epe(model, test), 2),
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
