"""Exact pixel encodings of the published datasets' depth PNGs.

RHD:  metres = (R * 256 + G) / 65535 * 5.0, R and G the first two channels read as RGB.
STB:  millimetres = R + 256 * G.
Reading a PNG with a BGR library (OpenCV) swaps R and B; we always read RGB with Pillow.
"""

from __future__ import annotations

import numpy as np

RHD_DEPTH_MAX_M = 5.0


def decode_rhd_depth(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 metres."""
    rgb = rgb.astype(np.float64)
    return ((rgb[..., 0] * 256.0 + rgb[..., 1]) / 65535.0 * RHD_DEPTH_MAX_M).astype(np.float32)


def encode_rhd_depth(metres: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB; inverse of ``decode_rhd_depth`` up to quantisation.

    Values are clipped to [0, 5] m; 0 means "no depth" (background far plane is up to the caller).
    """
    code = np.rint(np.clip(metres, 0.0, RHD_DEPTH_MAX_M) / RHD_DEPTH_MAX_M * 65535.0).astype(np.uint32)
    out = np.zeros(metres.shape + (3,), dtype=np.uint8)
    out[..., 0] = code >> 8
    out[..., 1] = code & 0xFF
    return out


def decode_stb_depth(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 metres (from millimetres = R + 256 G)."""
    rgb = rgb.astype(np.float32)
    return (rgb[..., 0] + 256.0 * rgb[..., 1]) / 1000.0


def encode_stb_depth(metres: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB in STB's encoding (used by test fixtures)."""
    mm = np.rint(np.clip(metres * 1000.0, 0, 65535)).astype(np.uint32)
    out = np.zeros(metres.shape + (3,), dtype=np.uint8)
    out[..., 0] = mm & 0xFF
    out[..., 1] = mm >> 8
    return out
