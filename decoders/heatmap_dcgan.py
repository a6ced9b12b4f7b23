"""2D-heatmap decoder: a DC-GAN generator (Radford et al. 2016) from z to 21 heatmaps.

z is reshaped to (B, latent_dim, 1, 1) and upsampled by transposed convolutions
with kernel 4: the first (stride 1, no padding) gives 4 x 4, every further one
(stride 2, padding 1) doubles the side, 4 -> 8 -> 16 -> 32 -> 64 with the default
four ``channels``. Each hidden layer is ConvTranspose (no bias: BatchNorm's shift
replaces it) + BatchNorm + ReLU; the last layer outputs the 21 maps with a bias and
no normalisation or activation (a linear regression of Gaussian heatmaps).
Weights start as in DC-GAN: N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales.

Loss (paper Eq. 7), per sample: ``sum_j ||H_hat_j - H_j||_2^2``, the squared error
summed over the 21 maps and all their pixels, averaged over the samples that have
2D labels by ``Decoder.loss``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from crossmodal.data.heatmaps import make_heatmaps
from crossmodal.data.joints import NUM_JOINTS
from crossmodal.errors import ConfigError
from crossmodal.registry import DECODERS
from decoders.base import Decoder


@DECODERS.register("heatmap_dcgan")
class HeatmapDCGANDecoder(Decoder):
    """DC-GAN generator z -> heatmaps (B, 21, S, S), S = 4 * 2**len(channels) (64 by default).

    Options:
        latent_dim: size of z.
        channels: channels of the hidden feature maps at 4, 8, 16, 32 pixels; default
            (512, 256, 128, 64), DC-GAN's generator widths (ngf = 64).
    """

    target_key = "heatmaps"

    def __init__(self, latent_dim: int = 64, channels: Sequence[int] = (512, 256, 128, 64)) -> None:
        super().__init__(latent_dim)
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ConfigError(f"{self.who()}: option channels must be a non-empty list of positive ints, got {channels!r}")
        self.channels = channels
        size = 4 * 2 ** len(channels)
        self.output_shape = (NUM_JOINTS, size, size)
        layers: list[nn.Module] = []
        previous = latent_dim
        for i, width in enumerate(channels):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            layers += [
                nn.ConvTranspose2d(previous, width, 4, stride=stride, padding=padding, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            previous = width
        layers.append(nn.ConvTranspose2d(previous, NUM_JOINTS, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)
        # DC-GAN's initialisation: small weights start the maps near zero, close to the
        # mostly-empty targets, instead of a loss in the thousands.
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def decode(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])

    def per_sample_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Eq. 7: squared error summed over the 21 maps and their pixels, (B,)."""
        return (pred.float() - target.float()).square().flatten(1).sum(dim=1)

    @classmethod
    def example_target(
        cls,
        batch_size: int,
        generator: torch.Generator | None = None,
        channels: Sequence[int] = (512, 256, 128, 64),
        **options: object,
    ) -> Tensor:
        """Gaussian heatmaps (sigma 2 px) of random keypoints, at the size the decoder outputs."""
        size = 4 * 2 ** len(tuple(channels))
        uv = torch.rand(batch_size, NUM_JOINTS, 2, generator=generator) * size
        visible = torch.ones(batch_size, NUM_JOINTS, dtype=torch.bool)
        return make_heatmaps(uv, visible, crop_size=size, size=size, sigma=2.0)
