"""Batch augmentation in pure torch, on whatever device the batch lives on.

One random similarity transform per sample, about the crop centre ``c``::

    p' = s * Rot(theta) @ (p - c) + c + t        (2D crop pixels)

applied consistently to the image (``grid_sample``), the 2D keypoints, the crop
intrinsics, and to the 3D pose, cloud and root as the rotation ``Rz(theta)`` about
the camera's z axis. The new intrinsics are ``K' = A @ K @ Rz^T`` (``A`` the 3x3
form of the 2D transform), so projecting the rotated 3D joints
``Rz @ (pose * scale + root)`` with ``K'`` gives exactly ``A @ uv``; with square
pixels (fx == fy) ``K'`` is again a plain pinhole matrix with focal ``s * f``.
Zoom and shift change only ``K``: the 3D pose is untouched by them. Hue is shifted
by up to ``hue`` of a full turn in HSV space.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from crossmodal.config import AugmentConfig
from crossmodal.errors import DataError


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # Drawn where the generator lives (CPU by default), then moved: the same seed gives the
    # same augmentation on every device.
    device = generator.device if generator is not None else torch.device("cpu")
    values = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return (low + (high - low) * values).to(device=like.device, dtype=like.dtype)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = rgb.unbind(-3)
    maxc = rgb.amax(-3)
    minc = rgb.amin(-3)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-12)
    hue = torch.where(
        maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    return torch.stack([hue, sat, maxc], dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(-3)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = torch.remainder(sector, 6).long()
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    # Rows: sector 0..5; columns: the (r, g, b) source of each sector.
    candidates = torch.stack([v, q, p, t], dim=-3)  # indices 0 v, 1 q, 2 p, 3 t
    table = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=hsv.device)
    pick = table[sector].movedim(-1, -3)  # (..., 3, H, W)
    return torch.gather(candidates, -3, pick)


def shift_hue(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) images in [0, 1] by ``shift`` (B,) turns."""
    hsv = rgb_to_hsv(image)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))


