"""A ResNet-18 trunk written here, with torchvision's parameter names, and its checkpoint reader.

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
from torch import Tensor, nn

from crossmodal.errors import ConfigError


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
