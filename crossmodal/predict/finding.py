"""The finder stage of predict: with no --mask or --bbox, the hand finder gives the hand box and side.

A photo without a hand is a :class:`NoHandFound` for that image alone: ``predict_images`` prints
it as a note and goes on with the other images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import CrossmodalError
from crossmodal.predict.boxes import HandRegion, box_region


class NoHandFound(CrossmodalError):
    """The finder saw no hand in one image; the message names the image and what to do."""


def _side(found: Any, side: str | None, image_path: Path, source: str, notes: list[str]) -> tuple[str, str]:
    """(side, its source): --hand when given (with a note when the finder disagrees), else the finder's."""
    confidence = f"p(right) = {found.right_probability:.2f}"
    if side is None:
        return found.side, f"{source} ({confidence})"
    if side != found.side:
        notes.append(f"{image_path}: --hand {side} overrides the finder's side ({found.side}, {confidence})")
    return side, "--hand"


def finder_region(finder: Any, image: np.ndarray, image_path: Path, side: str | None,
                  margin: float) -> tuple[HandRegion, str, str, list[str], dict[str, Any]]:
    """(region, side, side source, notes, what the finder said) from ``finder`` (a ``crossmodal.finder.model.HandFinder``);
    ``side`` (--hand) overrides the finder's side."""
    found = finder.find(image)
    if found is None:
        raise NoHandFound(f"{image_path}: no hand found by the finder ({finder.source}); "
                          "give --mask or --bbox for this image")
    notes = []
    if found.regions > 1:
        notes.append(f"{image_path}: the finder sees {found.regions} hand regions; using the one with the most hand "
                     f"probability around it (box {', '.join(f'{v:.0f}' for v in found.box)})")
    chosen, source = _side(found, side, image_path, "finder", notes)
    region = box_region(found.box[:2], found.box[2:], margin, "finder", found.pixels, found=True)
    said = {"finder": finder.source, "side": found.side, "p_right": round(found.right_probability, 4),
            "score": round(found.score, 4), "hand_pixels": int(found.pixels.sum()), "hand_regions": found.regions}
    return region, chosen, source, notes, said


#: Context around a --bbox that the finder sees, as a fraction of the box's longer side on each side.
BOX_CONTEXT = 0.25


def finder_in_box(finder: Any, image: np.ndarray, image_path: Path, region: HandRegion, side: str | None,
                  margin: float) -> tuple[HandRegion, str, str, list[str], dict[str, Any]]:
    """The user's box, with the hand's pixels and side that ``finder`` sees inside it (a little
    context around the box included, the pixels kept within the box): what a model that turns its
    crop by the hand's pixels needs and a box alone lacks. ``side`` (--hand) overrides the finder's."""
    height, width = image.shape[:2]
    pad = BOX_CONTEXT * float(np.max(region.box_hi - region.box_lo))
    u0, v0 = (max(0, int(np.floor(c - pad + 0.5))) for c in region.box_lo)
    u1, v1 = int(np.ceil(min(width - 0.5, region.box_hi[0] + pad) + 0.5)), int(np.ceil(min(height - 0.5, region.box_hi[1] + pad) + 0.5))
    found = finder.find(np.ascontiguousarray(image[v0:v1, u0:u1]))
    if found is None:
        raise NoHandFound(f"{image_path}: the finder ({finder.source}) sees no hand inside --bbox, and this model turns "
                          "its crop by the hand's pixels; give --mask for this image")
    pixels = np.zeros((height, width), dtype=bool)
    pixels[v0:v1, u0:u1] = found.pixels
    cols, rows = np.arange(width), np.arange(height)
    inside = ((cols > region.box_lo[0]) & (cols < region.box_hi[0]))[None, :] & \
             ((rows > region.box_lo[1]) & (rows < region.box_hi[1]))[:, None]
    pixels &= inside
    if not pixels.any():
        raise NoHandFound(f"{image_path}: the hand the finder ({finder.source}) sees near --bbox lies outside it; "
                          "give --mask for this image")
    notes: list[str] = []
    chosen, source = _side(found, side, image_path, "finder inside --bbox", notes)
    said = {"finder": finder.source, "side": found.side, "p_right": round(found.right_probability, 4),
            "score": round(found.score, 4), "hand_pixels": int(pixels.sum()), "hand_regions": found.regions,
            "inside": "--bbox"}
    return box_region(region.box_lo, region.box_hi, margin, "--bbox", pixels, found=True), chosen, source, notes, said
