"""Training and evaluation runs: run folders, the Lightning Trainer, callbacks, reports.

    run = train(cfg)                       # python -m crossmodal train [config.yaml] [key=value ...]
    evaluate("runs/latest/checkpoints/best.ckpt")   # python -m crossmodal eval --ckpt PATH

A run folder ``runs/<name>/`` holds ``config.yaml`` (the resolved config),
``checkpoints/{best,last}.ckpt``, TensorBoard and CSV logs, and after evaluation
``metrics.json``, ``pck.png`` and ``qualitative.png``; ``runs/latest`` points at the
newest run that has a checkpoint (the data is checked before a run folder is made).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from crossmodal.config import save_config
from crossmodal.data.datamodule import build_datamodule
from crossmodal.errors import ConfigError, CrossmodalError
from crossmodal.runlog import point_latest, run_directory, set_aside_csv_log
from crossmodal.checkpoints import load_checkpoint_config
from crossmodal.trained import check_compatible, load_trained_module


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict[str, Any] | None
    prepare_s: float = 0.0  # checking (and building) the data and caches: a one-off cost, not training
    # A resumed run's parts before this process, to their last checkpoint (crossmodal.clock).
    earlier_s: float = 0.0
    earlier_thread_s: float = 0.0


def resolve_resume(cfg: DictConfig) -> str | None:
    """``resume``: "" -> None; "true" -> this run's last checkpoint; else a checkpoint path."""
    from crossmodal.checkpoints import is_safetensors

    value = str(cfg.resume).strip()
    if value.lower() in ("", "false", "none"):
        return None
    if value.lower() == "true":
        path = run_directory(cfg) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(f"resume=true: no checkpoint to resume at {path} (set name= to the run to resume)")
    else:
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"resume: checkpoint not found: {value}")
    if is_safetensors(path):
        raise ConfigError(f"resume: {path} is a shared safetensors model (weights and config, no optimizer or "
                          "loop state); resume from a run's Lightning .ckpt, e.g. checkpoints/last.ckpt")
    return str(path)


# ---------------------------------------------------------------------- trainer

def _precision(cfg: DictConfig) -> str:
    import torch

    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _devices(value: str) -> Any:
    value = str(value).strip()
    if value == "auto":
        return "auto"
    if value.isdigit() or (value.startswith("-") and value[1:].isdigit()):
        return int(value)
    if value.startswith("["):
        return [int(v) for v in value.strip("[]").split(",") if v.strip()]
    raise ConfigError(f"trainer.devices must be 'auto', a count or a list like [0,1], got {value!r}")


def validation_lines() -> Any:
    """Without the progress bar (logs, the experiment runner), one line per validation, so a run of
    an hour shows that it moves: ``[run] step 900/3600, epoch 1: val EPE 31.20 mm, 9m41s``."""
    from lightning.pytorch.callbacks import Callback

    class ValidationLines(Callback):
        def on_fit_start(self, trainer: Any, module: Any) -> None:
            self.start = time.perf_counter()

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            epe = trainer.callback_metrics.get("val/epe_mean")
            if trainer.sanity_checking or epe is None or not trainer.is_global_zero:
                return
            minutes, seconds = divmod(int(time.perf_counter() - self.start), 60)
            total = trainer.estimated_stepping_batches
            print(f"[{Path(trainer.default_root_dir).name}] step {trainer.global_step}/{total}, epoch {trainer.current_epoch}: "
                  f"val EPE {float(epe):.2f} mm, {minutes}m{seconds:02d}s", flush=True)

    return ValidationLines()


