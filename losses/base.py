"""The pose-loss interface.

A pose loss sees the pose decoded from the RGB posterior's mean for every sample of a training
batch, (B, 21, 3) root-relative and in bone units as the targets are, and the batch itself. It
returns named terms, each already weighted; the strategy adds them to its loss as
``pose_loss/<name>/<term>``.

A loss whose bounds come from the data (``needs_labelled_poses``) is given the 3D poses of the
labelled training frames once, before training (``fit``); it keeps what it derives in buffers,
so that checkpoints carry it, and returns it as JSON for the run folder.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
from torch import Tensor, nn


class PoseLoss(nn.Module):
    registry_name: ClassVar[str] = "pose_loss"
    needs_labelled_poses: ClassVar[bool] = False

    def fit(self, labelled_poses: np.ndarray) -> dict[str, Any]:
        """Derive the loss's bounds from (N, 21, 3) labelled poses; returns them as JSON."""
        return {}

    def forward(self, pose: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError
