"""figures from tiny trained checkpoints: Figure 3, Figure 4 and the generation figures render,
with the panels each model can fill, and the interpolation is the segment between two codes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal.figures import interpolate_latents, load_samples
from crossmodal.predict import load_model

pytestmark = pytest.mark.usefixtures("single_thread")


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as png:
        assert png.format == "PNG"
        return png.size


def test_figures_of_s4_render_every_panel(tiny_checkpoints, tmp_path, capsys):
    assert main(["figures", "--ckpt", str(tiny_checkpoints["poe"]), "--out", str(tmp_path), "--samples", "2",
                 "--steps", "3"]) == 0
    out = capsys.readouterr().out
    names = ["figure3.png", "figure4.png", "generation_prior.png", "generation_from_cloud.png"]
    for name in names:
        assert f"wrote {tmp_path / name}" in out
    # 100 dpi: Figure 3 is 2.6 in per panel, 5 panels (RGB, two poses, two clouds) x 2 samples.
    assert png_size(tmp_path / "figure3.png") == (1300, 520)
    # Figure 4: 3 steps x (images, poses, clouds); generation: pose, heatmaps, cloud (+ the input cloud).
    assert png_size(tmp_path / "figure4.png") == (660, 690)
    assert png_size(tmp_path / "generation_prior.png") == (780, 520)
    assert png_size(tmp_path / "generation_from_cloud.png") == (1040, 520)


def test_figures_of_s1_have_no_decoded_cloud(tiny_checkpoints, tmp_path, capsys):
    assert main(["figures", "--ckpt", str(tiny_checkpoints["crossmodal"]), "--out", str(tmp_path), "--samples", "1",
                 "--steps", "2"]) == 0
    assert png_size(tmp_path / "figure3.png") == (1040, 260)  # RGB, two poses, the ground-truth cloud
    assert png_size(tmp_path / "generation_prior.png") == (260, 260)  # the pose decoder only
    assert not (tmp_path / "generation_from_cloud.png").exists()


def test_interpolation_runs_from_one_test_code_to_the_other(tiny_data, tiny_checkpoints):
    model = load_model(tiny_checkpoints["poe"])
    samples = load_samples(model, 2)
    predicted = model.predict(samples["image"])
    codes, t = interpolate_latents(predicted["z"][0], predicted["z"][1], 5)
    np.testing.assert_allclose(t, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(codes[2], (predicted["z"][0] + predicted["z"][1]) / 2, atol=1e-6)
    decoded = model.decode(codes)
    # The ends decode to exactly what RGB-only inference gives for the two images.
    np.testing.assert_allclose(decoded["pose"][[0, -1]], predicted["pose"], atol=1e-5)
    np.testing.assert_allclose(decoded["cloud"][[0, -1]], predicted["cloud"], atol=1e-5)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--pair", "0"], "--pair: expected two test indices A,B, got '0'"),
        (["--pair", "1,1"], "--pair needs two different test indices >= 0, got 1,1"),
        (["--samples", "50"], "the test split has 6 samples; 50 were asked for"),
    ],
)
def test_bad_figure_options_are_one_line_errors(args, expected, tiny_checkpoints, tmp_path, capsys):
    assert main(["figures", "--ckpt", str(tiny_checkpoints["poe"]), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
