"""Batch augmentation keeps image, 2D keypoints, intrinsics and 3D geometry consistent; heatmaps."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from crossmodal.config import AugmentConfig, PreprocessConfig
from crossmodal.data.augment import augment_batch, hsv_to_rgb, rgb_to_hsv, shift_hue
from crossmodal.data.heatmaps import make_heatmaps
from crossmodal.data.preprocess import preprocess_frame
from test_preprocess import render_hand_frame

SIZE = 64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@functools.lru_cache(maxsize=1)
def _samples(n: int) -> tuple[dict, ...]:
    cfg = PreprocessConfig(crop_size=SIZE, pool_size=128)
    return tuple(preprocess_frame(render_hand_frame(seed=s), cfg) for s in range(n))


def make_batch(n: int = 4, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A batch of real preprocessed samples; images are black but for a bright blob on joint 9."""
    samples = _samples(n)
    batch = {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in ("pose", "cloud", "uv", "root", "scale", "rotation")}
    batch["K"] = torch.from_numpy(np.stack([s["K_crop"] for s in samples]))
    batch["visible"] = torch.ones(n, 21, dtype=torch.bool)
    # A Gaussian blob centred exactly (sub-pixel) on the keypoint: its centroid can be tracked.
    blob = make_heatmaps(batch["uv"][:, 9:10], batch["visible"][:, 9:10], SIZE, SIZE, sigma=1.5)
    batch["image"] = blob.expand(n, 3, SIZE, SIZE).contiguous()
    return {key: value.to(device) for key, value in batch.items()}


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    homogeneous = points @ K.transpose(1, 2)
    return homogeneous[..., :2] / homogeneous[..., 2:3]


def strong(**overrides) -> AugmentConfig:
    values = dict(scale_min=0.8, scale_max=1.3, translate_px=30.0, rotate=math.pi, hue=0.3)
    values.update(overrides)
    return AugmentConfig(**values)


@pytest.mark.parametrize("device", DEVICES)
def test_pose_still_projects_onto_keypoints(device: str) -> None:
    batch = make_batch(device=device)
    out = augment_batch(batch, strong(), torch.Generator().manual_seed(0))
    joints = out["pose"] * out["scale"][:, None, None] + out["root"][:, None, :]
    torch.testing.assert_close(project(joints, out["K"]), out["uv"], atol=2e-3, rtol=0)
    assert not torch.allclose(out["uv"], batch["uv"], atol=1.0)  # something did move


