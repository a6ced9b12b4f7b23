"""The crop-jitter study's crops around the finder's, and its crop re-cut around the keypoints."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from crop_jitter import SCALES, SHIFT, candidates, fit_weights, keypoint_crop, keypoint_ratios, summary  # noqa: E402

from crossmodal.predict.boxes import box_region  # noqa: E402


def region():
    pixels = np.zeros((40, 60), dtype=bool)
    pixels[10:30, 20:30] = True
    return box_region(np.array([19.5, 9.5]), np.array([29.5, 29.5]), 1.5, "finder", pixels, found=True)


def test_candidates_rescale_about_the_centre_then_move_along_each_axis():
    base = region()
    named = candidates(base)
    assert len(named) == len(SCALES) + 4
    for (name, crop), scale in zip(named, SCALES):
        assert crop.side == pytest.approx(base.side * scale) and np.allclose(crop.centre, base.centre)
    moves = {name: (crop.centre - base.centre) / base.side for name, crop in named[len(SCALES):]}
    assert np.allclose(moves["shift right"], [SHIFT, 0]) and np.allclose(moves["shift up"], [0, -SHIFT])
    # The finder's pixels still turn every crop.
    assert all(crop.hand_uv is base.hand_uv for _, crop in named)


def test_keypoint_crop_inverts_the_ratios_and_they_ignore_where_and_how_large():
    rng = np.random.default_rng(0)
    uv = rng.uniform(50, 90, size=(21, 2))
    centre, side = np.array([71.0, 68.0]), 57.0
    ratios = keypoint_ratios(uv, centre, side)
    again_centre, again_side = keypoint_crop(uv, ratios)
    assert np.allclose(again_centre, centre) and again_side == pytest.approx(side)
    # The same hand and crop moved and enlarged together: the same ratios.
    assert np.allclose(keypoint_ratios(uv * 2.5 + 30, centre * 2.5 + 30, side * 2.5), ratios)
    # A crop twice the keypoints' longer side, centred on their box.
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    assert np.allclose(keypoint_ratios(uv, (lo + hi) / 2, 2 * (hi - lo).max()), [0, 0, 2])


def test_fit_weights_favour_the_best_fit_and_sharpen_as_the_temperature_falls():
    fits = np.array([0.10, 0.12, 0.11])
    w = fit_weights(fits)
    assert w.sum() == pytest.approx(1.0) and np.argmax(w) == 1 and w[1] > w[2] > w[0]
    assert fit_weights(fits, 1e-4)[1] == pytest.approx(1.0)
    assert np.allclose(fit_weights(fits, 1e4), 1 / 3, atol=1e-4)


def test_summary_averages_each_route_and_each_candidate():
    routes = ("finder", "oracle", "by_fit", "mean", "fit_weighted", "keypoint_box", "ground_truth")
    rows = [{"candidates": ["a", "b"], "errors": [10.0, 20.0], **{r: 1.0 for r in routes}},
            {"candidates": ["a", "b"], "errors": [30.0, 40.0], **{r: 3.0 for r in routes}}]
    out = summary(rows)
    assert out["frames"] == 2 and out["oracle"] == 2.0 and out["candidates"] == {"a": 20.0, "b": 30.0}
