"""The paper's qualitative figures from a checkpoint and its test split.

    python -m crossmodal figures --ckpt PATH [--out DIR] [--samples N] [--pair A,B] [--steps K] [--seed S]
                                 [key=value ...]

* ``figure3.png`` (Yang et al., Fig. 3): for N test samples, the RGB crop, the ground-truth
  and the estimated 3D pose, the ground-truth and the reconstructed point cloud (decoded
  from the RGB crop alone), clouds coloured by depth.
* ``figure4.png`` (Fig. 4): z of two test images (the means of q(z|x)), linearly
  interpolated in K steps, each decoded to a pose and a cloud.
* ``generation_prior.png``: cross-modal generation, z drawn from the prior N(0, I) and
  decoded by every decoder side by side (pose, heatmaps, cloud).
* ``generation_from_<modality>.png``: the same from the encoding of another modality
  (z = mu of q(z|cloud), or q(z|pose) when the model has a pose encoder), next to that input;
  only for a modality whose own posterior the strategy trains (``posterior_keys``: S4's cloud,
  not S3's, whose cloud encoder only feeds the joint encoder).

Poses and clouds are drawn in the crop camera, root-relative and normalised (bone 12->11 = 1),
as the model predicts them. The test split is the checkpoint's own data config, with
``key=value`` overrides (e.g. ``data.root=...``); its cache is built if missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crossmodal.errors import ConfigError
from crossmodal.predict import InferenceModel, load_model

NORMALISED = "normalised units"


def load_samples(model: InferenceModel, count: int, overrides: Sequence[str] = (), split: str = "test",
                 asked_by: str = "--samples / --pair") -> dict[str, np.ndarray]:
    """The first ``count`` samples of the checkpoint's ``split`` ("test" or "val") as numpy arrays
    (image uint8 NHWC; scale: the bone length 12->11 in metres)."""
    import torch

    from crossmodal.config import with_overrides
    from crossmodal.data.datamodule import build_datamodule

    if split not in ("test", "val"):
        raise ConfigError(f"split: expected 'test' or 'val', got {split!r}")
    cfg = with_overrides(model.config.copy(), list(overrides))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "validate")
    dataset = datamodule.datasets[split]
    if count > len(dataset):
        raise ConfigError(f"the {split} split has {len(dataset)} samples; {count} were asked for ({asked_by})")
    items = [dataset[i] for i in range(count)]
    keys = ("image", "pose", "cloud", "has_cloud", "scale")
    batch = {key: torch.stack([item[key] for item in items]).numpy() for key in keys}
    batch["image"] = np.round(batch["image"].transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
    return batch


def _axis_3d(fig: Any, rows: int, cols: int, index: int, title: str) -> Any:
    ax = fig.add_subplot(rows, cols, index, projection="3d")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    return ax


def _pose_panel(fig: Any, rows: int, cols: int, index: int, pose: np.ndarray, title: str, limits: Sequence[np.ndarray]) -> None:
    from crossmodal import report

    ax = _axis_3d(fig, rows, cols, index, title)
    report.draw_skeleton_3d(ax, pose)
    report.set_equal_limits_3d(ax, *limits)


def _cloud_panel(fig: Any, rows: int, cols: int, index: int, cloud: np.ndarray, title: str, limits: Sequence[np.ndarray]) -> None:
    from crossmodal import report

    ax = _axis_3d(fig, rows, cols, index, title)
    report.scatter_cloud_by_depth(ax, cloud)
    report.set_equal_limits_3d(ax, *limits)


def _image_panel(fig: Any, rows: int, cols: int, index: int, image: np.ndarray, title: str, cmap: str | None = None) -> None:
    ax = fig.add_subplot(rows, cols, index)
    ax.imshow(image, cmap=cmap)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_figure3(samples: dict[str, np.ndarray], predicted: dict[str, np.ndarray], path: str | Path, title: str) -> None:
    """Rows of: RGB, ground-truth pose, estimated pose, ground-truth cloud, reconstructed cloud."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    n = len(samples["image"])
    has_cloud = "cloud" in predicted
    cols = 5 if has_cloud else 4
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * n))
    for i in range(n):
        base = i * cols
        _image_panel(fig, n, cols, base + 1, samples["image"][i], "RGB crop")
        poses = (samples["pose"][i], predicted["pose"][i])
        _pose_panel(fig, n, cols, base + 2, poses[0], "ground-truth pose", poses)
        _pose_panel(fig, n, cols, base + 3, poses[1], "estimated pose (RGB only)", poses)
        clouds = [samples["cloud"][i]] + ([predicted["cloud"][i]] if has_cloud else [])
        gt_title = "ground-truth cloud" if samples["has_cloud"][i] else "ground-truth cloud (none: empty depth)"
        _cloud_panel(fig, n, cols, base + 4, clouds[0], gt_title, clouds)
        if has_cloud:
            _cloud_panel(fig, n, cols, base + 5, clouds[1], "reconstructed cloud (RGB only)", clouds)
    fig.suptitle(title + ("" if has_cloud else " — no cloud decoder: no reconstructed cloud"), fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def interpolate_latents(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` codes on the segment from z_a to z_b (both ends included) and their t values."""
    t = np.linspace(0.0, 1.0, steps)
    return (1.0 - t)[:, None] * z_a[None] + t[:, None] * z_b[None], t


def plot_figure4(images: tuple[np.ndarray, np.ndarray], decoded: dict[str, np.ndarray], t: np.ndarray,
                 path: str | Path, title: str) -> None:
    """Top row: the two test crops at the ends; then the decoded pose (and cloud) at every step."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    steps = len(t)
    rows = 3 if "cloud" in decoded else 2
    fig = plt.figure(figsize=(2.2 * steps, 2.3 * rows))
    _image_panel(fig, rows, steps, 1, images[0], "image A (t = 0)")
    _image_panel(fig, rows, steps, steps, images[1], "image B (t = 1)")
    for k in range(steps):
        _pose_panel(fig, rows, steps, steps + k + 1, decoded["pose"][k], f"pose, t = {t[k]:.2f}", list(decoded["pose"]))
        if "cloud" in decoded:
            _cloud_panel(fig, rows, steps, 2 * steps + k + 1, decoded["cloud"][k], f"cloud, t = {t[k]:.2f}",
                         [decoded["cloud"][k]])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def plot_generation(decoded: dict[str, np.ndarray], path: str | Path, title: str,
                    source: tuple[str, np.ndarray] | None = None) -> None:
    """One row per latent code: the source input (if any), then every decoder's output side by side."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    order = [key for key in ("pose", "heatmaps", "cloud") if key in decoded]
    cols = len(order) + (source is not None)
    n = len(decoded["pose"])
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * n))
    for i in range(n):
        col = i * cols + 1
        if source is not None:
            name, values = source
            draw = _pose_panel if name == "pose" else _cloud_panel
            draw(fig, n, cols, col, values[i], f"input {name}", [values[i]])
            col += 1
        for key in order:
            if key == "pose":
                _pose_panel(fig, n, cols, col, decoded["pose"][i], "decoded pose", [decoded["pose"][i]])
            elif key == "cloud":
                _cloud_panel(fig, n, cols, col, decoded["cloud"][i], "decoded cloud", [decoded["cloud"][i]])
            else:
                _image_panel(fig, n, cols, col, decoded["heatmaps"][i].max(axis=0), "decoded heatmaps (max)", "magma")
            col += 1
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def encode(model: InferenceModel, key: str, values: np.ndarray) -> np.ndarray:
    """mu of q(z | values) from the encoder of modality ``key`` ("cloud" or "pose")."""
    import torch

    with torch.no_grad():
        return model.strategy.encoders[key](torch.as_tensor(values, dtype=torch.float32)).mu.numpy()


def default_out(ckpt: str | Path) -> Path:
    """``runs/<name>/figures`` for ``runs/<name>/checkpoints/x.ckpt``, else ``figures/`` beside the file."""
    ckpt = Path(ckpt).resolve()
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "figures"


def render_figures(
    ckpt: str | Path,
    out: str | Path | None = None,
    samples: int = 4,
    pair: tuple[int, int] = (0, 1),
    steps: int = 7,
    seed: int = 0,
    overrides: Sequence[str] = (),
) -> list[Path]:
    """``python -m crossmodal figures``: Figure 3, Figure 4 and the generation figures; returns their paths."""
    if samples < 1 or steps < 2:
        raise ConfigError(f"--samples must be >= 1 and --steps >= 2, got {samples} and {steps}")
    if min(pair) < 0 or pair[0] == pair[1]:
        raise ConfigError(f"--pair needs two different test indices >= 0, got {pair[0]},{pair[1]}")
    model = load_model(ckpt)
    out = Path(out) if out else default_out(ckpt)
    data = load_samples(model, max(samples, max(pair) + 1), overrides)
    predicted = model.predict(data["image"])
    strategy = model.config.model.strategy
    written = []

    shown = {key: value[:samples] for key, value in data.items()}
    plot_figure3(shown, {k: v[:samples] for k, v in predicted.items()}, out / "figure3.png",
                 f"{strategy}: test samples, RGB-only inference ({NORMALISED}, crop camera)")
    written.append(out / "figure3.png")

    codes, t = interpolate_latents(predicted["z"][pair[0]], predicted["z"][pair[1]], steps)
    plot_figure4((data["image"][pair[0]], data["image"][pair[1]]), model.decode(codes), t, out / "figure4.png",
                 f"{strategy}: linear interpolation between the latent codes of test images {pair[0]} and {pair[1]}")
    written.append(out / "figure4.png")

    prior = np.random.default_rng(seed).standard_normal((samples, model.strategy.latent_dim)).astype(np.float32)
    plot_generation(model.decode(prior), out / "generation_prior.png",
                    f"{strategy}: z ~ N(0, I) (seed {seed}) decoded by every decoder")
    written.append(out / "generation_prior.png")
    for key in (k for k in model.strategy.posterior_keys if k in ("cloud", "pose")):
        values = shown[key]
        plot_generation(model.decode(encode(model, key, values)), out / f"generation_from_{key}.png",
                        f"{strategy}: z = mu of q(z | {key}) of test samples, decoded by every decoder", (key, values))
        written.append(out / f"generation_from_{key}.png")
    return written
