"""Hand finders: one module each, registered in ``crossmodal.registry.FINDERS`` on import.

A finder is a fully-convolutional segmenter over the whole (downscaled) image: per pixel,
background / left hand / right hand (RHD's part masks: 2-17 left, 18-33 right). The hand's
pixels, its side and its box come from its output (``crossmodal.finder.locate``).
``FINDERS.names()`` imports this package, so every finder module must be imported here.
"""

from finders import fcn_small  # noqa: F401  (registration)
from finders.base import HandFinderNet

__all__ = ["HandFinderNet"]
