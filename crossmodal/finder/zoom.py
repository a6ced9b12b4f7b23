"""The finder's second look: the same network on a window around the first box, at full resolution.

At 96 px a 320 px image leaves a hand some 15-30 cells across: the first look finds where the
hand is, but its box and pixels are coarse (mask IoU 0.64 on the synthetic evaluation frames).
The second look cuts a square window ``zoom`` times the first box's longer side around its
centre from the full-resolution image, at the network's input size, and locates the hand there
again; its probabilities are taken back to the image's pixels. Both steps are matrix products
whose weights are computed from the box (``sampling_matrix``, ``back_matrix``), so the ONNX
graph holds them as predict runs them. A second look that finds no hand, or one whose box
centre lies outside the first box (it wandered to another hand or to clutter), keeps the first
look's answer.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from crossmodal.finder.locate import Located, locate_hand

#: The smallest window side in image pixels: a tiny first box would otherwise be magnified past
#: what the network saw in training.
MIN_WINDOW = 32.0


def window_of(box: Tensor, zoom: float) -> tuple[Tensor, Tensor, Tensor]:
    """Square windows around pixel-edge boxes (B, 4): their left and top edges and side (B,) each."""
    centre = (box[:, :2] + box[:, 2:]) / 2
    side = ((box[:, 2:] - box[:, :2]).amax(dim=1) * zoom).clamp_min(MIN_WINDOW)
    return centre[:, 0] - side / 2, centre[:, 1] - side / 2, side


def sampling_matrix(start: Tensor, side: Tensor, cells: int, length: int) -> Tensor:
    """(B, cells, length) area weights: window cell j averages the image pixels over its span
    [start + j s, start + (j + 1) s), s = side / cells, in pixel-edge coordinates (pixel v spans
    [v - 0.5, v + 0.5)); the part of a span outside the image reads as black, as a crop's does."""
    step = (side / cells)[:, None, None]
    lo = start[:, None, None] + torch.arange(cells, dtype=start.dtype)[None, :, None] * step
    pixel = torch.arange(length, dtype=start.dtype)[None, None, :]
    overlap = (torch.minimum(lo + step, pixel + 0.5) - torch.maximum(lo, pixel - 0.5)).clamp_min(0.0)
    return overlap / step


def back_matrix(start: Tensor, side: Tensor, cells: int, length: int) -> Tensor:
    """(B, length, cells) bilinear weights taking a window map back to image pixels: pixel v reads
    the window at cell coordinate (v - start) / s - 0.5 (edge cells held, as ``F.interpolate``
    with ``align_corners=False`` holds them); pixels outside the window read 0."""
    step = (side / cells)[:, None]
    pixel = torch.arange(length, dtype=start.dtype)[None, :]
    x = ((pixel - start[:, None]) / step - 0.5).clamp(0.0, cells - 1.0)  # (B, length)
    inside = ((pixel >= start[:, None]) & (pixel < start[:, None] + side[:, None])).to(start.dtype)
    cell = torch.arange(cells, dtype=start.dtype)[None, None, :]
    weight = (1.0 - (x[..., None] - cell).abs()).clamp_min(0.0)  # the two nearest cells, linearly
    return weight * inside[..., None]


def sample_window(image: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """(B, C, H, W) images -> (B, C, n, n) windows through ``sampling_matrix`` rows and columns."""
    return rows[:, None] @ image @ cols[:, None].transpose(-1, -2)


def look_twice(net: Any, image: Tensor, first: Located, zoom: float, cells: int, min_score: float,
               min_pixels: float) -> Located:
    """The finder's answer after a second look at ``image`` (B, 3, H, W) in [0, 1] around the first
    look's box (``first``, from ``locate_hand`` on the whole image)."""
    height, width = image.shape[-2:]
    u0, v0, side = window_of(first.box.to(image.dtype), zoom)
    windows = sample_window(image, sampling_matrix(v0, side, cells, height), sampling_matrix(u0, side, cells, width))
    back_rows, back_cols = back_matrix(v0, side, cells, height), back_matrix(u0, side, cells, width)

    def to_image(maps: Tensor) -> Tensor:
        return back_rows[:, None] @ maps @ back_cols[:, None].transpose(-1, -2)

    second = locate_hand(net(windows), (height, width), resample=to_image)
    centre = (second.box[:, :2] + second.box[:, 2:]) / 2
    within = ((centre > first.box[:, :2]) & (centre < first.box[:, 2:])).all(dim=1)
    keep = second.found(min_score, min_pixels) & first.found(min_score, min_pixels) & within
    return Located(*(_choose(keep, getattr(second, f.name), getattr(first, f.name)) for f in fields(Located)))


def _choose(keep: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where ``keep`` (B,), else ``b``; boolean maps by logic ops (onnxruntime has no Where over booleans)."""
    keep = keep.reshape(-1, *[1] * (a.dim() - 1))
    return (keep & a) | (~keep & b) if a.dtype == torch.bool else torch.where(keep, a, b)
