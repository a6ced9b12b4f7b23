"""The evaluation protocol against hand-computed numbers (docs/design.md section 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossmodal.metrics import (
    PCK_THRESHOLDS_MM,
    KeypointMetrics,
    evaluate_keypoints,
    protocol_millimetres,
    protocol_visibility,
)

A_KEYPOINTS = (1, 2, 4, 6, 7, 8, 9, 10)  # error 10 mm in sample 0 only
B_KEYPOINTS = tuple(range(11, 20))  # error 30 mm in samples 0 and 2


def _hand_example() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 samples x 21 keypoints with chosen per-keypoint errors (mm).

    Per keypoint, the visible distances are:
      k0: [0, 0, 0];  A: [10, 0, 0];  k3: [10, -, 0] (invisible in sample 1, error 500);
      k5: [10, 40, 40];  B: [30, 0, 30];  k20: never visible (error 1000).
    Offsets are Pythagorean triples so that the Euclidean norm is exact.
    """
    rng = np.random.default_rng(0)
    gt = rng.integers(-80, 80, size=(3, 21, 3)).astype(np.float64)  # integers: exact sums
    offsets = np.zeros((3, 21, 3))
    ten, thirty, forty = (6.0, 8.0, 0.0), (18.0, 0.0, 24.0), (0.0, 24.0, 32.0)
    offsets[0, list(A_KEYPOINTS) + [3, 5]] = ten
    offsets[0, list(B_KEYPOINTS)] = thirty
    offsets[2, list(B_KEYPOINTS)] = thirty
    offsets[1:, 5] = forty
    offsets[1, 3] = (500.0, 0.0, 0.0)
    offsets[:, 20] = (0.0, 1000.0, 0.0)
    visible = np.ones((3, 21), dtype=bool)
    visible[1, 3] = False
    visible[:, 20] = False
    return gt + offsets, gt, visible


def test_hand_computed_epe() -> None:
    pred, gt, visible = _hand_example()
    result = evaluate_keypoints(pred, gt, visible)
    # 20 keypoints count (k20 never visible). Per-keypoint means: 0, 8 x 10/3, 5, 30, 9 x 20.
    assert result["epe_mean"] == pytest.approx((0 + 8 * 10 / 3 + 5 + 30 + 9 * 20) / 20)
    # Per-keypoint medians: 0, 8 x 0, 5, 40, 9 x 30.
    assert result["epe_median"] == pytest.approx((0 + 0 + 5 + 40 + 9 * 30) / 20)
    assert result["num_samples"] == 3
    per_kp = result["per_keypoint_epe_mean"]
    assert per_kp.shape == (21,)
    assert math.isnan(per_kp[20])
    assert per_kp[3] == pytest.approx(5.0)  # the invisible 500 mm error is ignored
    assert per_kp[5] == pytest.approx(30.0)


def test_hand_computed_pck_and_auc() -> None:
    pred, gt, visible = _hand_example()
    result = evaluate_keypoints(pred, gt, visible)
    # PCK below 10 mm: k0 1, A 2/3, k3 1/2, k5 0, B 1/3; [10, 30): k5 1/3, B 1/3, rest 1;
    # [30, 40): k5 1/3, rest 1; from 40 mm on: everything.
    below_10 = (1 + 8 * 2 / 3 + 0.5 + 0 + 9 / 3) / 20
    from_10 = (1 + 8 + 1 + 1 / 3 + 9 / 3) / 20
    from_30 = (1 + 8 + 1 + 1 / 3 + 9) / 20
    thresholds = [50 * i / 19 for i in range(20)]
    expected = [below_10 if t < 10 else from_10 if t < 30 else from_30 if t < 40 else 1.0 for t in thresholds]
    assert result["thresholds"] == pytest.approx(thresholds)
    assert result["pck"] == pytest.approx(expected)
    assert result["pck"][0] == pytest.approx(below_10)
    assert result["pck"][4] == pytest.approx(from_10)  # 10.53 mm
    assert result["pck"][12] == pytest.approx(from_30)  # 31.58 mm

    # Trapezoid rule by hand with step 50/19: h * (sum - (first + last)/2), / 50.
    step = 50 / 19
    area = step * (sum(expected) - 0.5 * (expected[0] + expected[-1]))
    assert result["auc_0_50"] == pytest.approx(area / 50)
    # 4 x below_10, 8 x from_10, 4 x from_30, 4 x 1 -> (sum - ends/2) / 19 steps.
    assert result["auc_0_50"] == pytest.approx(
        (4 * below_10 + 8 * from_10 + 4 * from_30 + 4 - 0.5 * (below_10 + 1)) / 19
    )
    # Published AUC 20-50: thresholds[8:] = 21.05 .. 50 mm, 11 steps.
    assert result["auc_20_50"] == pytest.approx((4 * from_10 + 4 * from_30 + 4 - 0.5 * (from_10 + 1)) / 11)
    # Exact grid 20, 22, .., 50: 5 x from_10 (20..28), 5 x from_30 (30..38), 6 x 1 (40..50), 15 steps.
    assert result["auc_20_50_exact"] == pytest.approx((5 * from_10 + 5 * from_30 + 6 - 0.5 * (from_10 + 1)) / 15)
    # Exact PCK at the table thresholds (30 mm counts an error of exactly 30 mm).
    assert result["pck_20mm"] == pytest.approx(from_10)
    assert result["pck_30mm"] == pytest.approx(from_30)
    assert result["pck_40mm"] == pytest.approx(1.0)


