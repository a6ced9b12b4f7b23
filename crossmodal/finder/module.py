"""LightningModule that trains a registered finder on whole images with their part-mask classes.

Loss: per-pixel cross-entropy plus a soft Dice term on each hand class over the batch (a hand
covers a few percent of the pixels; Dice keeps the hands from being traded for background).
Augmentation on the batch: left-right mirroring with the left/right classes swapped (a mirrored
left hand is a right hand) and brightness/contrast jitter.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from crossmodal.finder.data import PERSON
from crossmodal.finder.locate import locate_hand


def targets(classes: Tensor, person_weight: float) -> tuple[Tensor, Tensor]:
    """The network's classes (PERSON is background) and each pixel's cross-entropy weight."""
    person = classes == PERSON
    weight = 1.0 + (person_weight - 1.0) * person.float()
    return torch.where(person, torch.zeros_like(classes), classes), weight


def dice_loss(logits: Tensor, classes: Tensor) -> Tensor:
    """1 - soft Dice, averaged over the two hand classes, each pooled over the batch."""
    probs = logits.softmax(dim=1)[:, 1:]
    target = F.one_hot(classes, 3).permute(0, 3, 1, 2)[:, 1:].to(probs)
    overlap = (probs * target).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return (1.0 - (2.0 * overlap + 1.0) / (total + 1.0)).mean()


def augment(images: Tensor, classes: Tensor, flip: bool, jitter: float) -> tuple[Tensor, Tensor]:
    """Mirror half the batch (swapping left and right) and jitter brightness and contrast."""
    if flip:
        mirrored = torch.rand(len(images), device=images.device) < 0.5
        swapped = torch.tensor([0, 2, 1, PERSON], device=classes.device)[classes]
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
        classes = torch.where(mirrored[:, None, None], swapped.flip(-1), classes)
    if jitter > 0:
        shape = (len(images), 1, 1, 1)
        gain = 1.0 + jitter * (2 * torch.rand(shape, device=images.device) - 1)
        bias = jitter * 0.5 * (2 * torch.rand(shape, device=images.device) - 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - mean) * gain + mean + bias).clamp(0, 1)
    return images, classes


class FinderModule(L.LightningModule):
    """``config`` is a resolved FinderRunConfig as a plain dict (stored in the checkpoint)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from crossmodal.registry import FINDERS

        self.save_hyperparameters({"config": config})
        self.cfg = config
        finder = config["finder"]
        self.net = FINDERS.build(finder["name"], key="finder.name", **dict(finder["options"] or {}))
        self.steps_total = 1

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def loss(self, logits: Tensor, classes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        classes, weight = targets(classes, float(self.cfg["optim"]["person_weight"]))
        # The weighted mean (as F.cross_entropy weighs classes): a weight of 1 gives the plain mean.
        ce = (F.cross_entropy(logits, classes, reduction="none") * weight).sum() / weight.sum()
        dice = dice_loss(logits, classes)
        return ce + self.cfg["optim"]["dice_weight"] * dice, {"ce": ce.detach(), "dice": dice.detach()}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, classes = batch
        data = self.cfg["data"]
        images, classes = augment(images.float() / 255.0, classes, data["flip"], data["jitter"])
        loss, parts = self.loss(self(images), classes)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in parts.items()})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, classes = batch
        logits = self(images.float() / 255.0)
        loss, _ = self.loss(logits, classes)
        classes = targets(classes, 1.0)[0]
        # Working-resolution IoU of the hand pixels (either side), per image: the checkpoint monitor.
        hand, truth = logits.argmax(dim=1) > 0, classes > 0
        iou = (hand & truth).sum(dim=(1, 2)) / (hand | truth).sum(dim=(1, 2)).clamp_min(1)
        located = locate_hand(logits, tuple(images.shape[-2:]))
        true_side = (classes == 2).sum(dim=(1, 2)) > (classes == 1).sum(dim=(1, 2))
        side_ok = ((located.right > 0.5) == true_side).float()
        self.log_dict({"val/loss": loss, "val/hand_iou": iou.mean(), "val/side_accuracy": side_ok.mean()},
                      prog_bar=True, batch_size=len(images))

    def configure_optimizers(self) -> Any:
        optim = self.cfg["optim"]
        opt = torch.optim.AdamW(self.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, total // 20)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
