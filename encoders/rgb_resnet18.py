"""RGB encoder: a ResNet-18 trunk written here, with torchvision's parameter names.

torchvision is not a dependency, yet researchers hold ImageNet checkpoints saved from
``torchvision.models.resnet18``. ``ResNet18Trunk`` reproduces that architecture with
the same module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer2.0.downsample.0``, ...), so such a file loads into ``encoder.trunk`` key for
key; the classifier ``fc.*`` is dropped because the trunk ends at global average
pooling.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossmodal.gaussian import DiagonalGaussian
from crossmodal.data.heatmaps import make_heatmaps
from crossmodal.data.joints import NUM_JOINTS
from crossmodal.errors import ConfigError
from crossmodal.registry import ENCODERS
from encoders.base import Encoder, check_positive

# torchvision's ImageNet normalisation; pretrained weights expect inputs normalised this way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) skip, as torchvision's."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Trunk(nn.Module):
    """ResNet-18 up to global average pooling: (B, 3, H, W) normalised -> (B, 512)."""

    out_channels = 512

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, stride=1)
        self.layer2 = self._stage(64, 128, stride=2)
        self.layer3 = self._stage(128, 256, stride=2)
        self.layer4 = self._stage(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # torchvision's initialisation, so training from scratch behaves as users expect.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _stage(in_channels: int, channels: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.stages(x)[-1]), 1)

    def stages(self, x: Tensor) -> list[Tensor]:
        """The maps after layer1..layer4 (strides 4, 8, 16, 32)."""
        maps = [self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))]
        for layer in (self.layer2, self.layer3, self.layer4):
            maps.append(layer(maps[-1]))
        return maps


def _reason(exc: Exception) -> str:
    """A one-line reason for a failed torch.load (its messages run over many lines)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours parts of its messages
    if "Weights only load failed" in text:
        return "it holds Python objects besides tensors, which torch.load(weights_only=True) refuses"
    return (text.splitlines() or [type(exc).__name__])[0]


