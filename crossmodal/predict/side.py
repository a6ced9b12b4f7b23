"""Which hand an image shows, and whether it is mirrored for the model (see :func:`plan_hand`)."""

from __future__ import annotations

from dataclasses import dataclass

from crossmodal.data.sides import TRAINING_HANDS, training_hands  # noqa: F401  (predict exports them)

@dataclass(frozen=True)
class HandPlan:
    """Which hand the image shows, whether it is mirrored for the model, and the sentence saying so."""

    side: str | None  # "left" / "right", or None when neither the user nor the mask says
    side_source: str  # "--hand", "mask labels", "assumed: the training data's only side", "not given"
    mirror: bool
    training_hands: str
    statement: str


def plan_hand(dataset: str, side: str | None, side_source: str, mirror_left: bool = False) -> HandPlan:
    """Mirror only when the training data holds one side and the image shows the other.

    RHD and the synthetic hands hold left and right hands unmirrored, so their models see
    either side as it is. STB holds only left hands: a right hand is flipped left-right for
    the model and its prediction flipped back (x -> -x in the camera frame). A model trained
    with ``preprocess.mirror_left`` saw right hands only (its left hands were mirrored), so a
    left hand is flipped for it.
    """
    sides = training_hands(dataset, mirror_left)
    if sides is None:
        training = f"{dataset}: which hands it holds is not known to predict"
        return HandPlan(side, side_source, False, training, f"training data {training}; the image is used as is (no mirroring)")
    if mirror_left:
        training = f"{dataset}: right hands only (left hands mirrored into right ones, preprocess.mirror_left)"
    else:
        training = f"{dataset}: " + (" and ".join(sides) + " hands, unmirrored" if len(sides) > 1 else f"{sides[0]} hands only")
    if len(sides) > 1:
        seen = f"the {side} hand" if side else "the hand (side not given)"
        return HandPlan(side, side_source, False, training,
                        f"training data holds left and right hands unmirrored: {seen} is predicted as seen, no mirroring")
    only = sides[0]
    if side is None:
        return HandPlan(only, "assumed: the training data's only side", False, training,
                        f"training data holds {only} hands only; --hand not given, so a {only} hand is assumed; no mirroring")
    if side == only:
        return HandPlan(side, side_source, False, training, f"training data holds {only} hands only; the {side} hand is used as is")
    return HandPlan(side, side_source, True, training,
                    f"training data holds {only} hands only: the {side} hand was mirrored left-right for the model "
                    f"and its prediction mirrored back (x -> -x), so the outputs describe the {side} hand")
