"""Area (box-filter) resizing as matrix products: ``out = A_h @ image @ A_w^T``.

Each output pixel is the mean over its footprint (PIL's BOX filter when the factor is an
integer; exact fractional overlaps otherwise), written so that training, ``predict`` and the ONNX
graph all shrink an image the same way (a matrix product exports as MatMul; a resize with
antialiasing would not export reliably).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor


@functools.lru_cache(maxsize=16)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output pixel i averages input span [i, i + 1) * n_in / n_out."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1.0) - np.maximum(lo, j), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def working_size(height: int, width: int, input_size: int) -> tuple[int, int]:
    """The finder's (h, w): the longer side becomes ``input_size``, the aspect ratio is kept."""
    scale = input_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def area_resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., H, W) float -> (..., h, w) by area averaging."""
    height, width = int(images.shape[-2]), int(images.shape[-1])
    rows = torch.from_numpy(area_matrix(height, size[0])).to(images)
    cols = torch.from_numpy(area_matrix(width, size[1])).to(images)
    return rows @ images @ cols.T


def area_resize_numpy(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) -> (C, h, w) float32 by area averaging (the data loader's twin of :func:`area_resize`)."""
    rows = area_matrix(planes.shape[-2], size[0]).astype(np.float32)
    cols = area_matrix(planes.shape[-1], size[1]).astype(np.float32)
    return rows @ planes.astype(np.float32) @ cols.T


def finder_input(image: np.ndarray, input_size: int) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, h, w) float in [0, 1] at the finder's working size."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return area_resize(tensor, working_size(image.shape[0], image.shape[1], input_size))[None]
