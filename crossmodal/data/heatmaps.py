"""2D keypoint heatmaps, made on the fly from crop keypoints (never cached)."""

from __future__ import annotations

import torch


def make_heatmaps(
    uv: torch.Tensor, visible: torch.Tensor, crop_size: int, size: int = 64, sigma: float = 2.0
) -> torch.Tensor:
    """Gaussian heatmaps (B, J, size, size) from (B, J, 2) crop-pixel keypoints.

    Each map peaks at 1 on its keypoint, with ``sigma`` in heatmap pixels; maps of
    invisible joints are all zero. Keypoints are rescaled from the ``crop_size``
    crop to the heatmap with the pixel-centre convention of
    ``crossmodal.data.geometry``. Runs on the device and dtype of ``uv``.
    """
    if uv.dim() == 2:
        return make_heatmaps(uv[None], visible[None], crop_size, size, sigma)[0]
    dtype = uv.dtype if uv.is_floating_point() else torch.float32
    ratio = size / crop_size
    centres = (uv.to(dtype) + 0.5) * ratio - 0.5  # (B, J, 2)
    axis = torch.arange(size, device=uv.device, dtype=dtype)
    du2 = (axis.view(1, 1, size) - centres[..., 0:1]) ** 2  # (B, J, size) along u (columns)
    dv2 = (axis.view(1, 1, size) - centres[..., 1:2]) ** 2  # along v (rows)
    # The 2D Gaussian separates into a column profile times a row profile.
    gu = torch.exp(-du2 / (2 * sigma**2))
    gv = torch.exp(-dv2 / (2 * sigma**2))
    maps = gv.unsqueeze(-1) * gu.unsqueeze(-2)  # (B, J, rows, cols)
    return maps * visible.to(device=uv.device, dtype=dtype)[..., None, None]
