"""The LightningModule: builds the strategy from the registry and delegates to it.

Everything model-specific lives in the strategy (``alignment/``); this class only
adds what Lightning needs: the beta schedule, logging, validation/test metrics,
optimiser and learning-rate schedule, and the non-finite-loss guard.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from crossmodal.errors import CrossmodalError
from crossmodal.registry import STRATEGIES


class NonFiniteLossError(CrossmodalError):
    """A loss term became NaN or infinite; a checkpoint was saved before stopping."""


def beta_at(step: int, total_steps: int, cfg: Any) -> float:
    """KL weight: log-linear from beta_start to beta_end over beta_anneal_fraction of training."""
    ramp = max(1, int(total_steps * cfg.beta_anneal_fraction))
    t = min(1.0, step / ramp)
    return float(math.exp((1 - t) * math.log(cfg.beta_start) + t * math.log(cfg.beta_end)))


def cosine_with_warmup(total_steps: int, warmup_fraction: float) -> Any:
    """LambdaLR factor: linear from 0 to 1 over the warm-up, then cosine down to 0 at ``total_steps``."""
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


class CrossmodalModule(L.LightningModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        # The whole resolved config travels in the checkpoint: eval and resume rebuild from it.
        self.save_hyperparameters({"config": config})
        self.cfg: DictConfig = OmegaConf.create(config)
        self.strategy = STRATEGIES.get(self.cfg.model.strategy, key="model.strategy")(self.cfg.model)
        from crossmodal.metrics import KeypointMetrics

        palm = self.cfg.data.dataset == "stb"  # STB's joint 0 already is the palm centre
        self.val_metrics = KeypointMetrics(palm_is_joint0=palm)
        self.test_metrics = KeypointMetrics(palm_is_joint0=palm)
        self.test_samples: dict[str, list[torch.Tensor]] = {}
        self.nonfinite_checkpoint: Path | None = None

    # ------------------------------------------------------------------ training

    def beta(self) -> float:
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        total = int(total) if math.isfinite(total) else 1
        return beta_at(self.global_step, total, self.cfg.model)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        beta = self.beta()
        terms = self.strategy.losses(batch, beta)
        for name, value in terms.items():
            if not torch.isfinite(value):
                self._stop_on_nonfinite(name, value, batch_idx)
        size = batch["image"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=size)
        self.log("train/beta", beta, batch_size=size)
        self.log("train/loss_epoch", terms["loss"].detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        return terms["loss"]

    def _stop_on_nonfinite(self, name: str, value: torch.Tensor, batch_idx: int) -> None:
        path = None
        if self._trainer is not None:
            path = Path(self.cfg.out_dir) / self.cfg.name / "checkpoints" / f"nonfinite-step{self.global_step}.ckpt"
            # The weights are still those before this step: the checkpoint is usable for debugging.
            self.trainer.save_checkpoint(path)
            self.nonfinite_checkpoint = path
        saved = f"; checkpoint saved to {path}" if path else ""
        raise NonFiniteLossError(
            f"non-finite loss at step {self.global_step}: term {name!r} = {value.item()} (batch index {batch_idx}){saved}"
        )

    # ------------------------------------------------------------------ evaluation

    def _predict_pose(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # RGB only: nothing but the image reaches the model at test time.
        return self.strategy.predict(batch["image"])

    def setup(self, stage: str) -> None:
        if stage != "fit" or self._trainer is None or self.trainer.datamodule is None:
            return
        if any(loss.needs_labelled_poses for loss in self.strategy.pose_losses.values()):
            # Bounds from the labelled training frames alone, written beside the run. On resume the
            # checkpoint's buffers replace them with the same values.
            fitted = self.strategy.fit_pose_losses(self.trainer.datamodule.datasets["train"].labelled_poses())
            if self.trainer.is_global_zero:
                from crossmodal.io import atomic_write_text

                run_dir = Path(self.cfg.out_dir) / self.cfg.name
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(run_dir / "pose_limits.json", json.dumps(fitted, indent=1) + "\n")

    def on_fit_start(self) -> None:
        self.fit_started = time.perf_counter()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self._predict_pose(batch)
        self.val_metrics.update(out["pose"], batch["pose"], batch["scale"], batch["visible"])

    def on_validation_epoch_end(self) -> None:
        result = self.val_metrics.compute()
        # compute() already gathers every process's samples: no sync_dist needed.
        self.log("val/epe_mean", result["epe_mean"], prog_bar=True)
        self.log("val/epe_median", result["epe_median"])
        self.log("val/auc_20_50", result["auc_20_50"])
        self.log("val/auc_0_50", result["auc_0_50"])
        if hasattr(self, "fit_started"):
            # Seconds since this (possibly resumed) fit started: validation EPE against wall time.
            self.log("val/elapsed_s", time.perf_counter() - self.fit_started)
        self.val_metrics.reset()
        if not self.trainer.sanity_checking:
            # Stepped here rather than by Lightning after the epoch, so that the checkpoint
            # written at this validation already holds the stepped plateau state (resume-exact).
            scheduler = self.lr_schedulers()
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(float(result["epe_mean"]))

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's own plateau step is replaced by the one in ``on_validation_epoch_end``;
        a per-step schedule (cosine) steps here as usual."""
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self._predict_pose(batch)
        self.test_metrics.update(out["pose"], batch["pose"], batch["scale"], batch["visible"])
        keep = {
            "image": batch["image"],
            "pose": batch["pose"],
            "pred_pose": out["pose"],
            "root": batch["root"],
            "scale": batch["scale"],
            "K": batch["K"],
            "cloud": batch["cloud"],
        }
        if "cloud" in out:
            keep["pred_cloud"] = out["cloud"]
        self.test_poses["pred"].append(out["pose"].detach().float().cpu())
        self.test_poses["true"].append(batch["pose"].detach().float().cpu())
        # Only the first few samples are kept, for the qualitative figure.
        if sum(t.shape[0] for t in self.test_samples.get("image", [])) < 8:
            for k, v in keep.items():
                self.test_samples.setdefault(k, []).append(v.detach().cpu())

    def on_test_epoch_start(self) -> None:
        self.test_samples = {}
        self.test_poses: dict[str, list[torch.Tensor]] = {"pred": [], "true": []}
        self.test_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.test_result = {k: (v.item() if torch.is_tensor(v) and v.numel() == 1 else v) for k, v in self.test_metrics.compute().items()}
        self.log("test/epe_mean", float(self.test_result["epe_mean"]))
        self.log("test/auc_20_50", float(self.test_result["auc_20_50"]))

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.cfg.optim
        optimizer = torch.optim.Adam(self.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
        if opt.schedule == "cosine":
            total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
            total = max(1, int(total) if math.isfinite(total) else 1)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, opt.warmup_fraction))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=opt.lr_factor,
            patience=opt.lr_patience,
            # "divided by 10 twice": the floor stops further drops (tiny slack for float error).
            min_lr=opt.lr * opt.lr_factor**opt.lr_drops * 0.999,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/epe_mean", "interval": "epoch", "strict": False},
        }
