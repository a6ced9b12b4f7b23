"""Result reports: the table, metrics.json and the figures are real, complete files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal.data.geometry import project
from crossmodal.metrics import PCK_THRESHOLDS_MM, KeypointMetrics, evaluate_keypoints
from crossmodal.report import (
    format_results_table,
    plot_pck,
    plot_qualitative,
    project_points,
    write_metrics_json,
)


def _metrics() -> dict:
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=40.0, size=(12, 21, 3))
    pred = gt + rng.normal(scale=12.0, size=(12, 21, 3))
    visible = rng.random((12, 21)) > 0.2
    visible[:, 20] = False
    return evaluate_keypoints(pred, gt, visible)


def _leftovers(folder: Path) -> list[str]:
    """Temporary files that atomic writing would leave behind if it failed to rename."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_table_contains_the_numbers() -> None:
    metrics = _metrics()
    table = format_results_table(metrics, title="RHD evaluation")
    assert "RHD evaluation" in table
    for key in ("epe_mean", "epe_median"):
        assert f"{metrics[key]:.2f}" in table
    for key in ("auc_0_50", "auc_20_50", "auc_20_50_exact", "pck_20mm", "pck_50mm"):
        assert f"{metrics[key]:.4f}" in table
    assert "PCK @ 30 mm" in table and "interpolated" not in table
    assert "12" in table.split("samples")[1]
    assert "\x1b[" not in table  # plain text, safe for logs


def test_table_interpolates_when_only_the_curve_is_given() -> None:
    curve_only = {"thresholds": PCK_THRESHOLDS_MM.tolist(), "pck": (PCK_THRESHOLDS_MM / 50.0).tolist(), "epe_mean": 3.0}
    table = format_results_table(curve_only, title="curve")
    # A straight line through (0, 0) and (50, 1): 0.4 at 20 mm, 0.8 at 40 mm.
    assert "PCK @ 20 mm (interpolated)" in table
    assert "0.4000" in table and "0.8000" in table and "3.00" in table


def test_metrics_json_round_trips_tensors_and_nan(tmp_path: Path) -> None:
    metric = KeypointMetrics()
    rng = np.random.default_rng(1)
    gt = torch.from_numpy(rng.normal(size=(6, 21, 3)))
    visible = torch.ones(6, 21, dtype=torch.bool)
    visible[:, 5] = False
    metric.update(gt + 0.3, gt, torch.full((6,), 0.02), visible)
    computed = metric.compute()
    path = tmp_path / "out" / "metrics.json"
    write_metrics_json(computed, path)
    loaded = json.loads(path.read_text())
    assert loaded["epe_mean"] == pytest.approx(computed["epe_mean"].item())
    assert loaded["pck"] == pytest.approx(computed["pck"].tolist())
    assert loaded["num_samples"] == 6
    assert loaded["per_keypoint_epe_mean"][5] is None  # NaN -> null, strict JSON
    assert loaded["thresholds"][8] == pytest.approx(21.0526315, abs=1e-6)
    assert _leftovers(path.parent) == []


def test_plot_pck_writes_a_real_png(tmp_path: Path) -> None:
    metrics = _metrics()
    path = tmp_path / "pck.png"
    plot_pck(
        {
            "ours": (metrics["thresholds"], metrics["pck"]),
            "worse": (metrics["thresholds"], np.asarray(metrics["pck"]) * 0.5),
        },
        path,
        title="RHD 3D PCK",
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (450, 600, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # curves, text, legend: not blank
    assert _leftovers(tmp_path) == []


def test_plot_validation_curves_draws_runs_of_unequal_length(tmp_path: Path) -> None:
    """A resumed or still-running row may have shorter curves: the mean covers the common part."""
    from crossmodal.report import plot_validation_curves

    path = tmp_path / "curves.png"
    plot_validation_curves({"S1 (n=2)": [[60.0, 40.0, 30.0], [58.0, 41.0]], "S4 (n=1)": [[55.0, 35.0, 25.0]]}, path)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    with pytest.raises(ValueError, match="no curves"):
        plot_validation_curves({}, tmp_path / "none.png")
    assert _leftovers(tmp_path) == []


def test_figure_format_follows_the_final_name(tmp_path: Path) -> None:
    path = tmp_path / "pck.svg"
    plot_pck({"a": ([0.0, 25.0, 50.0], [0.0, 0.5, 1.0])}, path)
    assert "<svg" in path.read_text()[:2000]


def test_plot_pck_rejects_mismatched_curve_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'bad'"):
        plot_pck({"bad": ([0.0, 1.0, 2.0], [0.5, 1.0])}, tmp_path / "pck.png")
    assert list(tmp_path.iterdir()) == []


def _colour_pixels(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) < tol).sum())


def _skeleton_uv(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.uniform(0.2 * size, 0.8 * size, size=(n, 21, 2))


@pytest.mark.parametrize("with_clouds", [False, True])
def test_plot_qualitative_draws_skeletons_and_clouds(tmp_path: Path, with_clouds: bool) -> None:
    rng = np.random.default_rng(2)
    n, size = 2, 64
    images = np.full((n, size, size, 3), 128, dtype=np.uint8)  # grey: red/green can only be skeletons
    gt_uv, pred_uv = _skeleton_uv(rng, n, size), _skeleton_uv(rng, n, size)
    clouds = (rng.normal(size=(n, 200, 3)), rng.normal(size=(n, 150, 3))) if with_clouds else (None, None)
    path = tmp_path / "qualitative.png"
    plot_qualitative(images, gt_uv, pred_uv, *clouds, path)

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    columns = 4 if with_clouds else 2
    assert pixels.shape == (300 * n, 300 * columns, 3)
    assert _colour_pixels(pixels, (0, 255, 0)) > 50  # ground-truth skeleton (lime)
    assert _colour_pixels(pixels, (255, 0, 0)) > 50  # predicted skeleton (red)
    assert _colour_pixels(pixels, (128, 128, 128), tol=3) > 2000  # the crops themselves
    blue, orange = _colour_pixels(pixels, (31, 119, 180)), _colour_pixels(pixels, (255, 127, 14))
    if with_clouds:
        assert blue > 50 and orange > 50
    else:
        assert blue == 0 and orange == 0


def test_plot_qualitative_accepts_channel_first_float_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = torch.rand(1, 3, 32, 32)
    uv = torch.from_numpy(_skeleton_uv(rng, 1, 32))
    plot_qualitative(images, uv, uv + 1.0, None, None, tmp_path / "q.png")
    with Image.open(tmp_path / "q.png") as image:
        assert image.size == (600, 300)
    with pytest.raises(ValueError, match="pred_uv"):
        plot_qualitative(images, uv, uv[:, :20], None, None, tmp_path / "bad.png")


def test_project_points_by_hand_and_per_sample_intrinsics() -> None:
    K = np.array([[100.0, 0.0, 50.0], [0.0, 200.0, 40.0], [0.0, 0.0, 1.0]])
    xyz = np.zeros((2, 21, 3))
    xyz[:, :, 2] = 0.5
    xyz[0, 3] = (0.1, 0.2, 1.0)
    # u = 100 * 0.1 / 1 + 50 = 60, v = 200 * 0.2 / 1 + 40 = 80.
    assert project_points(xyz, K)[0, 3] == pytest.approx([60.0, 80.0])
    K2 = np.stack([K, K * np.array([[2.0], [1.0], [1.0]])])  # second sample: fx and cx doubled
    uv = project_points(xyz, K2)
    for i in range(2):
        np.testing.assert_allclose(uv[i], project(xyz[i], K2[i]))
    assert uv[1, 0, 0] == pytest.approx(100.0)
