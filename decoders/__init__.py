"""Decoders: one module each, registered in ``crossmodal.registry.DECODERS`` on import.

``DECODERS.names()`` imports this package, so every decoder module must be imported
here. See ``decoders.base.Decoder`` for the interface.
"""

from decoders import cloud_foldingnet, heatmap_dcgan, pose_mlp  # noqa: F401  (registration)
from decoders.base import Decoder, ShapeError

__all__ = ["Decoder", "ShapeError"]
