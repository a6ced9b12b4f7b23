"""Where the hand is: the hand box from a mask, --bbox, the finder or the whole image, and the
square crop the training pipeline makes of it (``crossmodal.data.preprocess.crop_box``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from crossmodal.predict.inputs import InputError


@dataclass(frozen=True)
class HandRegion:
    """Where the hand is in the image: the hand box, and the square crop the training pipeline makes of it."""

    box_lo: np.ndarray  # (u, v) top-left corner of the hand box, pixel edges
    box_hi: np.ndarray  # bottom-right corner
    centre: np.ndarray  # crop centre (u, v)
    side: float  # crop side, pixels (hand box * crop_margin)
    source: str  # "mask", "--bbox", "finder" or "whole image"
    # (N, 2) the hand's pixels (u, v) when a mask or the finder gave them: a model trained with
    # preprocess.orient turns its crop by them.
    hand_uv: np.ndarray | None = None


def box_region(lo: np.ndarray, hi: np.ndarray, margin: float, source: str, pixels: np.ndarray | None = None,
               found: bool = False) -> HandRegion:
    """The crop of a hand box given by its pixel edges, as ``preprocess.crop_box`` makes it from a
    mask; ``pixels`` (H, W) bool, when known, are the hand's pixels: all of them from a mask, or
    with ``found`` (the finder's) those the image -> joints graph turns the crop by
    (``crossmodal.finder.locate.upright_pixels``)."""
    from crossmodal.data.preprocess import crop_box, mask_pixels
    from crossmodal.finder.locate import upright_pixels

    centre, side = crop_box(None, np.stack([lo, hi]), margin)
    hand_uv = None if pixels is None else (upright_pixels(pixels) if found else mask_pixels(pixels))
    return HandRegion(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), centre, side, source, hand_uv)


def hand_region(shape: tuple[int, ...], mask: np.ndarray | None, bbox: Sequence[float] | None, margin: float) -> HandRegion:
    """The hand box from the mask, the box, or the whole image, cropped by ``preprocess.crop_box``."""
    from crossmodal.data.preprocess import crop_box, mask_pixels

    height, width = shape[:2]
    if mask is not None:
        rows, cols = np.nonzero(mask)
        lo, hi = np.array([cols.min() - 0.5, rows.min() - 0.5]), np.array([cols.max() + 0.5, rows.max() + 0.5])
        centre, side = crop_box(mask, None, margin)
        return HandRegion(lo, hi, centre, side, "mask", mask_pixels(mask))
    if bbox is not None:
        x, y, w, h = bbox
        # The box covers columns x .. x+w-1 and rows y .. y+h-1, like a mask of those pixels.
        lo, hi = np.array([x - 0.5, y - 0.5]), np.array([x + w - 0.5, y + h - 0.5])
        if hi[0] <= -0.5 or hi[1] <= -0.5 or lo[0] >= width - 0.5 or lo[1] >= height - 0.5:
            raise InputError(f"--bbox {x:g},{y:g},{w:g},{h:g} lies outside the {width}x{height} image")
        return box_region(lo, hi, margin, "--bbox")
    return box_region(np.array([-0.5, -0.5]), np.array([width - 0.5, height - 0.5]), margin, "whole image")
