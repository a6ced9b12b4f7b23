"""The 3D keypoint evaluation protocol of Zimmermann & Brox (ICCV 2017).

Spurr et al. (CVPR 2018) and Yang et al. (ICCV 2019) report their numbers with
this protocol, so reproducing their tables needs it exactly (docs/design.md section 4):

1. :func:`protocol_millimetres` turns normalised, root-relative poses into
   millimetres relative to the palm centre (keypoint 0 replaced by
   ``0.5 * (wrist + joint 12)``, scaled by the ground-truth bone 12 -> 11);
   :func:`protocol_visibility` marks the palm visible when the wrist or joint
   12 is, as the reference's data reader does.
2. :func:`evaluate_keypoints` computes the statistics per keypoint over the
   samples where it is visible, then averages over keypoints (the reference's
   ``EvalUtil``).

:class:`KeypointMetrics` wraps both as a ``torchmetrics.Metric`` that works
under DDP.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from crossmodal.data.joints import NUM_JOINTS

#: PCK thresholds of the protocol, in millimetres: 0, 2.63, ..., 50.
PCK_THRESHOLDS_MM: np.ndarray = np.linspace(0.0, 50.0, 20)

#: Index of the first threshold of the published "AUC 20-50": 21.05 mm, not 20.
AUC_20_50_START = 8

#: The exact 20..50 mm grid (2 mm steps) behind ``auc_20_50_exact``.
EXACT_20_50_THRESHOLDS_MM: np.ndarray = np.linspace(20.0, 50.0, 16)

#: Thresholds at which the exact PCK is reported as ``pck_<t>mm`` scalars.
PCK_REPORT_MM: tuple[int, ...] = (20, 30, 40, 50)

#: Keys of :class:`KeypointMetrics`' ``compute()`` holding 0-dim tensors.
SCALAR_KEYS: tuple[str, ...] = (
    "epe_mean",
    "epe_median",
    "auc_0_50",
    "auc_20_50",
    "auc_20_50_exact",
) + tuple(f"pck_{t}mm" for t in PCK_REPORT_MM)

PALM_JOINT = 12  # the palm centre is the midpoint of the wrist and the middle-finger MCP

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)


def _check_poses(pred: Any, gt: Any) -> None:
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(gt.shape)}; "
            f"expected both (N, {NUM_JOINTS}, 3)"
        )
    if pred.ndim != 3 or pred.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"poses have shape {tuple(pred.shape)}; expected (N, {NUM_JOINTS}, 3)")


def protocol_millimetres(
    pred_norm: ArrayLike, gt_norm: ArrayLike, scale_m: ArrayLike, palm_is_joint0: bool
) -> tuple[ArrayLike, ArrayLike]:
    """Apply the protocol's geometry: normalised poses -> palm-relative millimetres.

    ``pred_norm`` and ``gt_norm`` are (N, 21, 3) root-relative, scale-normalised
    poses, ``(xyz - xyz[0]) / ||xyz[12] - xyz[11]||``; ``scale_m`` (N,) is the
    ground-truth bone length 12 -> 11 in metres, used for both poses (the
    prediction's own scale is unknown at test time). Steps:

    - keypoint 0 is replaced by the palm centre ``0.5 * (joint0 + joint12)`` in
      both poses, unless ``palm_is_joint0`` (STB, whose joint 0 is the palm);
    - both are multiplied by ``scale_m * 1000`` (metres -> millimetres);
    - both are made relative to keypoint 0 (the palm), so the comparison is
      root-relative and keypoint 0 itself has zero error.

    numpy in -> numpy float64 out; torch in -> torch float64 out (same device).
    """
    _check_poses(pred_norm, gt_norm)
    n = pred_norm.shape[0]
    if tuple(scale_m.shape) not in ((n,), (n, 1)):
        raise ValueError(
            f"scale_m has shape {tuple(scale_m.shape)}; expected ({n},) for poses {tuple(pred_norm.shape)}"
        )

    if isinstance(pred_norm, torch.Tensor):
        pred = pred_norm.detach().to(torch.float64)
        gt = torch.as_tensor(gt_norm).detach().to(device=pred.device, dtype=torch.float64)
        scale = torch.as_tensor(scale_m).detach().to(device=pred.device, dtype=torch.float64)
    else:
        pred = np.asarray(pred_norm, dtype=np.float64)
        gt = np.asarray(gt_norm, dtype=np.float64)
        scale = np.asarray(scale_m, dtype=np.float64)
    scale_mm = scale.reshape(n, 1, 1) * 1000.0

    def to_palm_mm(pose):
        pose = pose.clone() if isinstance(pose, torch.Tensor) else pose.copy()
        if not palm_is_joint0:
            pose[:, 0] = 0.5 * (pose[:, 0] + pose[:, PALM_JOINT])
        pose = pose * scale_mm
        return pose - pose[:, :1]

    return to_palm_mm(pred), to_palm_mm(gt)


def protocol_visibility(visible: ArrayLike, palm_is_joint0: bool) -> ArrayLike:
    """(N, 21) visibility after the palm replacement: palm visible if wrist or joint 12 is.

    This follows the reference data reader, which ORs the two flags when it
    swaps the wrist for the palm centre. With ``palm_is_joint0`` it is unchanged.
    """
    if isinstance(visible, torch.Tensor):
        vis = visible.to(torch.bool).clone()
    else:
        vis = np.asarray(visible).astype(bool)  # astype copies
    if not palm_is_joint0:
        vis[:, 0] = vis[:, 0] | vis[:, PALM_JOINT]
    return vis


def _to_numpy(x: Any, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.to(torch.float64) if dtype is np.float64 else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _pck_per_keypoint(distances: list[np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """(K, T): for each keypoint with data, the fraction of its distances <= each threshold."""
    return np.stack([(d[:, None] <= thresholds[None, :]).mean(axis=0) for d in distances])


def trapezoid_area(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid rule (``np.trapz`` was renamed across numpy versions; this is both)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _normalised_auc(pck: np.ndarray, thresholds: np.ndarray) -> float:
    """Trapezoid area under ``pck`` divided by the area under 1 over the same thresholds."""
    return trapezoid_area(pck, thresholds) / trapezoid_area(np.ones_like(thresholds), thresholds)


def statistics_from_distances(distances_mm: Any, visible: Any) -> dict[str, Any]:
    """The protocol's statistics from (N, 21) keypoint distances in mm and (N, 21) visibility.

    See :func:`evaluate_keypoints` for the returned keys; this is its second
    half, shared with :class:`KeypointMetrics`, which stores distances only.
    """
    dist = _to_numpy(distances_mm, np.float64)
    vis = _to_numpy(visible, bool)
    if dist.shape != vis.shape or dist.ndim != 2:
        raise ValueError(f"distances shape {dist.shape} and visibility shape {vis.shape} must be equal (N, K)")
    num_keypoints = dist.shape[1]
    per_keypoint = [dist[vis[:, k], k] for k in range(num_keypoints)]
    present = [k for k in range(num_keypoints) if per_keypoint[k].size > 0]
    if not present:
        raise ValueError(f"no visible keypoint in {dist.shape[0]} samples; nothing to evaluate")
    kept = [per_keypoint[k] for k in present]

    per_keypoint_mean = np.full(num_keypoints, np.nan)
    per_keypoint_mean[present] = [d.mean() for d in kept]
    pck_per_keypoint = _pck_per_keypoint(kept, PCK_THRESHOLDS_MM)
    pck = pck_per_keypoint.mean(axis=0)
    exact_pck = _pck_per_keypoint(kept, EXACT_20_50_THRESHOLDS_MM).mean(axis=0)
    start = AUC_20_50_START

    result: dict[str, Any] = {
        "epe_mean": float(np.mean([d.mean() for d in kept])),
        "epe_median": float(np.mean([np.median(d) for d in kept])),
        "auc_0_50": _normalised_auc(pck, PCK_THRESHOLDS_MM),
        "auc_20_50": _normalised_auc(pck[start:], PCK_THRESHOLDS_MM[start:]),
        "auc_20_50_exact": _normalised_auc(exact_pck, EXACT_20_50_THRESHOLDS_MM),
        "pck": pck,
        "thresholds": PCK_THRESHOLDS_MM.tolist(),
        "per_keypoint_epe_mean": per_keypoint_mean,
        "num_samples": int(dist.shape[0]),
    }
    report = np.asarray(PCK_REPORT_MM, dtype=np.float64)
    for t, value in zip(PCK_REPORT_MM, _pck_per_keypoint(kept, report).mean(axis=0)):
        result[f"pck_{t}mm"] = float(value)
    return result


def evaluate_keypoints(pred_mm: Any, gt_mm: Any, visible: Any) -> dict[str, Any]:
    """Zimmermann & Brox's evaluation (their ``EvalUtil``) of (N, 21, 3) poses in mm.

    For each keypoint, the Euclidean distances over the samples where that
    keypoint is visible ((N, 21) ``visible``); keypoints never visible are left
    out of every average, as in the reference. numpy or torch inputs, computed
    in float64. Returns:

    - ``epe_mean``: mean over keypoints of the per-keypoint mean distance (mm);
    - ``epe_median``: mean over keypoints of the per-keypoint median (mm);
    - ``pck`` (20,): mean over keypoints of the per-keypoint fraction of visible
      samples with distance <= each of ``thresholds`` (``linspace(0, 50, 20)`` mm);
    - ``auc_0_50``: trapezoid area under ``pck`` over all 20 thresholds / 50;
    - ``auc_20_50``: the same over ``thresholds[8:]``, which starts at 21.05 mm,
      not 20 mm: that is how the published "AUC 20-50" numbers were computed,
      normalised by the area under 1 over that range (50 - 21.05);
    - ``auc_20_50_exact``: PCK recomputed on the exact grid ``linspace(20, 50, 16)``,
      area / 30;
    - ``pck_20mm``, ``pck_30mm``, ``pck_40mm``, ``pck_50mm``: PCK computed
      exactly at these thresholds (not read off the 20-point curve);
    - ``thresholds`` (list of 20), ``per_keypoint_epe_mean`` (21,) with NaN for
      keypoints never visible, ``num_samples``.

    Raises ValueError (one line) if shapes disagree or no keypoint is visible.
    """
    if tuple(pred_mm.shape) != tuple(gt_mm.shape):
        raise ValueError(
            f"prediction shape {tuple(pred_mm.shape)} != ground-truth shape {tuple(gt_mm.shape)}"
        )
    if len(pred_mm.shape) != 3 or pred_mm.shape[-1] != 3:
        raise ValueError(f"poses have shape {tuple(pred_mm.shape)}; expected (N, K, 3)")
    if tuple(visible.shape) != tuple(pred_mm.shape[:2]):
        raise ValueError(
            f"visibility shape {tuple(visible.shape)} does not match poses {tuple(pred_mm.shape)}; "
            f"expected {tuple(pred_mm.shape[:2])}"
        )
    pred = _to_numpy(pred_mm, np.float64)
    gt = _to_numpy(gt_mm, np.float64)
    return statistics_from_distances(np.linalg.norm(pred - gt, axis=-1), visible)


class KeypointMetrics(Metric):
    """Accumulates the protocol over batches; ``compute()`` is :func:`evaluate_keypoints`.

    ``update(pred_norm, gt_norm, scale_m, visible)`` takes normalised (B, 21, 3)
    poses, the ground-truth bone length (B,) in metres and (B, 21) visibility,
    applies :func:`protocol_millimetres` and :func:`protocol_visibility`, and
    stores the per-keypoint distances (states concatenated across processes, so
    it is exact under DDP). ``compute()`` returns evaluate_keypoints' dict where
    the keys in :data:`SCALAR_KEYS` (``epe_mean``, ``epe_median``, ``auc_0_50``,
    ``auc_20_50``, ``auc_20_50_exact``, ``pck_20mm`` .. ``pck_50mm``) are 0-dim
    float64 tensors (ready for ``self.log_dict``), ``pck``, ``thresholds`` and
    ``per_keypoint_epe_mean`` are 1-d float64 tensors and ``num_samples`` an int.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, palm_is_joint0: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.palm_is_joint0 = palm_is_joint0
        self.add_state("distances", default=[], dist_reduce_fx="cat")
        self.add_state("visible", default=[], dist_reduce_fx="cat")

    def update(
        self, pred_norm: torch.Tensor, gt_norm: torch.Tensor, scale_m: torch.Tensor, visible: torch.Tensor
    ) -> None:
        """Add a batch: normalised poses (B, 21, 3), GT scale (B,) metres, visibility (B, 21)."""
        pred_mm, gt_mm = protocol_millimetres(pred_norm, gt_norm, scale_m, self.palm_is_joint0)
        if tuple(visible.shape) != tuple(pred_mm.shape[:2]):
            raise ValueError(
                f"visibility shape {tuple(visible.shape)} does not match poses {tuple(pred_mm.shape)}"
            )
        self.distances.append(torch.linalg.vector_norm(pred_mm - gt_mm, dim=-1))
        # uint8, not bool: every torch.distributed backend can all-gather it.
        self.visible.append(protocol_visibility(visible, self.palm_is_joint0).to(pred_mm.device, torch.uint8))

    def compute(self) -> dict[str, Any]:
        """The protocol's statistics over every sample seen since the last reset."""
        if isinstance(self.distances, list) and len(self.distances) == 0:
            raise ValueError("KeypointMetrics.compute() called before any update()")
        result = statistics_from_distances(dim_zero_cat(self.distances), dim_zero_cat(self.visible))
        device = self.device
        out: dict[str, Any] = {}
        for key, value in result.items():
            if key == "num_samples":
                out[key] = value
            else:
                out[key] = torch.as_tensor(np.asarray(value, dtype=np.float64), device=device)
        return out
