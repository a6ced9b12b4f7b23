"""A finder run: ``python -m crossmodal finder [config.yaml] [key=value ...]`` (``make finder``).

``runs/finder-<time>/`` holds ``config.yaml``, ``checkpoints/{best,last}.ckpt`` (best by the
validation hand IoU), CSV logs, ``metrics.json`` (mask IoU, box IoU and side accuracy on the
evaluation split at full resolution) and ``report.png``; ``runs/latest-finder`` points at the
newest finder run with a checkpoint (``runs/latest`` stays with the pose models).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from crossmodal.finder.data import FinderFrames, load_frames
from crossmodal.finder.metrics import box_iou, mask_iou, summarise
from crossmodal.finder.model import LATEST, HandFinder, load_finder


@dataclass
class FinderRun:
    run_dir: Path
    best_checkpoint: Path
    metrics: dict[str, Any]


def ensure_frames(cfg: DictConfig) -> None:
    """Generate the synthetic hands when their folder holds none (the same frames as ``make data``)."""
    if cfg.data.dataset != "synthetic":
        return
    root = Path(cfg.data.root)
    if all((root / split / f"anno_{split}.pickle").is_file() for split in ("training", "evaluation")):
        return
    from crossmodal.data.synthetic import generate

    synth = cfg.data.synthetic
    generate(cfg.data.root, synth.train, synth.test, synth.seed, progress=bool(cfg.progress))


def _loader(frames: FinderFrames, rows: np.ndarray, batch_size: int, shuffle: bool) -> Any:
    """Batches of the frames' whole images and, with ``finder.zoom``, of their windows beside them."""
    from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

    parts = [TensorDataset(frames.images[rows], frames.classes[rows])]
    if frames.windows is not None:
        parts.append(TensorDataset(frames.windows[rows], frames.window_classes[rows]))
    return DataLoader(ConcatDataset(parts), batch_size=batch_size, shuffle=shuffle, num_workers=0)


def evaluate_frames(finder: HandFinder, frames: FinderFrames, image_size: tuple[int, int], batch: int = 64) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Full-resolution report of ``finder`` on frames kept with their hand pixels (``keep_full``)."""
    cfg = finder.config["finder"]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("mask_iou", "box_iou", "side_ok", "found", "box", "right")}
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            rows = slice(start, start + batch)
            located = finder.locate(frames.full_images[rows].float() / 255.0, frames.images[rows].float() / 255.0)
            parts["mask_iou"].append(mask_iou(located.any_hand, frames.hand_pixels[rows]))
            parts["box_iou"].append(box_iou(located.box, frames.box[rows]))
            parts["side_ok"].append((located.right > 0.5).long() == frames.side[rows])
            parts["found"].append(located.found(cfg["min_score"], cfg["min_pixels"]))
            parts["box"].append(located.box)
            parts["right"].append(located.right)
    out = {k: torch.cat(v) for k, v in parts.items()}
    return summarise(out["mask_iou"], out["box_iou"], out["side_ok"], out["found"]), out


def plot_report(frames: FinderFrames, found: dict[str, torch.Tensor], image_size: tuple[int, int], path: Path, title: str) -> None:
    """The first evaluation frames with the true box (green) and the finder's box (yellow) and side."""
    import matplotlib.pyplot as plt

    from crossmodal import report

    count = min(8, len(frames))
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    height, width = image_size
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= count:
            continue
        ax.imshow(frames.images[k].permute(1, 2, 0).numpy(), extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        for box, colour in ((frames.box[k], "lime"), (found["box"][k], "yellow")):
            u0, v0, u1, v1 = box.tolist()
            ax.plot([u0, u1, u1, u0, u0], [v0, v0, v1, v1, v0], color=colour, linewidth=1.2)
        truth = "right" if frames.side[k] else "left"
        side = "right" if found["right"][k] > 0.5 else "left"
        ax.set_title(f"frame {int(frames.index[k])}: true {truth}, found {side}\nbox IoU {float(found['box_iou'][k]):.2f}", fontsize=8)
    fig.suptitle(title + "  (green: true box, yellow: finder)", fontsize=9)
    fig.tight_layout()
    report.save_figure(fig, path)


def train_finder(cfg: DictConfig) -> FinderRun:
    """Load the frames, train, evaluate the best checkpoint on the evaluation split, write the report."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from crossmodal import report
    from crossmodal.config import save_config
    from crossmodal.errors import ConfigError, DataError
    from crossmodal.finder.module import FinderModule
    from crossmodal.runlog import point_latest

    started = time.time()
    if not cfg.name:
        cfg.name = f"finder-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out_dir) / cfg.name
    L.seed_everything(cfg.seed, verbose=False)
    data, size, zoom = cfg.data, cfg.finder.input_size, float(cfg.finder.zoom)
    if 0 < zoom < 1:
        raise ConfigError(f"finder.zoom must be 0 (one look) or at least 1 (a window around the first box), got {zoom}")
    # The data is read before the run folder exists: a bad dataset leaves nothing behind.
    ensure_frames(cfg)
    train = load_frames(data.dataset, data.root, "training", size, data.train_frames, progress=cfg.progress, zoom=zoom,
                        seed=cfg.seed)
    if train.windows is not None and train.windows.shape[-2:] != train.images.shape[-2:]:
        raise ConfigError(f"finder.zoom needs square images (its windows are {size}x{size}); {data.root} has "
                          f"{tuple(train.images.shape[-2:])} at the working size")
    evaluation = load_frames(data.dataset, data.root, "evaluation", size, data.eval_frames, keep_full=True, progress=cfg.progress)
    n_val = max(1, int(round(len(train) * data.val_fraction)))
    if len(train) - n_val < 1:
        raise DataError(f"{data.root}: {len(train)} training frames with a hand leave none to train on after validation")
    rows = np.arange(len(train))
    module = FinderModule(OmegaConf.to_container(cfg, resolve=True))
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/hand_iou", mode="max",
                                 save_last=True, save_top_k=1, enable_version_counter=False)
    trainer = L.Trainer(default_root_dir=str(run_dir), max_epochs=cfg.optim.max_epochs, accelerator="auto", devices=1,
                        logger=CSVLogger(save_dir=str(run_dir), name="csv", version=""), log_every_n_steps=10,
                        callbacks=[checkpoint, *([RichProgressBar(leave=True)] if cfg.progress else [])],
                        enable_progress_bar=bool(cfg.progress), enable_model_summary=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    try:
        trainer.fit(module, _loader(train, rows[:-n_val], data.batch_size, True), _loader(train, rows[-n_val:], 256, False))
    finally:
        if any((run_dir / "checkpoints").glob("*.ckpt")):
            point_latest(run_dir, LATEST)
    best = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    finder = load_finder(best, "checkpoint")
    image_size = tuple(evaluation.hand_pixels.shape[-2:])  # RHD and the synthetic hands: 320 x 320
    metrics, found = evaluate_frames(finder, evaluation, image_size)
    metrics.update({"checkpoint": str(best), "dataset": data.dataset, "split": "evaluation",
                    "input_size": size, "train_frames": int(len(train) - n_val), "wall_s": round(time.time() - started, 1)})
    report.write_metrics_json(metrics, run_dir / "metrics.json")
    plot_report(evaluation, found, image_size, run_dir / "report.png", f"finder {cfg.finder.name} on {data.dataset} (evaluation)")
    return FinderRun(run_dir, best, metrics)
