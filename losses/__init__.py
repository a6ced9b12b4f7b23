"""Pose losses: terms on the pose predicted from the image of every training frame, labelled or
not, that any strategy adds with ``model.pose_losses``. One module each, registered in
``crossmodal.registry.POSE_LOSSES`` on import; ``losses.base.PoseLoss`` is the interface.
"""

from losses import biomech, projection2d  # noqa: F401  (registration)
from losses.base import PoseLoss

__all__ = ["PoseLoss"]