def warp_images(image: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, S, S) images so that source pixel p lands at ``A @ p`` (bilinear, zeros outside)."""
    B, _, height, width = image.shape
    rows, cols = torch.meshgrid(
        torch.arange(height, device=image.device, dtype=image.dtype),
        torch.arange(width, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    target = torch.stack([cols, rows, torch.ones_like(cols)], dim=-1).reshape(1, -1, 3)
    source = target @ torch.linalg.inv(A).transpose(1, 2)  # (B, HW, 3)
    source = source[..., :2] / source[..., 2:3]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels (our convention).
    grid = torch.stack([source[..., 0] * 2 / (width - 1) - 1, source[..., 1] * 2 / (height - 1) - 1], dim=-1)
    return F.grid_sample(image, grid.view(B, height, width, 2), mode="bilinear", padding_mode="zeros", align_corners=True)


def similarity(scale: torch.Tensor, shift: torch.Tensor, angle: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the 2D similarity ``A`` (B, 3, 3) about the centre of an ``size`` crop,
    ``p' = s Rot(theta) (p - c) + c + t``, and its rotation ``Rz`` (B, 3, 3) about the camera's z axis."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    centre = (size - 1) / 2.0
    A = torch.stack(
        [
            torch.stack([scale * cos, -scale * sin, centre + shift[:, 0] - scale * (cos - sin) * centre], -1),
            torch.stack([scale * sin, scale * cos, centre + shift[:, 1] - scale * (sin + cos) * centre], -1),
            torch.stack([zero, zero, one], -1),
        ],
        dim=1,
    )
    Rz = torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1), torch.stack([zero, zero, one], -1)],
        dim=1,
    )
    return A, Rz


def crop_error_table(path: str | Path, crop_margin: float, max_turn: float = 180.0) -> torch.Tensor:
    """(N, 4) similarity parameters of a finder's measured crop errors (``experiments/finder_errors.py``):
    zoom, shift x and y as fractions of the crop side, angle (radians); a row turned by more than
    ``max_turn`` degrees keeps its zoom and shift, unturned.

    A finder box whose centre is off by ``shift`` (in ground-truth box sides) and whose side is
    ``scale`` times the truth's shows the hand ``1 / scale`` as large, ``-shift / (margin x scale)``
    crop sides off centre, and turned by the difference of the two upright rolls, ``turn``.
    """
    try:
        rows = json.loads(Path(path).read_text())["rows"]
        table = np.array([[r["shift_x"], r["shift_y"], r["scale"], r["turn"]] for r in rows], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"data.augment.crop_errors {path}: expected a JSON of experiments/finder_errors.py with rows of "
                        f"shift_x, shift_y, scale, turn ({type(exc).__name__}: {exc})") from None
    if len(table) == 0 or not np.isfinite(table).all() or (table[:, 2] <= 0).any():
        raise DataError(f"data.augment.crop_errors {path}: expected finite rows with scale > 0, got {len(table)} rows")
    zoom = 1.0 / table[:, 2]
    shift = -table[:, :2] / (crop_margin * table[:, 2:3])
    turn = np.where(np.abs(table[:, 3]) > max_turn, 0.0, np.radians(table[:, 3]))
    return torch.as_tensor(np.column_stack([zoom, shift, turn]), dtype=torch.float32)


def augment_batch(
    batch: dict[str, torch.Tensor], cfg: AugmentConfig, generator: torch.Generator | None = None,
    crop_errors: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Randomly zoom, shift, rotate and hue-shift a batch; returns a new dict.

    Uses ``image`` (B, 3, S, S) float in [0, 1], ``uv``, ``K``, ``pose``, ``cloud``,
    ``root`` and ``rotation`` (those present); other keys pass through. With ``crop_errors``
    (:func:`crop_error_table`) each sample takes a measured row instead of the uniform zoom,
    shift and rotation, with probability ``cfg.crop_error_rate`` (else it keeps its crop).
    """
    if not cfg.enabled:
        return dict(batch)
    image = batch["image"]
    B, _, size, _ = image.shape
    if crop_errors is None:
        scale = _uniform(cfg.scale_min, cfg.scale_max, (B,), generator, image)
        max_shift = cfg.translate_px * size / 256.0
        shift = _uniform(-max_shift, max_shift, (B, 2), generator, image)
        angle = _uniform(-cfg.rotate, cfg.rotate, (B,), generator, image)
    else:
        device = generator.device if generator is not None else torch.device("cpu")
        pick = torch.randint(len(crop_errors), (B,), generator=generator, device=device).cpu()
        keep = torch.rand((B,), generator=generator, device=device).cpu() >= cfg.crop_error_rate
        rows = torch.where(keep[:, None], torch.tensor([1.0, 0.0, 0.0, 0.0]), crop_errors[pick])
        rows = rows.to(device=image.device, dtype=image.dtype)
        scale, shift, angle = rows[:, 0], rows[:, 1:3] * size, rows[:, 3]
    hue = _uniform(-cfg.hue, cfg.hue, (B,), generator, image)

    A, Rz = similarity(scale, shift, angle, size)

    out = dict(batch)
    out["image"] = shift_hue(warp_images(image, A), hue).clamp(0.0, 1.0)
    if "uv" in batch:
        uv = batch["uv"].to(A.dtype)
        moved = torch.cat([uv, torch.ones_like(uv[..., :1])], -1) @ A.transpose(1, 2)
        out["uv"] = (moved[..., :2] / moved[..., 2:3]).to(batch["uv"].dtype)
    if "K" in batch:
        out["K"] = (A @ batch["K"].to(A.dtype) @ Rz.transpose(1, 2)).to(batch["K"].dtype)
    for key in ("pose", "cloud"):
        if key in batch:
            out[key] = (batch[key].to(Rz.dtype) @ Rz.transpose(1, 2)).to(batch[key].dtype)
    if "root" in batch:
        out["root"] = (Rz @ batch["root"].to(Rz.dtype).unsqueeze(-1)).squeeze(-1).to(batch["root"].dtype)
    if "rotation" in batch:
        out["rotation"] = (Rz @ batch["rotation"].to(Rz.dtype)).to(batch["rotation"].dtype)
    return out