def test_auc_20_50_slice_starts_at_21_05_mm() -> None:
    assert PCK_THRESHOLDS_MM.shape == (20,)
    assert PCK_THRESHOLDS_MM[8] == pytest.approx(21.052631, abs=1e-6)
    assert PCK_THRESHOLDS_MM[7] < 20.0 < PCK_THRESHOLDS_MM[8]


def test_never_visible_keypoint_is_left_out_not_counted_as_zero() -> None:
    pred, gt, visible = _hand_example()
    with_k20 = evaluate_keypoints(pred, gt, visible)
    # Dropping k20 from the arrays altogether must give the same statistics.
    without_k20 = evaluate_keypoints(pred[:, :20], gt[:, :20], visible[:, :20])
    for key in ("epe_mean", "epe_median", "auc_0_50", "auc_20_50", "auc_20_50_exact"):
        assert with_k20[key] == pytest.approx(without_k20[key])
    assert with_k20["pck"] == pytest.approx(without_k20["pck"])


def test_torch_inputs_match_numpy() -> None:
    pred, gt, visible = _hand_example()
    from_numpy = evaluate_keypoints(pred, gt, visible)
    from_torch = evaluate_keypoints(
        torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), torch.from_numpy(visible)
    )
    assert from_torch["epe_mean"] == pytest.approx(from_numpy["epe_mean"], rel=1e-6)
    assert from_torch["pck"] == pytest.approx(from_numpy["pck"])


def test_bad_inputs_raise_one_line_value_errors() -> None:
    pred, gt, visible = _hand_example()
    with pytest.raises(ValueError, match=r"\(3, 21, 3\).*\(3, 20, 3\)") as info:
        evaluate_keypoints(pred, gt[:, :20], visible)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no visible keypoint"):
        evaluate_keypoints(pred, gt, np.zeros_like(visible))
    with pytest.raises(ValueError, match=r"\(2, 21, 3\).*\(3, 21, 3\)"):
        protocol_millimetres(pred[:2], gt, np.ones(3), palm_is_joint0=False)


def _crafted_normalised_pose() -> np.ndarray:
    """Root at 0, joint 12 at (0, 2, 0), joint 11 at (0, 3, 0) (bone 12->11 = 1), palm at (0, 1, 0)."""
    pose = np.arange(21 * 3, dtype=np.float64).reshape(21, 3) / 10.0
    pose[0] = 0.0
    pose[12] = (0.0, 2.0, 0.0)
    pose[11] = (0.0, 3.0, 0.0)
    return pose


def test_protocol_palm_replacement_scaling_and_root_relative() -> None:
    gt = _crafted_normalised_pose()[None]
    pred = gt.copy()
    pred[0, 0] = (0.0, 0.0, 2.0)  # predicted palm becomes 0.5 * ((0, 0, 2) + (0, 2, 0)) = (0, 1, 1)
    scale_m = np.array([0.02])  # 20 mm bone -> factor 20 from normalised units to mm
    pred_mm, gt_mm = protocol_millimetres(pred, gt, scale_m, palm_is_joint0=False)

    palm_gt = np.array([0.0, 1.0, 0.0])
    expected_gt = (gt[0] - palm_gt) * 20.0
    expected_gt[0] = 0.0
    np.testing.assert_allclose(gt_mm[0], expected_gt)
    np.testing.assert_allclose(gt_mm[0, 12], [0.0, 20.0, 0.0])
    palm_pred = np.array([0.0, 1.0, 1.0])  # 0.5 * ((0, 0, 2) + (0, 2, 0))
    expected_pred = (pred[0] - palm_pred) * 20.0
    expected_pred[0] = 0.0
    np.testing.assert_allclose(pred_mm[0], expected_pred)
    # Every non-palm joint is off by the palm shift: 20 mm along -z.
    np.testing.assert_allclose(pred_mm[0, 1:] - gt_mm[0, 1:], np.tile([0.0, 0.0, -20.0], (20, 1)), atol=1e-12)


