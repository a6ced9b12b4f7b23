"""The learned crop correction's regression, and its target and correction as inverses."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from box_refine import Ridge, corrected, mirrored_centre, target  # noqa: E402

from crossmodal.config import PreprocessConfig  # noqa: E402
from crossmodal.predict.boxes import box_region  # noqa: E402
from crossmodal.predict.image import crop_hand  # noqa: E402


def _naive_ridge(x, y, weight):
    """The same fit by least squares on an augmented system: penalty rows, no penalty on the intercept."""
    z = (x - x.mean(0)) / (x.std(0) + 1e-8)
    a = np.block([[z, np.ones((len(z), 1))], [np.sqrt(weight) * np.eye(z.shape[1]), np.zeros((z.shape[1], 1))]])
    b = np.concatenate([y, np.zeros((z.shape[1], y.shape[1]))])
    coef = np.linalg.lstsq(a, b, rcond=None)[0]
    return z @ coef[:-1] + coef[-1]


@pytest.mark.parametrize("weight", [0.0, 3.0, 300.0])
def test_ridge_matches_its_naive_twin(weight):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)) * [1, 10, 0.1, 3, 1] + 2
    y = x @ rng.normal(size=(5, 3)) + rng.normal(size=(40, 3))
    assert np.allclose(Ridge(weight).fit(x, y).predict(x), _naive_ridge(x, y, weight), atol=1e-8)


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("orient", [False, True])
def test_the_correction_of_a_crop_by_its_own_target_gives_the_true_crop(mirror, orient):
    """Cut a moved, rescaled crop; correct it by the target that says where the true crop lies: the
    true crop's centre and side again, through the perspective crop, its turn and the mirror."""
    height, width = 120, 160
    image = np.zeros((height, width, 3), dtype=np.uint8)
    K = np.array([[150.0, 0, 80], [0, 150.0, 60], [0, 0, 1]])
    pixels = np.zeros((height, width), dtype=bool)
    pixels[30:80, 90:110] = True  # a tall hand right of the centre: the perspective crop is tilted
    model = SimpleNamespace(crop_size=64, preprocess=PreprocessConfig(crop_size=64, orient=orient))
    truth = box_region(np.array([89.5, 29.5]), np.array([109.5, 79.5]), 1.4, "mask", pixels)
    moved = box_region(np.array([80.5, 35.5]), np.array([106.5, 90.5]), 1.4, "mask", pixels)
    crop = crop_hand(model, image, K, moved, mirror)[0]
    step = target(crop, mirrored_centre(truth, mirror, width), moved.side, truth.side, 64)
    assert np.abs(step[:2]).max() > 0.05 and step[2] < 0  # the moved crop is off centre and too large
    again = corrected(moved, crop, step, mirror, width, 64)
    assert np.allclose(again.centre, truth.centre, atol=1e-6) and again.side == pytest.approx(truth.side)
    assert again.hand_uv is moved.hand_uv  # still turned by the pixels it was given
