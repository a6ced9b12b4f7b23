"""The side hedge: the two hypotheses averaged by their probability, and each route's choice."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from side_hedge import hedge, route_errors  # noqa: E402


def epe(truth):
    return lambda pose: float(np.linalg.norm(pose - truth, axis=1).mean())


def test_hedge_weighs_each_hypothesis_by_its_probability():
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(3, 2, 21, 3))
    p = np.array([1.0, 0.0, 0.25])
    out = hedge(poses, p)
    assert np.allclose(out[0], poses[0, 0]) and np.allclose(out[1], poses[1, 1])
    assert np.allclose(out[2], 0.25 * poses[2, 0] + 0.75 * poses[2, 1])


def test_a_hedge_never_errs_more_than_the_expected_choice():
    """By the norm's convexity: |a + (1 - p) d| <= p |a| + (1 - p) |a + d| for every frame."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        truth, right, left = rng.normal(size=(3, 21, 3))
        p = rng.uniform()
        hedged = epe(truth)(hedge(np.stack([right, left])[None], np.array([p]))[0])
        assert hedged <= p * epe(truth)(right) + (1 - p) * epe(truth)(left) + 1e-12


def test_routes_pick_the_labelled_side_the_fitted_side_and_the_hedge():
    truth = np.zeros((21, 3))
    poses = np.stack([np.full((21, 3), 1.0), np.full((21, 3), 3.0)])  # as a right hand errs less
    error = epe(truth)
    right_err, left_err = np.sqrt(3), 3 * np.sqrt(3)
    sure = route_errors(error, poses, np.array([0.2, 0.1]), 0.95, left=True, sure=0.8)
    assert sure["labelled"] == pytest.approx(left_err) and sure["by_fit"] == pytest.approx(right_err)
    assert sure["oracle"] == pytest.approx(right_err) and sure["mean"] == pytest.approx(2 * np.sqrt(3))
    assert sure["hedged"] == pytest.approx((0.95 * 1 + 0.05 * 3) * np.sqrt(3))
    assert sure["hedged_sure"] == sure["by_fit"]  # p = 0.95 is beyond 0.8: the fit's side is kept
    unsure = route_errors(error, poses, np.array([0.1, 0.2]), 0.4, left=False, sure=0.8)
    assert unsure["by_fit"] == pytest.approx(left_err) and unsure["labelled"] == pytest.approx(right_err)
    assert unsure["hedged_sure"] == unsure["hedged"] == pytest.approx((0.4 * 1 + 0.6 * 3) * np.sqrt(3))
