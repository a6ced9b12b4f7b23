"""The joint encoder q(z | x, c) of the KL-alignment strategy (paper S3, Alg. 2).

It fuses the backbone features of several single-modality encoders (RGB and point
cloud by default) and has its own mean / log-variance heads. The backbones are
passed in, so the strategy decides what is shared: ``kl_align`` shares the RGB
backbone with q(z|x), which lets the joint path's reconstruction signal train the
RGB features that inference uses.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from crossmodal.gaussian import DiagonalGaussian
from encoders.base import Encoder, ShapeError


class JointEncoder(nn.Module):
    """``concat(backbone_k.features(batch[key_k]) for each k) -> MLP -> (mu, logvar)``."""

    def __init__(self, backbones: Mapping[str, Encoder], latent_dim: int = 64, hidden: int = 512) -> None:
        super().__init__()
        if len(backbones) < 2:
            raise ShapeError(f"joint encoder: needs at least two backbones to fuse, got {list(backbones)}")
        # Registered as submodules once; a backbone shared with another encoder is the same object.
        self.backbones = nn.ModuleDict(dict(backbones))
        fused = sum(b.feature_dim for b in backbones.values())
        self.fuse = nn.Sequential(nn.Linear(fused, hidden), nn.ReLU())
        self.mu_head = nn.Linear(hidden, latent_dim)
        self.logvar_head = nn.Linear(hidden, latent_dim)
        self.latent_dim = latent_dim

    @property
    def input_keys(self) -> tuple[str, ...]:
        return tuple(b.input_key for b in self.backbones.values())

    def forward(self, inputs: Mapping[str, Tensor]) -> DiagonalGaussian:
        missing = [k for k in self.input_keys if k not in inputs]
        if missing:
            raise ShapeError(f"joint encoder: missing inputs {missing}; expected keys {list(self.input_keys)}")
        feats = [b.features(inputs[b.input_key]) for b in self.backbones.values()]
        if len({f.shape[0] for f in feats}) != 1:
            raise ShapeError(f"joint encoder: inputs have different batch sizes {[f.shape[0] for f in feats]}")
        h = self.fuse(_cat(feats))
        return DiagonalGaussian(self.mu_head(h), self.logvar_head(h))


def _cat(tensors: list[Tensor]) -> Tensor:
    import torch

    return torch.cat(tensors, dim=-1)