def build_trainer(cfg: DictConfig, run_dir: Path, with_loggers: bool = True) -> Any:
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from crossmodal.clock import TrainingClock

    t = cfg.trainer
    callbacks: list[Any] = [TrainingClock()]
    has_val = cfg.data.val_fraction > 0
    callbacks.append(
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/epe_mean" if has_val else None,
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
        )
    )
    # Not save_last=True: since Lightning 2.6 that refreshes last.ckpt only when best.ckpt is
    # written, so a run whose last epochs do not improve would resume (and the experiment runner
    # would reuse it) from a stale epoch. A monitor-free checkpoint after the best one is written
    # every epoch, with the best one's updated state inside.
    callbacks.append(
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False)
    )
    loggers: list[Any] = []
    if with_loggers:
        loggers = [
            TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
            CSVLogger(save_dir=str(run_dir), name="csv", version=""),
        ]
        # Every log_every_n_steps: a per-step schedule (cosine) is seen to its end, not at epoch starts.
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks.append(RichProgressBar(leave=True) if t.progress else validation_lines())
    # Lightning prints a line for every limit/interval passed explicitly: pass only changed ones.
    optional = {
        "val_check_interval": t.val_check_interval,
        "limit_train_batches": t.limit_train_batches,
        "limit_val_batches": t.limit_val_batches if has_val else 0,
        "limit_test_batches": t.limit_test_batches,
    }
    return L.Trainer(
        default_root_dir=str(run_dir),
        accelerator=t.accelerator,
        devices=_devices(t.devices),
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=_precision(cfg),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        log_every_n_steps=t.log_every_n_steps,
        **{k: v for k, v in optional.items() if v != 1.0},
        gradient_clip_val=cfg.optim.grad_clip or None,
        deterministic=t.deterministic,
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=bool(t.progress),
        enable_model_summary=False,
    )


# ---------------------------------------------------------------------- train / eval

def train(cfg: DictConfig) -> RunResult:
    """Fit, then evaluate the best checkpoint on the test split and write the reports."""
    import lightning as L

    from crossmodal.clock import TrainingClock
    from crossmodal.module import CrossmodalModule

    if not cfg.name:
        cfg.name = f"{cfg.model.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = run_directory(cfg)
    resume = resolve_resume(cfg)
    if resume is not None:
        # Read safely here first: a crafted file is refused before Lightning opens it.
        check_compatible(load_checkpoint_config(resume), cfg, resume)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    prepare_s = 0.0
    model = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, run_dir)
    if trainer.local_rank == 0:
        # Check (and build) the data before anything is written: a missing dataset must not leave
        # an empty run folder behind, nor move runs/latest away from the last good run. fit()
        # calls prepare_data again, which then finds the caches ready.
        start = time.perf_counter()
        datamodule.prepare_data()
        prepare_s = time.perf_counter() - start
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            set_aside_csv_log(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    finally:
        # runs/latest moves only to a run that has a checkpoint to evaluate (also when fit failed
        # or was interrupted after one was written).
        if trainer.is_global_zero and any((run_dir / "checkpoints").glob("*.ckpt")):
            point_latest(run_dir)
    # The best checkpoint, or (no validation ran yet, e.g. max_steps inside the first epoch) the last.
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.best_model_path), "")
    is_zero = trainer.is_global_zero
    _leave_process_group()
    metrics = None
    if is_zero and best:
        # The test split is evaluated once, on one device, so every sample counts exactly once
        # (a distributed sampler would pad the split to a multiple of the world size).
        metrics = evaluate_checkpoint(best, cfg, run_dir)
        from crossmodal.side_calibration import calibrate_side

        temperature = calibrate_side(best)  # a model that takes a found hand's side from its own fit: how sure it is
        if temperature is not None:
            print(f"side temperature {temperature:.5f} written into {best} (predict weighs a found hand's two "
                  "sides by it)")
    (clock,) = [c for c in trainer.callbacks if isinstance(c, TrainingClock)]
    return RunResult(run_dir, Path(best) if best else None, metrics, prepare_s, clock.earlier_fit_s,
                     clock.earlier_thread_s)


