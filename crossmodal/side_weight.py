"""How much each side hypothesis weighs, and the pose hedged between them.

A model that mirrored left hands into right ones (``preprocess.mirror_left``) must know a found
hand's side; its own 2D keypoint fit picks the side (the hypothesis whose maps peak higher) and is
right in about three crops in four on the synthetic hands, and a wrong side costs 20-27 mm. The
fit's margin says how sure it is: the probability that the hand is the side the model saw is
``sigmoid((fit_seen - fit_other) / T)``. The two hypotheses' poses averaged with weights p and
1 - p never err more, frame by frame, than choosing with that p would on average (a norm is
convex), and where the fit is unsure they err less (docs/predict.md, "Which hand").

``T`` is fitted on a model's own training crops, each as cut (the side it saw, right by
construction) and mirrored (the other side): a mirrored crop is exactly the other hypothesis' crop.
A temperature of 0 means no hedge: the higher fit's pose alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The checkpoint key that holds a model's side temperature (absent: 0, no hedge).
CHECKPOINT_KEY = "side_temperature"


def side_probability(fit_seen: Tensor, fit_other: Tensor, temperature: float) -> Tensor:
    """P(the hand is the side the model saw), from the two hypotheses' keypoint fits; with
    ``temperature`` 0, the choice: 1 unless the other side fits better (a tie keeps the seen side,
    as ``predict`` does)."""
    margin = fit_seen - fit_other
    if temperature <= 0:
        return (margin >= 0).to(margin.dtype)
    return torch.sigmoid(margin / temperature)


def hedge(pose_seen: Tensor, pose_other: Tensor, p_seen: Tensor) -> Tensor:
    """(..., J, 3) the two hypotheses' poses (in the image's camera) weighted by ``p_seen`` (...)."""
    p = p_seen[..., None, None].to(pose_seen.dtype)
    return p * pose_seen + (1.0 - p) * pose_other


def fit_temperature(margins: Tensor, max_inverse: float = 1e4, min_inverse: float = 1e-3, iterations: int = 100) -> float:
    """The maximum-likelihood ``T`` of ``sigmoid(margin / T)`` for margins ``fit_true - fit_mirrored``
    (N,), each of a crop whose true side is known. The log-likelihood sum(log sigmoid(w m)) is
    concave in w = 1 / T, so its derivative sum(m sigmoid(-w m)) is bisected on [min_inverse,
    max_inverse]: margins that are all positive (a perfect fit) give T = 1 / max_inverse; a fit no
    better than chance gives T = 1 / min_inverse, where p is 1/2 to three decimals for any fit margin
    (fits lie in (0, 1])."""
    m = margins.double().flatten()
    if len(m) == 0:
        raise ValueError("fit_temperature: no margins to fit")

    def slope(w: float) -> float:
        return float((m * torch.sigmoid(-w * m)).sum())

    lo, hi = float(min_inverse), float(max_inverse)
    if slope(lo) <= 0:
        return 1.0 / lo
    if slope(hi) > 0:
        return 1.0 / hi
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return 1.0 / (0.5 * (lo + hi))
