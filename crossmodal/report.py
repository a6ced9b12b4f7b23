"""Human-readable results: a terminal table, metrics.json, the PCK plot and qualitative grids.

Every file is written through :func:`crossmodal.io.atomic_path`, so an
interrupted evaluation never leaves a truncated JSON or PNG under its final
name. Figures use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # must precede pyplot: evaluation runs headless (servers, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from crossmodal.data.joints import BONES  # noqa: E402
from crossmodal.io import atomic_path  # noqa: E402
from crossmodal.metrics import PCK_REPORT_MM, trapezoid_area  # noqa: E402

#: One colour per finger (thumb, index, middle, ring, little), as hand-pose figures usually draw them.
FINGER_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple")
#: Point clouds are coloured by depth (camera z) with this colormap: near blue, far red.
DEPTH_COLORMAP = "turbo"


def _to_plain(value: Any) -> Any:
    """numpy / torch values -> JSON-serialisable Python (floats, ints, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _scalar(metrics: Mapping[str, Any], key: str) -> float | None:
    if key not in metrics:
        return None
    return float(np.asarray(_to_plain(metrics[key]), dtype=np.float64))


def pck_at(metrics: Mapping[str, Any], threshold_mm: float) -> tuple[float, bool]:
    """PCK at ``threshold_mm``: the exact ``pck_<t>mm`` value when the metrics hold it.

    Otherwise linear interpolation of the 20-point curve (``pck`` over
    ``thresholds``). Returns ``(value, exact)``.
    """
    key = f"pck_{threshold_mm:g}mm"
    if key in metrics:
        return _scalar(metrics, key), True
    thresholds = np.asarray(_to_plain(metrics["thresholds"]), dtype=np.float64)
    pck = np.asarray(_to_plain(metrics["pck"]), dtype=np.float64)
    return float(np.interp(threshold_mm, thresholds, pck)), False


def format_results_table(metrics: Mapping[str, Any], title: str) -> str:
    """A rich-rendered table of the protocol's numbers, as plain text (no colour codes).

    Rows: EPE mean and median (mm), AUC 0-50, AUC 20-50 (the published one,
    over thresholds[8:] from 21.05 mm), AUC 20-50 exact, PCK at 20/30/40/50 mm
    and the number of samples. PCK values are exact at those thresholds when
    ``metrics`` holds ``pck_<t>mm`` (as :func:`crossmodal.metrics.evaluate_keypoints`
    returns); otherwise they are interpolated on the 20-point curve and the row
    says "interpolated".
    """
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("EPE mean (mm)", "epe_mean", "{:.2f}"),
        ("EPE median (mm)", "epe_median", "{:.2f}"),
        ("AUC 0-50 mm", "auc_0_50", "{:.4f}"),
        ("AUC 20-50 mm (published, from 21.05)", "auc_20_50", "{:.4f}"),
        ("AUC 20-50 mm (exact grid)", "auc_20_50_exact", "{:.4f}"),
    ]
    for label, key, fmt in rows:
        value = _scalar(metrics, key)
        if value is not None:
            table.add_row(label, fmt.format(value))
    if "pck" in metrics or any(f"pck_{t}mm" in metrics for t in PCK_REPORT_MM):
        for t in PCK_REPORT_MM:
            value, exact = pck_at(metrics, t)
            table.add_row(f"PCK @ {t} mm" + ("" if exact else " (interpolated)"), f"{value:.4f}")
    if "num_samples" in metrics:
        table.add_row("samples", str(int(_scalar(metrics, "num_samples"))))
    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None, force_terminal=False).print(table)
    return buffer.getvalue()