def _leave_process_group() -> None:
    """After DDP training, ranks > 0 are done; rank 0 evaluates alone without the group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def evaluate_checkpoint(ckpt: str | Path, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Test-split metrics of a checkpoint, on one device, with the report files."""
    import torch

    check_compatible(load_checkpoint_config(ckpt), cfg, ckpt)
    model = load_trained_module(ckpt)
    eval_cfg = cfg.copy()
    eval_cfg.trainer.devices, eval_cfg.trainer.num_nodes, eval_cfg.trainer.strategy = "1", 1, "auto"
    if _precision(eval_cfg).startswith("bf16") and not torch.cuda.is_available():
        # The CPU profile trains under bf16 autocast for speed; the reported numbers are fp32.
        eval_cfg.trainer.precision = "32-true"
    trainer = build_trainer(eval_cfg, run_dir, with_loggers=False)
    datamodule = build_datamodule(eval_cfg)
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = dict(model.test_result)
    metrics.update(anatomy_metrics(model, datamodule))
    write_reports(model, metrics, cfg, run_dir, Path(ckpt))
    return metrics


def anatomy_metrics(model: Any, datamodule: Any) -> dict[str, float]:
    """How often the test predictions (and, as the anchor, the test labels) fall outside the
    anatomical bounds of the labelled training frames (crossmodal.kinematics)."""
    import torch

    from crossmodal import kinematics

    try:
        datamodule.setup("fit")
    except CrossmodalError as exc:  # e.g. only the test split's cache is here
        print(f"anatomy metrics skipped: the training frames' bounds need the training split ({exc})")
        return {}
    bounds = kinematics.limits(datamodule.datasets["train"].labelled_poses())
    out = {}
    for who, prefix in (("pred", "limits_broken"), ("true", "limits_broken_labels")):
        poses = torch.cat(model.test_poses[who])
        fractions = kinematics.broken_fractions(poses, bounds)
        out.update({prefix if group == "all" else f"{prefix}/{group}": value for group, value in fractions.items()})
        excess = "limits_excess" if who == "pred" else "limits_excess_labels"
        out.update({f"{excess}/{group}": value for group, value in kinematics.mean_excess(poses, bounds).items()})
    return out


def write_reports(model: Any, metrics: dict[str, Any], cfg: DictConfig, run_dir: Path, ckpt: Path) -> None:
    import torch

    from crossmodal import report

    title = f"{cfg.model.strategy} on {cfg.data.dataset} (test split) — {ckpt.name}"
    print(report.format_results_table(metrics, title))
    report.write_metrics_json({**metrics, "checkpoint": str(ckpt), "strategy": cfg.model.strategy, "dataset": cfg.data.dataset}, run_dir / "metrics.json")
    report.plot_pck({cfg.model.strategy: (metrics["thresholds"], metrics["pck"])}, run_dir / "pck.png", title)
    s = {k: torch.cat(v)[:8] for k, v in model.test_samples.items()}  # eight rows are enough to look at
    if s:
        def uv_of(pose: torch.Tensor) -> Any:
            # Undo the normalisation with the ground truth's root and scale, project with the crop K.
            return report.project_points(pose * s["scale"][:, None, None] + s["root"][:, None, :], s["K"])

        image = (s["image"].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        report.plot_qualitative(
            image,
            uv_of(s["pose"]),
            uv_of(s["pred_pose"]),
            s["cloud"].numpy(),
            s["pred_cloud"].numpy() if "pred_cloud" in s else None,
            run_dir / "qualitative.png",
        )
    print(f"run folder: {run_dir}  (metrics.json, pck.png, qualitative.png, checkpoints/)")


def evaluate(ckpt: str, overrides: list[str]) -> dict[str, Any]:
    """``python -m crossmodal eval --ckpt PATH [key=value ...]``: the checkpoint's own config + overrides."""
    from crossmodal.config import Config, with_overrides

    stored = OmegaConf.merge(OmegaConf.structured(Config), load_checkpoint_config(ckpt))
    cfg = with_overrides(stored, overrides)
    run_dir = Path(ckpt).resolve().parent.parent if Path(ckpt).resolve().parent.name == "checkpoints" else Path(ckpt).resolve().parent
    return evaluate_checkpoint(ckpt, cfg, run_dir)