def _describe(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_trunk_state_dict(path: str | os.PathLike, trunk: nn.Module, who: str = "rgb_resnet18 encoder") -> dict[str, Tensor]:
    """Read a torchvision-style resnet18 checkpoint and check it against ``trunk``.

    Accepts a raw state dict or ``{"state_dict": ...}`` (a ``module.`` prefix from
    DataParallel is stripped); ``fc.*`` is ignored. Files saved before BatchNorm had
    ``num_batches_tracked`` are accepted (the counters keep the trunk's values).
    Raises a one-line ``ConfigError`` naming the file when it is missing, unreadable,
    or has missing/unexpected keys or mismatching shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{who}: pretrained_path {str(path)!r} does not exist or is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a usable checkpoint"
        raise ConfigError(f"{who}: cannot read pretrained_path {str(path)!r} as a torch state dict: {_reason(exc)}") from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ConfigError(
            f"{who}: pretrained_path {str(path)!r} holds no state dict (expected a dict of tensors or {{'state_dict': ...}})"
        )
    state = dict(loaded)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    expected = trunk.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value.clone()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_describe(wrong_shape)}")
    if problems:
        raise ConfigError(
            f"{who}: pretrained_path {str(path)!r} does not match torchvision's resnet18; " + "; ".join(problems)
        )
    return state


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


@ENCODERS.register("rgb_resnet18")
class RGBResNet18Encoder(Encoder):
    """ResNet-18 over an RGB crop, global average pooling, linear mu/logvar heads.

    Input: ``image`` (B, 3, H, W) float in [0, 1], any crop size (64 on CPU, 256 in the
    paper; the trunk pools globally). ImageNet mean/std normalisation happens inside.

    Options:
        latent_dim: size of z (64 in the paper).
        pretrained_path: optional local torchvision resnet18 checkpoint (e.g. ImageNet
            weights) loaded into ``self.trunk``; ``None`` trains from scratch.
        keypoints: add the 2D keypoint stage (``KeypointStage``): its 21 crop-pixel
            keypoints join the pooled features under the heads, and training adds the
            term ``image/keypoints2d`` (L1 on crop coordinates scaled to [-1, 1], summed
            over joints, on the samples with 2D labels: ``labeled`` or ``uv_only``). Not in the paper; the CPU profile uses it.
        keypoint_weight: weight of that term.
        keypoint_ce: inside that term, the weight of a cross-entropy between each keypoint
            map's softmax and a Gaussian (one cell wide) at the target: a denser signal than
            the L1 on the soft-argmax alone.
    """

    input_key = "image"
    input_shape = ("B", 3, "H", "W")

    def __init__(
        self,
        latent_dim: int = 64,
        pretrained_path: str | os.PathLike | None = None,
        keypoints: bool = False,
        keypoint_weight: float = 10.0,
        keypoint_ce: float = 0.0,
    ) -> None:
        super().__init__(latent_dim)
        self.trunk = ResNet18Trunk()
        # Not persistent: they are constants of the architecture, not learned state.
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.keypoint_stage = KeypointStage() if keypoints else None
        if keypoints:
            check_positive(keypoint_weight, "keypoint_weight", self.who())
        self.keypoint_weight = float(keypoint_weight)
        self.keypoint_ce = float(keypoint_ce)
        self.build_heads(ResNet18Trunk.out_channels + (2 * NUM_JOINTS if keypoints else 0))
        self.pretrained_path = None if pretrained_path in (None, "") else str(pretrained_path)
        if self.pretrained_path is not None:
            self.load_pretrained(self.pretrained_path)

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Load a torchvision resnet18 checkpoint file into the trunk (see ``read_trunk_state_dict``)."""
        self.trunk.load_state_dict(read_trunk_state_dict(path, self.trunk, self.who()), strict=True)

    def compute_features(self, x: Tensor) -> Tensor:
        return self._features_and_keypoints(x)[0]

    def _features_and_keypoints(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Features under the heads and, when the stage is on, its logits (B, 21, h, w) and
        keypoints (B, 21, 2) in crop pixels."""
        maps = self.trunk.stages((x - self.pixel_mean) / self.pixel_std)
        pooled = torch.flatten(self.trunk.avgpool(maps[-1]), 1)
        if self.keypoint_stage is None:
            return pooled, None, None
        logits = self.keypoint_stage(maps)
        half = x.shape[-1] / 2.0
        uv = soft_argmax(logits, x.shape[-1])
        return torch.cat([pooled, ((uv - half) / half).flatten(1).to(pooled.dtype)], dim=1), logits, uv

    def encode(self, batch: Mapping[str, Tensor], labeled: Tensor) -> tuple[DiagonalGaussian, dict[str, Tensor]]:
        x = batch[self.input_key]
        self.check_input(x)
        features, logits, uv = self._features_and_keypoints(x)
        q = DiagonalGaussian(self.mu_head(features), self.logvar_head(features))
        if logits is None or "uv" not in batch:
            return q, {}
        # 2D labels: those of the labelled frames, and of the frames that keep only them.
        with_2d = labeled | batch["uv_only"].to(labeled) if "uv_only" in batch else labeled
        if not bool(with_2d.any()):
            return q, {"keypoints2d": logits.sum() * 0.0}
        target = batch["uv"][with_2d].to(uv.dtype)
        loss = keypoint_loss(logits[with_2d], uv[with_2d], target, x.shape[-1], self.keypoint_ce)
        return q, {"keypoints2d": self.keypoint_weight * loss}

    @classmethod
    def example_input(
        cls, batch_size: int, generator: torch.Generator | None = None, image_size: int = 64, **options: object
    ) -> Tensor:
        """Random images (B, 3, image_size, image_size) in [0, 1]."""
        return torch.rand(batch_size, 3, image_size, image_size, generator=generator)
