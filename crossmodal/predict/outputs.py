"""What predict writes for one image: joints.json (joints and every assumption), overlay.png,
skeleton.png and cloud.ply, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.data.joints import JOINT_NAMES
from crossmodal.errors import CrossmodalError
from crossmodal.predict.image import Prediction
from crossmodal.predict.model import InferenceModel


def prediction_record(pred: Prediction, model: InferenceModel, bone_mm: float | None, files: dict[str, str]) -> dict[str, Any]:
    """The content of joints.json: the joints by name and every assumption made to get them."""
    pre = model.preprocess
    units_note = (f"millimetres: normalised output x --bone-mm {bone_mm:g}" if bone_mm is not None
                  else "normalised: divided by the length of bone 12->11 (middle MCP -> PIP); pass --bone-mm for millimetres")
    record: dict[str, Any] = {
        "image": str(pred.image_path),
        "checkpoint": str(model.checkpoint),
        "strategy": str(model.config.model.strategy),
        "trained_on": str(model.config.data.dataset),
        "joint_order": "RHD: 0 wrist; thumb, index, middle, ring, little, each tip -> root",
        "units": pred.units,
        "units_note": units_note,
        "frame": ("original camera (x right, y down, z forward), root-relative: the model was trained with the "
                  "wrist (joint 0) at the origin; its predicted wrist is reported as predicted"),
        "joints": {name: _rounded(xyz) for name, xyz in zip(JOINT_NAMES, pred.joints)},
        "overlay": {
            "joints_2d": {name: _rounded(uv, 3) for name, uv in zip(JOINT_NAMES, pred.uv)},
            "root_translation": _rounded(pred.root),
            "method": ("root depth is not measured from one image: for the overlay the root was placed so "
                       f"that the projected joints fill the hand box ({pred.region.source})"),
        },
        "camera": {"K": [_rounded(row, 6) for row in pred.K], "intrinsics": pred.K_statement},
        "crop": {
            "hand_box_source": pred.region.source,
            **({"finder": pred.finder} if pred.finder is not None else {}),
            "hand_box": _rounded([*pred.region.box_lo, *pred.region.box_hi], 3),
            "crop_margin": float(pre.crop_margin),
            "crop_size": int(pre.crop_size),
            "view_correction": bool(pre.view_correction),
            "rotation_corrected_from_camera": [_rounded(row, 9) for row in pred.rotation],
            "note": ("the model's output lives in the view-corrected crop camera; it was rotated back with R^T"
                     if pre.view_correction else "no view correction: the crop camera has the image camera's axes"),
        },
        "hand": {
            "side": pred.hand.side,
            "side_source": pred.hand.side_source,
            "training_data": pred.hand.training_hands,
            "mirrored": pred.hand.mirror,
            "statement": pred.hand.statement,
            **({"side_by_fit": pred.side_fit} if pred.side_fit is not None else {}),
        },
        "notes": pred.notes,
        "files": files,
    }
    if pred.cloud is not None:
        record["cloud"] = {"file": files.get("cloud"), "points": int(len(pred.cloud)), "units": pred.units,
                           "frame": "as the joints", "colours": "depth (camera z), turbo colormap: near blue, far red"}
    else:
        record["cloud"] = None
    return record


def _rounded(values: Any, decimals: int = 6) -> list[float]:
    """Plain floats, rounded so that joints.json stays readable (6 decimals: well below a micrometre in mm)."""
    return [round(float(v), decimals) for v in values]


def write_cloud_ply(points: np.ndarray, path: str | Path) -> None:
    """The cloud as a binary PLY through Open3D, coloured by depth like the paper's Figure 3."""
    import open3d as o3d

    from crossmodal.io import atomic_path
    from crossmodal.report import depth_colours

    points = np.asarray(points, dtype=np.float64)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.colors = o3d.utility.Vector3dVector(depth_colours(points[:, 2]))
    with atomic_path(path, suffix=".ply") as tmp:  # Open3D picks the format from the suffix
        if not o3d.io.write_point_cloud(str(tmp), cloud):
            raise CrossmodalError(f"{path}: Open3D could not write the point cloud")


