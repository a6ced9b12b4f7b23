"""The side hypotheses' weights (crossmodal/side_weight.py) against naive twins, and the side
temperature fitted when a run ends, stored in its checkpoint and carried into a shared model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossmodal.cli import main
from crossmodal.config import load_config
from crossmodal.side_weight import fit_temperature, hedge, side_probability


def test_side_probability_is_a_sigmoid_of_the_margin_and_a_choice_at_zero():
    seen, other = torch.tensor([0.30, 0.20, 0.25]), torch.tensor([0.20, 0.30, 0.25])
    for t in (0.01, 0.1):
        expected = [1 / (1 + math.exp(-(a - b) / t)) for a, b in zip(seen.tolist(), other.tolist())]
        torch.testing.assert_close(side_probability(seen, other, t), torch.tensor(expected), rtol=1e-6, atol=0)
    assert side_probability(seen, other, 0.0).tolist() == [1.0, 0.0, 1.0]  # a tie keeps the seen side, as predict
    assert float(side_probability(seen[2:], other[2:], 0.05)) == pytest.approx(0.5)


def test_hedge_weighs_the_two_poses():
    rng = np.random.default_rng(0)
    a, b = torch.from_numpy(rng.normal(size=(4, 21, 3))), torch.from_numpy(rng.normal(size=(4, 21, 3)))
    p = torch.tensor([1.0, 0.0, 0.5, 0.2], dtype=torch.float64)
    out = hedge(a, b, p)
    for k in range(4):
        torch.testing.assert_close(out[k], p[k] * a[k] + (1 - p[k]) * b[k])


def _naive_temperature(margins: np.ndarray) -> float:
    """The likelihood's maximum over a fine grid of 1 / T."""
    grid = np.linspace(0.0, 2000.0, 200001)
    ll = [float(np.sum(-np.logaddexp(0.0, -w * margins))) for w in grid[::100]]
    coarse = grid[::100][int(np.argmax(ll))]
    fine = grid[(grid >= coarse - 10) & (grid <= coarse + 10)]
    best = fine[int(np.argmax([float(np.sum(-np.logaddexp(0.0, -w * margins))) for w in fine]))]
    return 1.0 / best


def test_fit_temperature_matches_its_naive_twin():
    rng = np.random.default_rng(1)
    # Margins drawn from a known temperature: right with p = sigmoid(m / T), the sign flipped otherwise.
    size = rng.exponential(0.02, 4000)
    right = rng.uniform(size=4000) < 1 / (1 + np.exp(-size / 0.008))
    margins = np.where(right, size, -size)
    fitted = fit_temperature(torch.from_numpy(margins))
    assert fitted == pytest.approx(_naive_temperature(margins), rel=1e-3)
    assert fitted == pytest.approx(0.008, rel=0.15)  # and it recovers the temperature drawn


def test_fit_temperature_at_its_bounds():
    assert fit_temperature(torch.tensor([0.1, 0.2, 0.05])) == pytest.approx(1e-4)  # every crop right: the sharpest
    assert fit_temperature(torch.tensor([0.1, -0.2, 0.05])) == pytest.approx(1e3)  # no better than chance
    assert float(side_probability(torch.tensor(1.0), torch.tensor(0.0), 1e3)) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="no margins"):
        fit_temperature(torch.tensor([]))


def test_a_run_that_takes_the_side_from_its_fit_ends_with_a_side_temperature(tiny_data, tmp_path, single_thread, capsys):
    """train fits it on the model's training crops and writes it into the best checkpoint; predict
    and a shared safetensors model read it; calibrate-side refits the same; a model that saw both
    sides gets none, and the command says why in one line."""
    from crossmodal.predict import load_model
    from crossmodal.side_calibration import side_margins
    from crossmodal.train import train
    from crossmodal.trained import load_trained_module

    cfg = load_config(None, [*tiny_data, "model.strategy=poe", f"out_dir={tmp_path}", "name=sided", "trainer.max_steps=2",
                             "model.encoder_options.rgb_resnet18.keypoints=true", "data.preprocess.mirror_left=true"])
    best = train(cfg).best_checkpoint
    model = load_model(best)
    expected = fit_temperature(side_margins(load_trained_module(best).eval()))
    assert model.side_temperature == pytest.approx(expected) and 1e-4 <= model.side_temperature <= 1e3
    assert main(["calibrate-side", "--ckpt", str(best), "--frames", "8"]) == 0
    assert "side temperature" in capsys.readouterr().out
    assert load_model(best).side_temperature == pytest.approx(fit_temperature(side_margins(load_trained_module(best).eval(), 8)))
    shared = tmp_path / "sided.safetensors"
    assert main(["export", "--ckpt", str(best), "--format", "safetensors", "--out", str(shared)]) == 0
    assert load_model(shared).side_temperature == pytest.approx(load_model(best).side_temperature)

    both = load_config(None, [*tiny_data, "model.strategy=poe", f"out_dir={tmp_path}", "name=both", "trainer.max_steps=2",
                              "model.encoder_options.rgb_resnet18.keypoints=true"])
    plain = train(both).best_checkpoint
    assert load_model(plain).side_temperature == 0.0
    capsys.readouterr()
    assert main(["calibrate-side", "--ckpt", str(plain)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs no side temperature" in err
