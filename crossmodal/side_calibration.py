"""A trained model's side temperature (``crossmodal.side_weight``), fitted on its training crops.

    python -m crossmodal calibrate-side --ckpt runs/latest/checkpoints/best.ckpt [--frames 800]

Each of the first ``frames`` crops of the model's training cache shows the side the model saw (its
other side was mirrored into it), so the crop's keypoint fit minus its mirror image's is a margin
whose right answer is known. ``train`` fits it when a run ends; the command does it for a
checkpoint trained before, writing the temperature into the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crossmodal.errors import ConfigError
from crossmodal.side_weight import CHECKPOINT_KEY, fit_temperature

#: Training crops the temperature is fitted on (about 20 s at one thread for a 64 px model).
FRAMES = 800


def calibrated(module: Any) -> bool:
    """Whether a trained module gets a side temperature: a 2D keypoint stage, and one side seen."""
    from crossmodal.data.sides import training_hands

    pre = module.cfg.data.preprocess
    sides = training_hands(str(module.cfg.data.dataset), bool(pre.mirror_left))
    return len(sides or ()) == 1 and getattr(module.strategy.encoders["image"], "keypoint_stage", None) is not None


def side_margins(module: Any, frames: int = FRAMES, batch: int = 100) -> torch.Tensor:
    """(N,) fit(crop) - fit(the crop mirrored) over the first ``frames`` crops of a trained module's
    training cache."""
    from omegaconf import OmegaConf

    from crossmodal.config import Config
    from crossmodal.data.datamodule import build_datamodule
    from encoders.keypoints import keypoint_fit

    datamodule = build_datamodule(OmegaConf.merge(OmegaConf.structured(Config), module.cfg))
    datamodule.prepare_data()  # a checkpoint trained before may find its cache gone; a built one is reused
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    encoder = module.strategy.encoders["image"]
    margins = []
    with torch.no_grad():
        for start in range(0, min(frames, len(dataset)), batch):
            images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch, frames, len(dataset)))])
            fits = keypoint_fit(encoder.keypoint_maps(torch.cat([images, images.flip(-1)])))
            margins.append(fits[: len(images)] - fits[len(images):])
    return torch.cat(margins)


def write_side_temperature(path: str | Path, temperature: float) -> None:
    """Store ``temperature`` in a Lightning checkpoint, rewritten atomically."""
    from crossmodal.checkpoints import is_safetensors, load_weights_only
    from crossmodal.io import atomic_path

    path = Path(path)
    if is_safetensors(path):
        raise ConfigError(f"{path}: a shared safetensors model is calibrated before export; calibrate its checkpoint")
    ckpt = load_weights_only(path)
    ckpt[CHECKPOINT_KEY] = float(temperature)
    with atomic_path(path, suffix=".ckpt") as tmp:
        torch.save(ckpt, tmp)


def calibrate_side(path: str | Path, frames: int = FRAMES) -> float | None:
    """Fit the side temperature of the checkpoint at ``path`` and write it there; None (nothing
    written) for a model that needs no side or cannot tell it (:func:`calibrated`)."""
    from crossmodal.trained import load_trained_module

    module = load_trained_module(path).eval()
    if not calibrated(module):
        return None
    temperature = fit_temperature(side_margins(module, frames))
    write_side_temperature(path, temperature)
    return temperature