@pytest.mark.parametrize("device", DEVICES)
def test_image_content_moves_with_keypoints(device: str) -> None:
    batch = make_batch(device=device)
    out = augment_batch(batch, strong(translate_px=20.0), torch.Generator().manual_seed(1))
    rows, cols = torch.meshgrid(torch.arange(SIZE, device=device), torch.arange(SIZE, device=device), indexing="ij")
    checked = 0
    for b in range(len(out["image"])):
        target = out["uv"][b, 9]
        if not bool(((target > 6) & (target < SIZE - 7)).all()):
            continue  # a blob cut by the crop border has a biased centroid
        weight = out["image"][b, 0]
        centroid = torch.stack([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum()
        assert torch.dist(centroid, target) < 0.25, (b, centroid, target)
        checked += 1
    assert checked >= 3


def test_geometry_is_rotated_rigidly_about_the_view_axis() -> None:
    batch = make_batch()
    out = augment_batch(batch, strong(), torch.Generator().manual_seed(2))
    Rz = out["rotation"] @ batch["rotation"].transpose(1, 2)
    torch.testing.assert_close(Rz[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(4, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["pose"], batch["pose"] @ Rz.transpose(1, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["cloud"], batch["cloud"] @ Rz.transpose(1, 2), atol=1e-5, rtol=0)
    # Lengths and depth (z) are untouched by an in-plane rotation.
    torch.testing.assert_close(out["pose"].norm(dim=-1), batch["pose"].norm(dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["root"][:, 2], batch["root"][:, 2])


def test_ranges_and_determinism() -> None:
    batch = make_batch()
    identity = AugmentConfig(scale_min=1.0, scale_max=1.0, translate_px=0.0, rotate=0.0, hue=0.0)
    out = augment_batch(batch, identity, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out["image"], batch["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["uv"], batch["uv"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["K"], batch["K"], atol=1e-4, rtol=0)
    # Pure zoom: every keypoint's distance from the crop centre grows by a factor within [1.1, 1.2].
    zoom = augment_batch(batch, AugmentConfig(scale_min=1.1, scale_max=1.2, translate_px=0.0, rotate=0.0, hue=0.0))
    centre = (SIZE - 1) / 2.0
    ratio = (zoom["uv"] - centre).norm(dim=-1) / (batch["uv"] - centre).norm(dim=-1)
    assert ratio.min() >= 1.1 - 1e-4 and ratio.max() <= 1.2 + 1e-4
    assert torch.allclose(ratio, ratio[:, :1], atol=1e-3)  # one factor per sample
    a = augment_batch(batch, strong(), torch.Generator().manual_seed(4))
    b = augment_batch(batch, strong(), torch.Generator().manual_seed(4))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert augment_batch(batch, AugmentConfig(enabled=False))["image"] is batch["image"]


def test_hue_shift() -> None:
    rng = torch.Generator().manual_seed(5)
    image = torch.rand(2, 3, 8, 8, generator=rng)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(image)), image, atol=1e-5, rtol=0)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    green = shift_hue(red, torch.tensor([1.0 / 3.0]))
    torch.testing.assert_close(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    shifted = shift_hue(image, torch.tensor([0.1, -0.1]))
    torch.testing.assert_close(rgb_to_hsv(shifted)[:, 2], rgb_to_hsv(image)[:, 2], atol=1e-5, rtol=0)  # value kept


@pytest.mark.parametrize("device", DEVICES)
def test_heatmaps(device: str) -> None:
    uv = torch.tensor([[[31.5, 31.5], [0.0, 10.0], [100.0, 100.0]]], device=device)
    visible = torch.tensor([[True, True, False]], device=device)
    maps = make_heatmaps(uv, visible, crop_size=64, size=32, sigma=1.5)
    assert maps.shape == (1, 3, 32, 32) and maps.device.type == device
    # Crop pixel 31.5 (the centre of a 64 crop) is heatmap coordinate 15.5: four equal maxima.
    top = maps[0, 0]
    assert torch.isclose(top[15, 15], top[16, 16]) and torch.isclose(top[15, 16], top[16, 15])
    expected = math.exp(-(0.5**2 + 0.5**2) / (2 * 1.5**2))
    assert math.isclose(top.max().item(), expected, rel_tol=1e-5)
    # Direct formula at one pixel for the second joint, heatmap centre ((0 + .5) / 2 - .5, (10 + .5) / 2 - .5).
    cu, cv = -0.25, 4.75
    value = math.exp(-((3 - cu) ** 2 + (7 - cv) ** 2) / (2 * 1.5**2))
    assert math.isclose(maps[0, 1, 7, 3].item(), value, rel_tol=1e-5)
    assert not maps[0, 2].any()  # invisible joint
    single = make_heatmaps(uv[0], visible[0], crop_size=64, size=32, sigma=1.5)
    torch.testing.assert_close(single, maps[0])


def _errors_file(tmp_path, rows) -> str:
    import json

    path = tmp_path / "finder_errors.json"
    path.write_text(json.dumps({"rows": [dict(zip(("shift_x", "shift_y", "scale", "turn"), r)) for r in rows]}))
    return str(path)


def test_a_measured_crop_error_moves_the_hand_as_the_finders_box_would(tmp_path) -> None:
    """A finder box 0.1 box sides to the right and 1.25x the truth's shows the hand smaller and to
    the left: with crop margin 1.4 the root's keypoint lands where that crop would put it."""
    from crossmodal.data.augment import crop_error_table

    margin = 1.4
    table = crop_error_table(_errors_file(tmp_path, [(0.1, 0.0, 1.25, 0.0)]), margin)
    np.testing.assert_allclose(table.numpy(), [[0.8, -0.1 / (margin * 1.25), 0.0, 0.0]], rtol=1e-6)
    batch = make_batch()
    out = augment_batch(batch, AugmentConfig(hue=0.0), torch.Generator().manual_seed(0), crop_errors=table)
    centre = (SIZE - 1) / 2.0
    expected = 0.8 * (batch["uv"] - centre) + centre + torch.tensor([-0.1 / (margin * 1.25) * SIZE, 0.0])
    torch.testing.assert_close(out["uv"], expected.to(out["uv"].dtype), atol=1e-3, rtol=0)
    joints = out["pose"] * out["scale"][:, None, None] + out["root"][:, None, :]
    torch.testing.assert_close(project(joints, out["K"]), out["uv"], atol=2e-3, rtol=0)


def test_a_measured_turn_rotates_the_pose_and_rate_zero_keeps_the_crop(tmp_path) -> None:
    from crossmodal.data.augment import crop_error_table, similarity

    table = crop_error_table(_errors_file(tmp_path, [(0.0, 0.0, 1.0, 90.0)]), 1.4)
    batch = make_batch()
    out = augment_batch(batch, AugmentConfig(hue=0.0), torch.Generator().manual_seed(0), crop_errors=table)
    _, Rz = similarity(torch.ones(4), torch.zeros(4, 2), torch.full((4,), math.pi / 2), SIZE)
    torch.testing.assert_close(out["pose"], batch["pose"] @ Rz.transpose(1, 2).to(batch["pose"].dtype), atol=1e-5, rtol=0)
    kept = augment_batch(batch, AugmentConfig(hue=0.0, crop_error_rate=0.0), torch.Generator().manual_seed(0),
                         crop_errors=table)
    torch.testing.assert_close(kept["uv"], batch["uv"], atol=1e-4, rtol=0)
    torch.testing.assert_close(kept["pose"], batch["pose"], atol=1e-6, rtol=0)


def test_a_turn_beyond_max_turn_keeps_its_zoom_and_shift_unturned(tmp_path) -> None:
    from crossmodal.data.augment import crop_error_table

    rows = [(0.1, 0.0, 1.25, 170.0), (0.1, 0.0, 1.25, -170.0), (0.0, 0.1, 0.8, 30.0), (0.0, 0.1, 0.8, 90.0)]
    full = crop_error_table(_errors_file(tmp_path, rows), 1.4)
    capped = crop_error_table(_errors_file(tmp_path, rows), 1.4, max_turn=90.0)
    torch.testing.assert_close(capped[:, :3], full[:, :3])
    np.testing.assert_allclose(capped[:, 3].numpy(), np.radians([0.0, 0.0, 30.0, 90.0]), rtol=1e-6)
    np.testing.assert_allclose(full[:, 3].numpy(), np.radians([170.0, -170.0, 30.0, 90.0]), rtol=1e-6)


@pytest.mark.parametrize("content, expected", [("not json", "expected a JSON of experiments/finder_errors.py"),
                                               ('{"rows": []}', "expected finite rows with scale > 0, got 0 rows"),
                                               ('{"rows": [{"shift_x": 0}]}', "KeyError")])
def test_a_bad_crop_errors_file_is_a_one_line_error(tmp_path, content, expected) -> None:
    from crossmodal.data.augment import crop_error_table
    from crossmodal.errors import DataError

    path = tmp_path / "errors.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as info:
        crop_error_table(path, 1.4)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
