"""The 2D keypoint stage of the RGB encoder: heatmaps from the trunk's stages, soft-argmax, its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossmodal.data.heatmaps import make_heatmaps
from crossmodal.data.joints import NUM_JOINTS


class KeypointStage(nn.Module):
    """2D keypoints from every trunk stage: heatmaps at stride 4, soft-argmax to crop pixels.

    Global pooling leaves a from-scratch trunk to discover where the fingers are through its
    channels, which it does slowly. The 2D layout carries most of the pose (an MLP lifting the
    ground-truth 2D keypoints to 3D: benchmarks/results/learning.md), so this stage
    locates it with dense, translation-equivariant convolutions and a loss from the 2D labels
    that every frame has, and hands the coordinates to the latent heads. The four stages are summed at layer1's resolution
    (a light feature pyramid): telling the index tip from the middle tip needs layer3-4's view of
    the whole hand, placing it precisely needs layer1's. Soft-argmax (integral regression) is
    sub-cell accurate and differentiable, so the pose loss trains the stage too.
    """

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 512), width: int = 64) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, NUM_JOINTS, 1),
        )

    def forward(self, maps: list[Tensor]) -> Tensor:
        """(B, 21, h, w) heatmap logits at the resolution of ``maps[0]`` from the trunk's stage maps."""
        size = maps[0].shape[-2:]
        fused = self.laterals[0](maps[0])
        for lateral, m in zip(self.laterals[1:], maps[1:]):
            fused = fused + F.interpolate(lateral(m), size=size, mode="bilinear", align_corners=False)
        return self.head(fused)


def keypoint_loss(logits: Tensor, uv: Tensor, target: Tensor, crop_size: int, ce_weight: float = 0.0) -> Tensor:
    """Mean over samples of the L1 distance between the soft-argmax keypoints ``uv`` of ``logits``
    and ``target`` (crop coordinates scaled to [-1, 1], summed over joints and axes), plus
    ``ce_weight`` times the cross-entropy between the maps' softmax and a one-cell Gaussian at
    each target."""
    half = crop_size / 2.0
    loss = ((uv - target) / half).abs().sum(dim=(1, 2)).mean()
    if ce_weight > 0:
        b, j, h, w = logits.shape
        maps = make_heatmaps(target, torch.ones(target.shape[:2], dtype=torch.bool, device=target.device), crop_size, w, 1.0)
        maps = maps.flatten(2) / maps.flatten(2).sum(-1, keepdim=True).clamp_min(1e-12)
        loss = loss + ce_weight * -(maps * logits.float().flatten(2).log_softmax(-1)).sum(-1).sum(-1).mean()
    return loss


def soft_argmax(maps: Tensor, crop_size: int) -> Tensor:
    """(B, J, h, w) heatmap logits over a ``crop_size`` crop -> (B, J, 2) expected (u, v) in crop pixels."""
    b, j, h, w = maps.shape
    prob = maps.flatten(2).float().softmax(-1).view(b, j, h, w)
    # Cell i covers crop pixels [i * stride, (i + 1) * stride): its centre is (i + 0.5) * stride - 0.5.
    u = (torch.arange(w, device=maps.device, dtype=prob.dtype) + 0.5) * (crop_size / w) - 0.5
    v = (torch.arange(h, device=maps.device, dtype=prob.dtype) + 0.5) * (crop_size / h) - 0.5
    return torch.stack([(prob.sum(2) * u).sum(-1), (prob.sum(3) * v).sum(-1)], dim=-1)


def keypoint_fit(logits: Tensor) -> Tensor:
    """(B, J, h, w) heatmap logits -> (B,) how sharply the maps find a hand: the mean over the
    joints of each map's largest softmax probability. A model that saw one side only fits that
    side's hand better than its mirror image, so a crop and its mirror compared tell the side."""
    return logits.flatten(2).float().softmax(-1).amax(-1).mean(1)
