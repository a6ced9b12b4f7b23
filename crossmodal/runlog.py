"""A run folder's bookkeeping: where it is, ``runs/latest``, and its CSV logs across resumes."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig


def run_directory(cfg: DictConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def point_latest(run_dir: Path, link: str = "latest") -> None:
    """Atomically make ``<out_dir>/<link>`` (default ``latest``) a symlink to ``run_dir``."""
    latest = run_dir.parent / link
    tmp = run_dir.parent / f".{link}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, latest)


def set_aside_csv_log(run_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing ``csv/metrics.csv`` when a run resumes; rename
    it to ``csv/metrics.part<k>.csv`` first, so the epochs before the interruption stay logged."""
    current = run_dir / "csv" / "metrics.csv"
    if current.is_file():
        k = len(list(current.parent.glob("metrics.part*.csv")))
        current.rename(current.with_name(f"metrics.part{k}.csv"))


def logged(run_dir: Path, *columns: str) -> list[dict[str, float]]:
    """The CSV log rows holding every one of ``columns`` (plus ``step``), in step order, including
    the logs set aside by resumed runs. A step logged twice (work after the last checkpoint of an
    interrupted run, redone on resume) keeps its latest value."""
    import csv

    folder = run_dir / "csv"
    parts = sorted(folder.glob("metrics.part*.csv"), key=lambda p: int(p.stem.removeprefix("metrics.part") or 0))
    by_step: dict[int, dict[str, float]] = {}
    for path in [*parts, folder / "metrics.csv"]:
        if path.is_file():
            with path.open() as f:
                for r in csv.DictReader(f):
                    if all(r.get(c) for c in columns):
                        by_step[int(r["step"])] = {"step": int(r["step"]), **{c: float(r[c]) for c in columns}}
    return [by_step[s] for s in sorted(by_step)]


def validation_curve(run_dir: Path) -> list[float]:
    """Validation EPE at each validation (one or more an epoch: trainer.val_check_interval)."""
    return [r["val/epe_mean"] for r in logged(run_dir, "val/epe_mean")]


def lr_curve(run_dir: Path) -> list[float]:
    """The learning rate as logged during training (every trainer.log_every_n_steps)."""
    return [r["lr-Adam"] for r in logged(run_dir, "lr-Adam")]
