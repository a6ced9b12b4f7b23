"""Rows and curves of the learning study (benchmarks/results/learning.md) from finished runs.

For each run folder: test EPE (its metrics.json), validation EPE first / best / last, EPE on
its own training frames (the first ``--train-frames`` of the training split, no augmentation,
best checkpoint), the fit's wall time and training samples/s, and two measures of collapse on
the test split: the predictions' mean joint distance from the palm against the ground truth's
(a pose averaged over the hand's roll shrinks), and the share of test frames whose prediction
is closer to the ground truth mirrored in depth (z -> -z about the palm) than to the ground
truth itself. Then one plot of validation EPE against wall time with every run on it.

    python benchmarks/learning_curves.py "S4 after=runs/poe-..." "S1 after=runs/crossmodal-..." \
        --plot benchmarks/results/learning_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from crossmodal.config import Config
from crossmodal.fit_check import epe, predictions
from crossmodal.metrics import protocol_millimetres
from crossmodal.data.datamodule import build_datamodule
from crossmodal.runlog import logged
from crossmodal.trained import load_trained_module


def validation_log(run_dir: Path) -> list[tuple[int, float, float]]:
    """(step, elapsed seconds, val EPE) at each validation, resumed parts included."""
    return [(int(r["step"]), r["val/elapsed_s"], r["val/epe_mean"]) for r in logged(run_dir, "val/epe_mean", "val/elapsed_s")]


def collapse(p: dict[str, torch.Tensor], palm: bool) -> tuple[float, float, float]:
    """(mean joint distance from the palm of the predictions, of the ground truth, in mm; share of
    frames closer to the depth-mirrored ground truth than to the ground truth)."""
    pred, gt = protocol_millimetres(p["pred"], p["pose"], p["scale"], palm)
    mirrored = gt * torch.tensor([1.0, 1.0, -1.0], dtype=gt.dtype)
    to_gt = (pred - gt).norm(dim=-1).mean(-1)
    to_mirror = (pred - mirrored).norm(dim=-1).mean(-1)
    return float(pred[:, 1:].norm(dim=-1).mean()), float(gt[:, 1:].norm(dim=-1).mean()), float((to_mirror < to_gt).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--train-frames", type=int, default=400)
    parser.add_argument("--plot", default="")
    parser.add_argument("--curves-only", nargs="*", default=[], metavar="LABEL=RUN_DIR",
                        help="runs only plotted, not evaluated again (e.g. runs whose cache predates a preprocessing field)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    curves = {}
    print("| run | test EPE | val EPE first / best / last | train EPE | fit wall time | samples/s | "
          "spread pred / GT | closer to depth mirror |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for item in args.runs:
        label, _, folder = item.partition("=")
        run_dir = Path(folder)
        log = validation_log(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        steps, elapsed, _ = log[-1]
        vals = [v for *_, v in log]
        module = load_trained_module(run_dir / "checkpoints" / "best.ckpt").eval()
        cfg = OmegaConf.merge(OmegaConf.structured(Config), module.cfg)
        palm = cfg.data.dataset == "stb"
        datamodule = build_datamodule(cfg)
        datamodule.setup(None)
        train_epe = epe(predictions(module, datamodule.datasets["train"], args.train_frames), palm)
        spread, gt_spread, mirrored = collapse(predictions(module, datamodule.datasets["test"], 10**9), palm)
        rate = steps * cfg.data.batch_size / elapsed
        print(f"| {label} | {metrics['epe_mean']:.2f} | {vals[0]:.1f} / {min(vals):.1f} / {vals[-1]:.1f} | "
              f"{train_epe:.2f} | {elapsed / 60:.1f} min | {rate:.1f} | {spread:.0f} / {gt_spread:.0f} mm | {mirrored:.0%} |", flush=True)
        curves[label] = log
    for item in args.curves_only:
        label, _, folder = item.partition("=")
        curves[label] = validation_log(Path(folder))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, log in curves.items():
            t = np.array([e for _, e, _ in log]) / 60
            ax.plot(t, [v for *_, v in log], marker="o", ms=3, label=label)
        ax.set_xlabel("wall time of the fit (min, 2 CPU cores)")
        ax.set_ylabel("validation EPE (mm)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
