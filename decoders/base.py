"""Shared decoder interface: ``z -> prediction`` plus the paper's reconstruction loss.

A decoder maps a latent batch (B, latent_dim) to a prediction of one batch key
(``target_key``) and owns its loss. ``per_sample_loss`` gives one value per
sample; ``loss`` averages it over the samples whose target exists (``mask``), the
weak-supervision rule of docs/design.md section 1.

Adding a decoder takes one file in this package (subclass ``Decoder``, set
``target_key``, ``target_shape`` and ``output_shape``, implement ``decode`` and
``per_sample_loss``, register with ``@DECODERS.register("name")``) and one import
line in ``decoders/__init__.py``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from encoders.base import LatentModule, ShapeError, check_shape, format_pattern

__all__ = ["Decoder", "ShapeError"]


class Decoder(LatentModule):
    """Base class of every registered decoder: ``z (B, latent_dim) -> (B, *output_shape)``."""

    role = "decoder"
    target_key: ClassVar[str]  # the batch key of the target: "pose", "heatmaps" or "cloud"
    output_shape: tuple[int, ...]  # per-sample shape of the prediction (and of the target)

    def check_latent(self, z: Tensor) -> None:
        """Raise ``ShapeError`` unless ``z`` is (B, latent_dim)."""
        check_shape(z, ("B", self.latent_dim), self.who(), "latent z")

    def check_target(self, target: Tensor, what: str = "target") -> None:
        """Raise ``ShapeError`` unless ``target`` is (B, *output_shape)."""
        check_shape(target, ("B", *self.output_shape), self.who(), f"{what} {self.target_key!r}")

    def decode(self, z: Tensor) -> Tensor:
        """The network on an already validated latent batch."""
        raise NotImplementedError

    def forward(self, z: Tensor) -> Tensor:
        self.check_latent(z)
        return self.decode(z)

    def per_sample_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The reconstruction loss of each sample: (B,)."""
        raise NotImplementedError

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """Scalar mean of ``per_sample_loss`` over the samples where ``mask`` (B,) bool is True.

        Masked samples are removed by indexing before the loss is computed, so they
        receive an exactly zero gradient and their targets (which may be garbage or
        NaN for unlabelled frames) never enter the arithmetic. With no sample
        selected the result is 0, still attached to the graph (zero gradient).
        """
        self.check_target(pred, "prediction")
        self.check_target(target)
        if pred.shape[0] != target.shape[0]:
            raise ShapeError(
                f"{self.who()}: prediction and target batch sizes differ: {pred.shape[0]} vs {target.shape[0]}"
            )
        if mask is None:
            return self.per_sample_loss(pred, target).mean()
        if not isinstance(mask, Tensor) or mask.shape != (pred.shape[0],) or mask.dtype != torch.bool:
            got = f"{mask.dtype} {format_pattern(tuple(mask.shape))}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ShapeError(f"{self.who()}: expected mask as a bool tensor of shape ({pred.shape[0]},), got {got}")
        mask = mask.to(pred.device)
        # One host sync: the all-masked batch must skip ops that reject empty batches.
        if not bool(mask.any()):
            return pred.sum() * 0.0
        return self.per_sample_loss(pred[mask], target.to(pred.device)[mask]).mean()

    @classmethod
    def example_target(cls, batch_size: int, generator: torch.Generator | None = None, **options: object) -> Tensor:
        """A random valid target batch, for tests and docs. Accepts (and ignores) constructor options."""
        raise NotImplementedError