def write_metrics_json(metrics: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``metrics`` as indented JSON; tensors and arrays become floats / lists.

    NaN (a keypoint never visible in ``per_keypoint_epe_mean``) is written as
    JSON ``null`` so that strict parsers accept the file.
    """

    def nan_to_none(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, list):
            return [nan_to_none(v) for v in value]
        if isinstance(value, dict):
            return {k: nan_to_none(v) for k, v in value.items()}
        return value

    text = json.dumps(nan_to_none(_to_plain(metrics)), indent=2, sort_keys=True, allow_nan=False)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Save atomically and close; the format comes from the final name, not the temp name."""
    final_suffix = os.path.splitext(os.fspath(path))[1] or ".png"
    try:
        with atomic_path(path, suffix=final_suffix) as tmp:
            fig.savefig(tmp, format=final_suffix.lstrip(".").lower(), dpi=100)
    finally:
        plt.close(fig)


def plot_pck(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "3D PCK",
) -> None:
    """One PCK curve per label (x: threshold in mm, y: PCK); the legend gives each AUC.

    The AUC shown is the trapezoid area normalised over each curve's own
    threshold range (so "AUC 0-50" for the protocol's curve).
    """
    if not curves:
        raise ValueError(f"plot_pck: no curves given for {os.fspath(path)}")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (thresholds, pck) in curves.items():
        x = np.asarray(_to_plain(thresholds), dtype=np.float64)
        y = np.asarray(_to_plain(pck), dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or x.size < 2:
            raise ValueError(
                f"plot_pck: curve {label!r} has thresholds {x.shape} and pck {y.shape}; expected equal (T>=2,)"
            )
        auc = trapezoid_area(y, x) / (x[-1] - x[0])
        ax.plot(x, y, marker="o", markersize=3, label=f"{label} (AUC {x[0]:g}-{x[-1]:g} = {auc:.3f})")
    ax.set_xlabel("threshold (mm)")
    ax.set_ylabel("PCK")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_validation_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: str | os.PathLike,
    title: str = "validation EPE",
) -> None:
    """Validation EPE at each validation, one line per label (the mean over its runs, each run thin
    behind it): whether a row had stopped improving is read off its last points."""
    if not curves:
        raise ValueError(f"plot_validation_curves: no curves given for {os.fspath(path)}")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (label, runs) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        length = min(len(r) for r in runs)
        for r in runs:
            ax.plot(np.arange(1, len(r) + 1), r, color=colour, alpha=0.25, linewidth=0.8)
        mean = np.mean([np.asarray(r[:length], dtype=np.float64) for r in runs], axis=0)
        ax.plot(np.arange(1, length + 1), mean, color=colour, marker="o", markersize=3, label=label)
    ax.set_xlabel("validation")
    ax.set_ylabel("validation EPE (mm)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def project_points(xyz: Any, K: Any) -> np.ndarray:
    """(N, J, 3) camera-frame points (metres) and (N, 3, 3) or (3, 3) K -> (N, J, 2) pixels.

    A batched version of :func:`crossmodal.data.geometry.project`, whose
    ``xyz @ K.T`` handles one shared K only.
    """
    xyz = np.asarray(_to_plain(xyz), dtype=np.float64)
    K = np.asarray(_to_plain(K), dtype=np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (xyz.shape[0], 3, 3))
    if xyz.ndim != 3 or xyz.shape[-1] != 3 or K.shape != (xyz.shape[0], 3, 3):
        raise ValueError(f"project_points: xyz {xyz.shape} and K {K.shape}; expected (N, J, 3) and (N, 3, 3)")
    homogeneous = np.einsum("nij,nkj->nki", K, xyz)
    return homogeneous[..., :2] / homogeneous[..., 2:3]


def _images_hwc(images: Any) -> np.ndarray:
    """Images as (N, S, S, 3) floats in [0, 1]; accepts uint8, floats, or channel-first tensors."""
    array = np.asarray(images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images)
    if array.ndim == 4 and array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"plot_qualitative: images have shape {array.shape}; expected (N, S, S, 3)")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def draw_skeleton(ax: plt.Axes, uv: np.ndarray, colour: str | None, label: str) -> None:
    """A 2D skeleton (21, 2) on an image axis, in one colour, or one per finger when ``colour`` is None."""
    for parent, child in BONES:
        c = colour or FINGER_COLOURS[(child - 1) // 4]
        ax.plot(uv[[parent, child], 0], uv[[parent, child], 1], color=c, linewidth=1.5)
    if colour is None:
        ax.scatter(uv[:, 0], uv[:, 1], s=8, color="white", edgecolors="black", linewidths=0.5, label=label, zorder=3)
    else:
        ax.scatter(uv[:, 0], uv[:, 1], s=8, color=colour, label=label, zorder=3)


def _cloud_axis(fig: plt.Figure, position: int, rows: int, cols: int, cloud: np.ndarray, colour: str,
                title: str, limits: tuple[np.ndarray, np.ndarray]) -> None:
    ax = fig.add_subplot(rows, cols, position, projection="3d")
    # Camera frame has y down and z away; plotting (x, z, -y) shows the hand upright.
    ax.scatter(cloud[:, 0], cloud[:, 2], -cloud[:, 1], s=2, color=colour, depthshade=False)
    low, high = limits
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[2], high[2])
    ax.set_zlim(-high[1], -low[1])
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])


