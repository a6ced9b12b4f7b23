"""The short real run: S4 through the Lightning trainer on a cache built elsewhere by ``--prepare``
(no frames can be generated on the GPU machine: it has no open3d)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Budget, say
from .plan import Plan


def run_config(plan: Plan, cache_dir: Path, work: Path, extra: list[str] | None = None) -> Any:
    from crossmodal.config import load_config

    return load_config(None, [*plan.run_overrides, f"data.cache_dir={cache_dir}", f"data.root={work / 'frames'}",
                              f"out_dir={work / 'runs'}", "name=s4-short", f"trainer.max_steps={plan.run_steps}",
                              "trainer.progress=false", f"data.num_workers={plan.run_workers}", *(extra or [])])


def prepare(plan: Plan, cache_dir: Path) -> list[Path]:
    """Generate the run's synthetic frames in a scratch folder, cache them into ``cache_dir``, drop the frames."""
    from crossmodal.data.datamodule import build_datamodule

    scratch = Path(tempfile.mkdtemp(prefix="gpucheck-frames-"))
    try:
        data = build_datamodule(run_config(plan, cache_dir, scratch))
        data.prepare_data()
        return [data.cache_path(split) for split in data.splits()]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def short_run(plan: Plan, budget: Budget, cache_dir: Path, work: Path, build_missing: bool = False) -> dict[str, Any]:
    """S4 through the Lightning trainer (crossmodal.train.build_trainer) on the carried cache; ``build_missing``
    (the smoke run) builds a missing cache here instead of failing."""
    import lightning as L
    from omegaconf import OmegaConf

    from crossmodal.data.cache import check_cache
    from crossmodal.data.datamodule import CrossmodalDataModule
    from crossmodal.module import CrossmodalModule
    from crossmodal.runlog import run_directory, validation_curve
    from crossmodal.train import build_trainer

    class CarriedCache(CrossmodalDataModule):
        """The caches were built on another machine (--prepare): there are no frames here to build from."""

        def prepare_data(self) -> None:
            for split in self.splits():
                check_cache(self.cache_path(split), self.cfg.preprocess)

    class Curve(L.Callback):
        """Each step's loss; stops the fit when only the largest-batch search's time is left."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.stopped = False

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(outputs["loss"]))
            if budget.left() < plan.tail_s:
                trainer.should_stop = self.stopped = True

    cfg = run_config(plan, cache_dir, work)
    data = CarriedCache(OmegaConf.to_object(cfg.data), progress=False)
    missing = [p for p in (data.cache_path(s) for s in data.splits()) if not p.is_file()]
    if missing and build_missing:
        say(f"building the tiny cache in {cache_dir}")
        prepare(plan, cache_dir)
    elif missing:
        raise FileNotFoundError(f"no cache {missing[0]}: build it with python benchmarks/gpu_check.py --prepare {cache_dir}")
    L.seed_everything(cfg.seed, verbose=False)
    module = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))
    run_dir = run_directory(cfg)
    trainer = build_trainer(cfg, run_dir)
    curve = Curve()
    trainer.callbacks.append(curve)
    begin = time.perf_counter()
    error = None
    try:
        trainer.fit(module, datamodule=data)
    except Exception as exc:  # NonFiniteLossError and the like: reported with the curve so far
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - begin
    losses = curve.losses
    return {
        "steps": len(losses), "planned_steps": plan.run_steps, "seconds": seconds, "batch": int(cfg.data.batch_size),
        "crop_size": int(cfg.data.preprocess.crop_size), "precision": str(trainer.precision),
        "train_samples": len(data.datasets.get("train", ())), "val_samples": len(data.datasets.get("val", ())),
        "losses": losses, "finite": bool(losses) and all(v == v and abs(v) != float("inf") for v in losses),
        "val_epe": validation_curve(run_dir), "stopped_by_budget": curve.stopped, "error": error,
        "cache_mib": sum(data.cache_path(s).stat().st_size for s in data.splits()) / 2**20,
    }
