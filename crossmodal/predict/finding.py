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
    confidence = f"p(right) = {found.right_probability:.2f}"
    if side is not None:
        if side != found.side:
            notes.append(f"{image_path}: --hand {side} overrides the finder's side ({found.side}, {confidence})")
        chosen, source = side, "--hand"
    else:
        chosen, source = found.side, f"finder ({confidence})"
    region = box_region(found.box[:2], found.box[2:], margin, "finder", found.pixels)
    said = {"finder": finder.source, "side": found.side, "p_right": round(found.right_probability, 4),
            "score": round(found.score, 4), "hand_pixels": int(found.pixels.sum()), "hand_regions": found.regions}
    return region, chosen, source, notes, said
