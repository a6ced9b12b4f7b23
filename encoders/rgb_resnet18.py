"""RGB encoder: the ResNet-18 trunk (``encoders/resnet.py``), global average pooling, linear
mu/logvar heads, and optionally the 2D keypoint stage (``encoders/keypoints.py``)."""

from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import Tensor

from crossmodal.data.joints import NUM_JOINTS
from crossmodal.gaussian import DiagonalGaussian
from crossmodal.registry import ENCODERS
from encoders.base import Encoder, check_positive
from encoders.keypoints import KeypointStage, keypoint_loss, soft_argmax
from encoders.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet18Trunk, read_trunk_state_dict


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

    def keypoint_maps(self, x: Tensor) -> Tensor | None:
        """The 2D keypoint stage's logits (B, 21, h, w) for images ``x``; None without the stage."""
        return self._features_and_keypoints(x)[1]

    def features_and_keypoint_maps(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``features(x)`` and ``keypoint_maps(x)`` from one pass of the trunk."""
        self.check_input(x)
        features, logits, _ = self._features_and_keypoints(x)
        return features, logits

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