def test_protocol_is_translation_invariant_and_handles_stb_palm() -> None:
    gt = _crafted_normalised_pose()[None]
    shifted = gt + np.array([1.0, -2.0, 0.5])
    pred_mm, gt_mm = protocol_millimetres(shifted, gt, np.array([0.03]), palm_is_joint0=False)
    np.testing.assert_allclose(pred_mm, gt_mm, atol=1e-12)
    # STB: joint 0 already is the palm, so it is kept and only scaling/root-relative apply.
    pred_mm, gt_mm = protocol_millimetres(shifted, gt, np.array([0.03]), palm_is_joint0=True)
    np.testing.assert_allclose(gt_mm[0], gt[0] * 30.0)
    np.testing.assert_allclose(pred_mm, gt_mm, atol=1e-12)


def test_protocol_numpy_and_torch_agree() -> None:
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(4, 21, 3))
    gt = rng.normal(size=(4, 21, 3))
    scale = rng.uniform(0.01, 0.03, size=4)
    for palm in (False, True):
        np_pred, np_gt = protocol_millimetres(pred, gt, scale, palm_is_joint0=palm)
        t_pred, t_gt = protocol_millimetres(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(scale), palm)
        assert isinstance(np_pred, np.ndarray) and isinstance(t_pred, torch.Tensor)
        np.testing.assert_allclose(t_pred.numpy(), np_pred)
        np.testing.assert_allclose(t_gt.numpy(), np_gt)
    # Inputs are not modified in place.
    np.testing.assert_array_equal(pred, np.random.default_rng(1).normal(size=(4, 21, 3)))


def test_protocol_visibility_palm_is_visible_if_wrist_or_joint12_is() -> None:
    visible = np.ones((3, 21), dtype=bool)
    visible[0, [0, 12]] = False
    visible[1, 0] = False
    visible[2, 12] = False
    out = protocol_visibility(visible, palm_is_joint0=False)
    assert out[:, 0].tolist() == [False, True, True]
    assert protocol_visibility(visible, palm_is_joint0=True)[:, 0].tolist() == [False, False, True]
    assert protocol_visibility(torch.from_numpy(visible), False)[:, 0].tolist() == [False, True, True]
    assert visible[1, 0] == False  # noqa: E712  (input untouched)


def test_keypoint_metrics_over_batches_equals_one_evaluation() -> None:
    rng = np.random.default_rng(2)
    n = 23
    gt = rng.normal(size=(n, 21, 3))
    pred = gt + rng.normal(scale=0.6, size=(n, 21, 3))
    scale = rng.uniform(0.015, 0.03, size=n)
    visible = rng.random((n, 21)) > 0.3
    visible[:, 7] = False  # a keypoint never visible

    metric = KeypointMetrics(palm_is_joint0=False)
    for start, stop in ((0, 5), (5, 16), (16, 23)):
        metric.update(
            torch.from_numpy(pred[start:stop]).float(),
            torch.from_numpy(gt[start:stop]).float(),
            torch.from_numpy(scale[start:stop]).float(),
            torch.from_numpy(visible[start:stop]),
        )
    computed = metric.compute()

    pred_mm, gt_mm = protocol_millimetres(pred, gt, scale, palm_is_joint0=False)
    expected = evaluate_keypoints(pred_mm, gt_mm, protocol_visibility(visible, palm_is_joint0=False))
    for key in ("epe_mean", "epe_median", "auc_0_50", "auc_20_50", "auc_20_50_exact", "pck_30mm"):
        assert isinstance(computed[key], torch.Tensor) and computed[key].ndim == 0
        assert computed[key].item() == pytest.approx(expected[key], rel=1e-5)
    np.testing.assert_allclose(computed["pck"].numpy(), expected["pck"], atol=1e-6)
    assert computed["num_samples"] == n
    assert math.isnan(computed["per_keypoint_epe_mean"][7].item())
    assert 5.0 < expected["epe_mean"] < 50.0  # a realistic range, not a degenerate case

    metric.reset()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="before any update"):
        metric.compute()
