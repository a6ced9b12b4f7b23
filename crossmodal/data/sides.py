"""Which hands a dataset's frames show, and so which sides a model trained on it saw."""

from __future__ import annotations

#: Hands each dataset's frames show, unmirrored (crossmodal/data/rhd.py: the evaluated hand is
#: either one; the synthetic generator renders left and right hands; crossmodal/data/stb.py:
#: every STB sequence shows the subject's left hand).
TRAINING_HANDS = {"rhd": ("left", "right"), "synthetic": ("left", "right"), "stb": ("left",)}


def training_hands(dataset: str, mirror_left: bool = False) -> tuple[str, ...] | None:
    """The sides a model saw: right only with ``preprocess.mirror_left`` (its left hands were
    mirrored), else those of its dataset; None when predict does not know the dataset."""
    return ("right",) if mirror_left else TRAINING_HANDS.get(dataset)
