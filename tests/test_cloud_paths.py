"""experiments/cloud_paths.py on tiny trained checkpoints: its distances against a brute-force
Chamfer in numpy, its report, and a one-line error for a model without a cloud decoder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from crossmodal.errors import ConfigError
from crossmodal.figures import encode, load_samples
from crossmodal.predict import load_model

pytestmark = pytest.mark.usefixtures("single_thread")

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "cloud_paths.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("cloud_paths", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def naive_chamfer_mm(a: np.ndarray, b: np.ndarray, scale_m: np.ndarray) -> np.ndarray:
    d = np.sqrt(((a[:, :, None, :].astype(np.float64) - b[:, None, :, :]) ** 2).sum(-1))  # (N, P, Q)
    return (d.min(axis=2).mean(axis=1) + d.min(axis=1).mean(axis=1)) * scale_m * 1000.0


def test_distances_match_a_brute_force_chamfer(script, tiny_checkpoints):
    model = load_model(tiny_checkpoints["poe"])
    samples = load_samples(model, 3, split="val")
    got = script.cloud_paths(model, samples)
    clouds, scale = samples["cloud"], samples["scale"].astype(np.float64)
    code = encode(model, "cloud", clouds)
    predicted = model.predict(samples["image"])
    np.testing.assert_allclose(got["image"], naive_chamfer_mm(predicted["cloud"], clouds, scale), rtol=1e-4)
    np.testing.assert_allclose(got["cloud"], naive_chamfer_mm(model.decode(code)["cloud"], clouds, scale), rtol=1e-4)
    np.testing.assert_allclose(got["anchor"], naive_chamfer_mm(clouds[[1, 2, 0]], clouds, scale), rtol=1e-4)
    np.testing.assert_allclose(got["code_gap"], np.linalg.norm(predicted["z"] - code, axis=1), rtol=1e-5)
    assert (got["anchor"] > 0).all() and got["image"].shape == (3,)


def test_report_has_a_row_per_model(script, tiny_checkpoints, tmp_path, monkeypatch, capsys):
    out = tmp_path / "paths.md"
    monkeypatch.setattr(sys, "argv", ["cloud_paths.py", f"tiny S4={tiny_checkpoints['poe']}", "--frames", "3",
                                      "--out", str(out)])
    assert script.main() == 0
    table = [line for line in out.read_text().splitlines() if line.startswith("| tiny S4 |")]
    assert len(table) == 1
    cells = [c.strip() for c in table[0].split("|")[2:7]]
    assert all(float(c) > 0 for c in cells), cells


def test_a_model_without_a_cloud_decoder_is_a_one_line_error(script, tiny_checkpoints):
    model = load_model(tiny_checkpoints["crossmodal"])
    with pytest.raises(ConfigError, match="has no cloud decoder") as excinfo:
        script.cloud_paths(model, load_samples(model, 2, split="val"))
    assert len(str(excinfo.value).splitlines()) == 1
