"""A minimal, fast, lossless PNG encoder for 8-bit grey and RGB images.

Pillow's PNG writer tries all five row filters on every row (adaptive filtering),
which costs more than rendering a frame. Here every row uses the "Up" filter
(a vectorised difference with the previous row) and zlib's run-length strategy at
level 1: about 3x faster on noisy 320x320 RGB images, similar file sizes, and the
decoded pixels are exactly the input (tests decode the files with Pillow).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
_COLOUR_TYPE = {2: 0, 3: 2}  # array ndim -> PNG colour type (0 grey, 2 RGB)


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 grey or (H, W, 3) uint8 RGB -> PNG file bytes (deterministic)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in _COLOUR_TYPE or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"encode_png expects (H, W) or (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first one counts as zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps mod 256, as PNG wants
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = compressor.compress(filtered.tobytes()) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[pixels.ndim], 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
