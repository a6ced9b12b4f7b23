"""Shared finder interface: image (B, 3, H, W) in [0, 1] -> class logits (B, 3, H, W).

Classes are background (RHD labels 0 and 1: background and the rest of the person), left
hand (2-17) and right hand (18-33). Any H and W are accepted: the input is padded up to a
multiple of ``stride`` and the logits cropped back, so a photo of any aspect ratio works.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders.base import check_shape

CLASSES = ("background", "left", "right")


class HandFinderNet(nn.Module):
    """Base class of every registered finder."""

    registry_name: ClassVar[str] = "finder"  # set by the registry's decorator
    input_shape: ClassVar[tuple[int | str, ...]] = ("B", 3, "H", "W")
    stride: ClassVar[int] = 8  # the input is padded to a multiple of this

    @classmethod
    def who(cls) -> str:
        return f"{cls.registry_name} finder"

    def compute_logits(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) logits of a padded image whose sides are multiples of ``stride``."""
        raise NotImplementedError

    def forward(self, image: Tensor) -> Tensor:
        check_shape(image, self.input_shape, self.who(), "image")
        height, width = int(image.shape[-2]), int(image.shape[-1])
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
        return self.compute_logits(image)[..., :height, :width]

    @classmethod
    def example_input(cls, batch_size: int, generator: torch.Generator | None = None, size: int = 48) -> Tensor:
        return torch.rand(batch_size, 3, size, size, generator=generator)
