"""How well a trained model fits its own training frames.

Beside the validation EPE, the EPE on frames the model was trained on tells underfitting (both
high, close together) from overfitting (low here, a gap to validation). The frames are the first
``frames`` of the training split, as the datamodule serves them before batch augmentation; with
weak labels those are the labelled ones (the datamodule keeps the leading fraction labelled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Training frames the experiment runner evaluates each finished run on (about a minute, one thread).
TRAIN_FRAMES = 800


def predictions(module: Any, dataset: Any, frames: int, batch: int = 100) -> dict[str, torch.Tensor]:
    """Poses predicted from RGB for the first ``frames`` samples of ``dataset``, with their targets."""
    out: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, min(frames, len(dataset)), batch):
            samples = [dataset[i] for i in range(start, min(start + batch, frames, len(dataset)))]
            stacked = {k: torch.stack([s[k] for s in samples]) for k in ("image", "pose", "scale", "visible")}
            stacked["pred"] = module.strategy.predict(stacked["image"])["pose"]
            for k, v in stacked.items():
                out.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def epe(p: dict[str, torch.Tensor], palm: bool) -> float:
    """Mean EPE (mm) of ``predictions``' output, by the evaluation protocol."""
    from crossmodal.metrics import KeypointMetrics

    metric = KeypointMetrics(palm_is_joint0=palm)
    metric.update(p["pred"], p["pose"], p["scale"], p["visible"])
    return float(metric.compute()["epe_mean"])


def training_frames_epe(ckpt: str | Path, frames: int = TRAIN_FRAMES) -> float:
    """EPE (mm) of a checkpoint on the first ``frames`` of its own training split."""
    from omegaconf import OmegaConf

    from crossmodal.config import Config
    from crossmodal.data.datamodule import build_datamodule
    from crossmodal.trained import load_trained_module

    module = load_trained_module(ckpt).eval()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), module.cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup(None)
    return epe(predictions(module, datamodule.datasets["train"], frames), cfg.data.dataset == "stb")