def plot_qualitative(
    images: Any,
    gt_uv: Any,
    pred_uv: Any,
    gt_cloud: Any | None,
    pred_cloud: Any | None,
    path: str | os.PathLike,
) -> None:
    """A grid with one row per sample: the RGB crop; the crop with ground-truth
    (green) and predicted (red) skeletons; and, for each cloud given, a 3D scatter
    (ground-truth cloud in blue, decoded cloud in orange, on shared axes).

    ``images`` (N, S, S, 3) uint8 or floats in [0, 1] (channel-first is accepted
    too); ``gt_uv``, ``pred_uv`` (N, 21, 2) crop pixels; clouds (N, P, 3) or None.
    """
    rgb = _images_hwc(images)
    gt_uv = np.asarray(_to_plain(gt_uv), dtype=np.float64)
    pred_uv = np.asarray(_to_plain(pred_uv), dtype=np.float64)
    n = rgb.shape[0]
    for name, uv in (("gt_uv", gt_uv), ("pred_uv", pred_uv)):
        if uv.shape != (n, 21, 2):
            raise ValueError(f"plot_qualitative: {name} has shape {uv.shape}; expected ({n}, 21, 2)")
    clouds = []
    for name, cloud, colour, title in (
        ("gt_cloud", gt_cloud, "tab:blue", "ground-truth cloud"),
        ("pred_cloud", pred_cloud, "tab:orange", "decoded cloud"),
    ):
        if cloud is None:
            continue
        cloud = np.asarray(_to_plain(cloud), dtype=np.float64)
        if cloud.ndim != 3 or cloud.shape[0] != n or cloud.shape[-1] != 3:
            raise ValueError(f"plot_qualitative: {name} has shape {cloud.shape}; expected ({n}, P, 3)")
        clouds.append((cloud, colour, title))

    cols = 2 + len(clouds)
    fig = plt.figure(figsize=(3.0 * cols, 3.0 * n))
    size = rgb.shape[1]
    for i in range(n):
        ax = fig.add_subplot(n, cols, i * cols + 1)
        ax.imshow(rgb[i])
        ax.set_title("RGB crop", fontsize=9)
        ax.axis("off")

        ax = fig.add_subplot(n, cols, i * cols + 2)
        ax.imshow(rgb[i])
        draw_skeleton(ax, gt_uv[i], "lime", "ground truth")
        draw_skeleton(ax, pred_uv[i], "red", "prediction")
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
        ax.set_title("GT (green) vs predicted (red)", fontsize=9)
        ax.axis("off")

        if clouds:
            stacked = np.concatenate([cloud[i] for cloud, _, _ in clouds])
            centre = 0.5 * (stacked.min(axis=0) + stacked.max(axis=0))
            half = 0.5 * float(np.max(stacked.max(axis=0) - stacked.min(axis=0))) or 1.0
            limits = (centre - half, centre + half)  # equal extents: no distortion between axes
            for c, (cloud, colour, title) in enumerate(clouds):
                _cloud_axis(fig, i * cols + 3 + c, n, cols, cloud[i], colour, title, limits)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------- 3D helpers (predict, figures)

def _display(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera frame (y down, z away) -> plot axes (x, z, -y): the hand stands upright, depth recedes."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz[..., 0], xyz[..., 2], -xyz[..., 1]


def draw_skeleton_3d(ax: Any, xyz: Any, colour: str | None = None, linewidth: float = 2.0) -> None:
    """Camera-frame joints (21, 3) on a 3D axis; one colour per finger unless ``colour`` is given."""
    x, y, z = _display(_to_plain(xyz))
    for parent, child in BONES:
        c = colour or FINGER_COLOURS[(child - 1) // 4]
        ax.plot(x[[parent, child]], y[[parent, child]], z[[parent, child]], color=c, linewidth=linewidth)
    ax.scatter(x, y, z, s=3 * linewidth, color=colour or "black", depthshade=False)


def depth_colours(depth: Any) -> np.ndarray:
    """(N,) depths -> (N, 3) RGB in [0, 1] on :data:`DEPTH_COLORMAP`, stretched to the values' range."""
    depth = np.asarray(_to_plain(depth), dtype=np.float64)
    span = float(depth.max() - depth.min()) if depth.size else 0.0
    t = (depth - depth.min()) / span if span > 0 else np.full_like(depth, 0.5)
    return np.asarray(matplotlib.colormaps[DEPTH_COLORMAP](t))[..., :3]


def scatter_cloud_by_depth(ax: Any, cloud: Any, size: float = 3.0) -> None:
    """Camera-frame points (P, 3) on a 3D axis, coloured by depth like the paper's Figure 3."""
    cloud = np.asarray(_to_plain(cloud), dtype=np.float64)
    x, y, z = _display(cloud)
    ax.scatter(x, y, z, s=size, c=depth_colours(cloud[:, 2]), depthshade=False)


def set_equal_limits_3d(ax: Any, *point_sets: Any) -> None:
    """Equal extents on the three axes around all the given camera-frame points (no distortion)."""
    points = np.concatenate([np.asarray(_to_plain(p), dtype=np.float64).reshape(-1, 3) for p in point_sets])
    shown = np.stack(_display(points), axis=-1)
    centre = 0.5 * (shown.min(axis=0) + shown.max(axis=0))
    half = 0.5 * float(np.max(shown.max(axis=0) - shown.min(axis=0))) or 1.0
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
