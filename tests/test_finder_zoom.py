"""The finder's second look (crossmodal/finder/zoom.py): the window sampler and the way back to the
image against naive twins, the located box with a network whose answer is known, the fallback to
the first look, the training windows, and a zoomed finder in predict's path and in the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from crossmodal.finder.locate import locate_hand
from crossmodal.finder.resize import area_resize, working_size
from crossmodal.finder.zoom import back_matrix, look_twice, sample_window, sampling_matrix, window_of

pytestmark = pytest.mark.usefixtures("single_thread")


def test_sampling_matrix_equals_a_supersampled_twin():
    """Each window cell is the mean of the image over its span; outside the image reads 0."""
    signal = torch.rand(23, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for start, side, cells in ((-0.5, 23.0, 23), (3.2, 9.7, 5), (-6.0, 14.0, 7), (15.3, 20.0, 9)):
        weights = sampling_matrix(torch.tensor([start], dtype=torch.float64), torch.tensor([side], dtype=torch.float64),
                                  cells, len(signal))[0]
        # Naive twin: 4000 points spread evenly over each cell's span, each reading the pixel it falls in.
        naive = []
        for j in range(cells):
            lo = start + j * side / cells
            x = lo + (np.arange(4000) + 0.5) / 4000 * (side / cells)
            pixel = np.floor(x + 0.5).astype(int)
            inside = (pixel >= 0) & (pixel < len(signal))
            naive.append(np.where(inside, signal.numpy()[np.clip(pixel, 0, len(signal) - 1)], 0.0).mean())
        np.testing.assert_allclose((weights @ signal).numpy(), naive, atol=2e-3)


def test_a_whole_image_window_at_full_size_is_the_image():
    image = torch.rand(1, 3, 12, 17, generator=torch.Generator().manual_seed(1))
    start, side = torch.tensor([-0.5]), torch.tensor([17.0])
    window = sample_window(image[..., :12, :12], sampling_matrix(start, torch.tensor([12.0]), 12, 12),
                           sampling_matrix(start, torch.tensor([12.0]), 12, 12))
    torch.testing.assert_close(window, image[..., :12, :12])
    assert sampling_matrix(start, side, 17, 17)[0].diagonal().min() == pytest.approx(1.0)


def test_back_matrix_is_bilinear_interpolation_inside_the_window_and_zero_outside():
    maps = torch.rand(1, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # A window over the whole 30 x 30 image: F.interpolate's bilinear upsampling, edges held.
    whole = back_matrix(torch.tensor([-0.5], dtype=torch.float64), torch.tensor([30.0], dtype=torch.float64), 6, 30)
    up = whole[:, None] @ maps @ whole[:, None].transpose(-1, -2)
    torch.testing.assert_close(up, F.interpolate(maps, size=(30, 30), mode="bilinear", align_corners=False))
    # A window over pixels 5..12 of a 20-pixel row: the rows of the others are zero.
    part = back_matrix(torch.tensor([4.5], dtype=torch.float64), torch.tensor([8.0], dtype=torch.float64), 6, 20)[0]
    assert part[:5].abs().sum() == 0 and part[13:].abs().sum() == 0
    torch.testing.assert_close(part[5:13].sum(dim=1), torch.ones(8, dtype=torch.float64))


class Bright(torch.nn.Module):
    """A finder whose answer is known: a right hand wherever the red channel is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1]
        return torch.cat([torch.zeros_like(red), torch.full_like(red, -10.0), 40 * (red - 0.5)], 1)


