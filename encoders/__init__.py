"""Encoders: one module each, registered in ``crossmodal.registry.ENCODERS`` on import.

``ENCODERS.names()`` imports this package, so every encoder module must be imported
here. See ``encoders.base.Encoder`` for the interface.
"""

from encoders import cloud_respel, pose_mlp, rgb_resnet18  # noqa: F401  (registration)
from encoders.base import Encoder, ShapeError

__all__ = ["Encoder", "ShapeError"]
