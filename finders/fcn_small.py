"""``fcn_small``: a U-Net-like segmenter small enough to train in minutes on two CPU cores.

Three stride-2 stages (widths 16, 32, 48) with a dilated context block at 1/8 resolution,
then two upsampling stages with skip connections back to 1/2 resolution; the logits are
upsampled bilinearly to the input size. ~87k parameters; a step of 32 images at 80 px takes ~0.2 CPU-seconds.
Hands are 10-40 px at the working resolution: three stages give a receptive field that
covers a whole hand, which the side (left vs right: chirality) needs.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from crossmodal.errors import ConfigError
from crossmodal.registry import FINDERS
from finders.base import CLASSES, HandFinderNet


def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@FINDERS.register("fcn_small")
class FCNSmall(HandFinderNet):
    stride = 8

    def __init__(self, widths: Sequence[int] = (16, 32, 48)) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ConfigError(f"{self.who()}: option widths must be three positive channel counts, got {list(widths)}")
        w1, w2, w3 = (int(w) for w in widths)
        self.down1 = nn.Sequential(conv(3, w1, stride=2), conv(w1, w1))  # 1/2
        self.down2 = nn.Sequential(conv(w1, w2, stride=2), conv(w2, w2))  # 1/4
        self.down3 = nn.Sequential(conv(w2, w3, stride=2), conv(w3, w3, dilation=2), conv(w3, w3, dilation=4))  # 1/8
        self.up2 = nn.Sequential(nn.Conv2d(w3 + w2, w2, 1, bias=False), nn.BatchNorm2d(w2), nn.ReLU(inplace=True), conv(w2, w2))
        self.up1 = nn.Sequential(nn.Conv2d(w2 + w1, w1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True), conv(w1, w1))
        self.head = nn.Conv2d(w1, len(CLASSES), 1)

    def compute_logits(self, image: Tensor) -> Tensor:
        import torch

        x1 = self.down1(image)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        x = self.up2(torch.cat([F.interpolate(x3, size=x2.shape[-2:], mode="bilinear", align_corners=False), x2], 1))
        x = self.up1(torch.cat([F.interpolate(x, size=x1.shape[-2:], mode="bilinear", align_corners=False), x1], 1))
        return F.interpolate(self.head(x), size=image.shape[-2:], mode="bilinear", align_corners=False)