def plot_overlay(pred: Prediction, path: str | Path) -> None:
    """The image with the joints' 2D projection (one colour per finger), the hand box and the crop."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    height, width = pred.image.shape[:2]
    fig, ax = plt.subplots(figsize=(6.0, max(2.5, 6.0 * height / width)))
    ax.imshow(pred.image)
    outline = np.vstack([pred.crop_outline, pred.crop_outline[:1]])
    ax.plot(outline[:, 0], outline[:, 1], "--", color="white", linewidth=1, label="crop")
    lo, hi = pred.region.box_lo, pred.region.box_hi
    ax.plot([lo[0], hi[0], hi[0], lo[0], lo[0]], [lo[1], lo[1], hi[1], hi[1], lo[1]], ":", color="yellow",
            linewidth=1, label=f"hand box ({pred.region.source})")
    report.draw_skeleton(ax, pred.uv, None, "joints")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.axis("off")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"{pred.image_path.name}: 2D projection of the 3D joints\n"
                 f"root depth not measured: placed so the joints fill the hand box ({pred.region.source})", fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, path)


def plot_skeleton(pred: Prediction, path: str | Path) -> None:
    """The 3D joints (and the cloud, coloured by depth) in the camera frame, root-relative."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    panels = 2 if pred.cloud is not None else 1
    fig = plt.figure(figsize=(4.5 * panels, 4.5))
    ax = fig.add_subplot(1, panels, 1, projection="3d")
    report.draw_skeleton_3d(ax, pred.joints)
    report.set_equal_limits_3d(ax, pred.joints)
    ax.set_title(f"3D joints ({pred.units})", fontsize=9)
    _label_axes(ax, pred.units)
    if pred.cloud is not None:
        ax = fig.add_subplot(1, panels, 2, projection="3d")
        report.scatter_cloud_by_depth(ax, pred.cloud)
        report.draw_skeleton_3d(ax, pred.joints, colour="0.25", linewidth=1.0)
        report.set_equal_limits_3d(ax, pred.joints, pred.cloud)
        ax.set_title(f"decoded cloud ({len(pred.cloud)} points, by depth) + joints", fontsize=9)
        _label_axes(ax, pred.units)
    fig.suptitle(f"{pred.image_path.name}: camera frame, root-relative; {pred.hand.side or 'side not given'} hand"
                 f"{' (mirrored for the model)' if pred.hand.mirror else ''}", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def _label_axes(ax: Any, units: str) -> None:
    short = "mm" if units == "mm" else "bone units"
    ax.set_xlabel(f"x ({short})", fontsize=7)
    ax.set_ylabel(f"z, depth ({short})", fontsize=7)
    ax.set_zlabel(f"-y, up ({short})", fontsize=7)
    ax.tick_params(labelsize=6)


def write_prediction(pred: Prediction, model: InferenceModel, folder: str | Path, bone_mm: float | None) -> dict[str, str]:
    """joints.json, overlay.png, skeleton.png and (with a cloud) cloud.ply in ``folder``, each atomically."""
    from crossmodal.io import atomic_write_text

    folder = Path(folder)
    files = {"joints": "joints.json", "overlay": "overlay.png", "skeleton": "skeleton.png"}
    if pred.cloud is not None:
        files["cloud"] = "cloud.ply"
        write_cloud_ply(pred.cloud, folder / files["cloud"])
    plot_overlay(pred, folder / files["overlay"])
    plot_skeleton(pred, folder / files["skeleton"])
    record = prediction_record(pred, model, bone_mm, files)
    atomic_write_text(folder / files["joints"], json.dumps(record, indent=2) + "\n")
    return files