class Corner(torch.nn.Module):
    """A finder that always sees a hand in the top-left corner of whatever it is shown."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 3, *x.shape[-2:])
        logits[:, 2, :4, :4] = 20.0
        return logits


def first_look(net: torch.nn.Module, image: torch.Tensor, size: int = 96):
    height, width = image.shape[-2:]
    return locate_hand(net(area_resize(image, working_size(height, width, size))), (height, width))


def test_the_second_look_finds_the_box_to_the_pixel():
    image = torch.zeros(1, 3, 160, 200)
    image[:, :, 50:70, 83:131] = 1.0  # the hand: pixel edges (82.5, 49.5, 130.5, 69.5)
    truth = torch.tensor([82.5, 49.5, 130.5, 69.5])
    first = first_look(Bright(), image)
    second = look_twice(Bright(), image, first, 2.0, 96, 0.5, 4)
    assert (second.box[0] - truth).abs().max() < 0.6
    assert (second.box[0] - truth).abs().max() < (first.box[0] - truth).abs().max()
    inside = torch.zeros(160, 200, dtype=torch.bool)
    inside[50:70, 83:131] = True
    assert (second.hand[0] == inside).float().mean() > 0.998 and second.right[0] > 0.99


def test_a_second_look_that_wanders_off_keeps_the_first():
    image = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    first = first_look(Corner(), image)
    assert bool(first.found(0.5, 4)[0])
    second = look_twice(Corner(), image, first, 2.0, 96, 0.5, 4)
    for name in ("box", "right", "score", "pixels", "hand", "any_hand"):
        assert torch.equal(getattr(second, name), getattr(first, name)), name


def test_the_window_is_zoom_times_the_longer_side_and_never_tiny():
    u0, v0, side = window_of(torch.tensor([[10.0, 20.0, 50.0, 30.0], [0.0, 0.0, 4.0, 4.0]]), 2.0)
    torch.testing.assert_close(side, torch.tensor([80.0, 32.0]))
    torch.testing.assert_close(torch.stack([u0, v0], 1), torch.tensor([[-10.0, -15.0], [-14.0, -14.0]]))


def test_training_windows_hold_the_hand_with_its_classes():
    from crossmodal.finder.data import training_window

    image = np.zeros((120, 160, 3), dtype=np.uint8)
    labels = np.zeros((120, 160), dtype=np.uint8)
    image[40:70, 60:100], labels[40:70, 60:100] = 255, 20  # a right hand (labels 18-33)
    box = np.array([59.5, 39.5, 99.5, 69.5])
    for seed in range(5):
        window, classes = training_window(image, labels, box, 2.0, 48, np.random.default_rng(seed))
        assert window.shape == (3, 48, 48) and classes.shape == (48, 48)
        assert (classes == 2).any() and not (classes == 1).any()
        # The classes are the window's pixels: bright where the hand is, up to the border cells.
        assert ((window[0] > 127) == (classes == 2)).mean() > 0.97
    first, _ = training_window(image, labels, box, 2.0, 48, np.random.default_rng(0))
    again, _ = training_window(image, labels, box, 2.0, 48, np.random.default_rng(0))
    assert np.array_equal(first, again)  # a run's windows are fixed by its seed


def eval_images(tiny_data: list[str], count: int) -> list[Path]:
    root = Path(next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))) / "evaluation" / "color"
    return sorted(root.glob("*.png"))[:count]


def test_a_zoomed_finder_finds_the_same_box_in_predict_and_in_the_onnx_graph(tiny_data, tiny_checkpoints, tiny_finder,
                                                                          tmp_path, monkeypatch):
    from crossmodal.export import run_onnx
    from crossmodal.finder.model import load_finder
    from crossmodal.pipeline.export import default_K, export_with_finder
    from crossmodal.predict import load_model

    finder_ckpt = tiny_finder / "checkpoints" / "best.ckpt"
    one, two = load_finder(finder_ckpt), load_finder(finder_ckpt)
    two.config["finder"]["zoom"] = 2.0
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in eval_images(tiny_data, 6)])
    found = [two.find(image) for image in images]
    # A second look that finds nothing keeps the first: a hand is found where one look finds it.
    assert [f is not None for f in found] == [one.find(image) is not None for image in images]
    assert sum(f is not None for f in found) >= 2
    assert all(f.pixels.any() and f.box[2] > f.box[0] for f in found if f is not None)
    model = load_model(tiny_checkpoints["crossmodal"])
    # The graph reads its finder's config from the file: here one with zoom set, as a finder trained with it.
    monkeypatch.setattr("crossmodal.pipeline.export.load_finder", lambda path: two)
    result = export_with_finder(model, finder_ckpt, "onnx", tmp_path / "zoom.onnx", None, (320, 320), images)
    assert result.checked_with == "onnxruntime" and result.max_difference <= 1e-4, result
    for image, f in zip(images, found):
        out = run_onnx(result.path, image[None].transpose(0, 3, 1, 2).astype(np.float32) / 255, default_K((320, 320), 1).numpy())
        assert out["found"][0] == float(f is not None)
        if f is not None:
            np.testing.assert_allclose(out["box"][0], f.box, atol=1e-3)


def test_a_finder_trained_with_zoom_sees_windows_and_reports_two_looks(tiny_data, tmp_path):
    """finder.zoom trains on every frame's whole image and a window around its hand, and the
    report is the two-look finder's; a zoom below 1 is a one-line error before anything is written."""
    import json

    from crossmodal.config import FinderRunConfig, load_config
    from crossmodal.errors import ConfigError
    from crossmodal.finder.data import load_frames
    from crossmodal.finder.model import load_finder
    from crossmodal.finder.train import evaluate_frames, train_finder
    from conftest import TINY_FINDER_OVERRIDES

    root = next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))
    frames = load_frames("synthetic", root, "training", 64, progress=False, workers=1, zoom=2.0)
    assert frames.windows.shape == (len(frames), 3, 64, 64) and frames.window_classes.shape == (len(frames), 64, 64)
    assert (frames.window_classes > 0).flatten(1).any(dim=1).all()  # every window holds hand pixels
    overrides = [f"data.root={root}", f"out_dir={tmp_path}", *TINY_FINDER_OVERRIDES, "optim.max_epochs=2", "finder.zoom=2.0"]
    run = train_finder(load_config(None, [*overrides, "name=zoom"], schema=FinderRunConfig))
    finder = load_finder(run.best_checkpoint)
    assert finder.zoom == 2.0
    evaluation = load_frames("synthetic", root, "evaluation", 64, keep_full=True, progress=False, workers=1)
    metrics, _ = evaluate_frames(finder, evaluation, (320, 320))
    assert metrics == pytest.approx({k: json.loads((run.run_dir / "metrics.json").read_text())[k] for k in metrics})
    with pytest.raises(ConfigError, match="finder.zoom must be 0 .one look. or at least 1"):
        train_finder(load_config(None, [*overrides, "name=bad", "finder.zoom=0.5"], schema=FinderRunConfig))
    assert not (tmp_path / "bad").exists()
