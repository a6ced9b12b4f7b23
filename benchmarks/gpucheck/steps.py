"""Training steps on the device: each strategy's step timed beside the ResNet-18 ceiling, and the
largest S4 batch that fits in memory."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from kernels import sync
from train_profile import fake_batch

from .common import Budget, fmt, free_memory, measure, out_of_memory, peak_gib, reset_peak, say
from .plan import LABELS, PRECISIONS, Plan


def step_config(name: str, plan: Plan) -> Any:
    from crossmodal.config import load_config

    return load_config(None, ["profile=gpu", f"model.strategy={name}", *plan.step_overrides])


def device_batch(cfg: Any, device: str, size: int | None = None) -> dict[str, torch.Tensor]:
    """A batch of the config's shapes on the device, with every key the data module provides; ``size``
    samples (default the config's batch) tiled on the device from one config-sized batch, so that a
    batch of thousands costs no CPU time to make."""
    batch = fake_batch(cfg)
    b, s = batch["image"].shape[0], cfg.data.preprocess.crop_size
    g = torch.Generator().manual_seed(1)
    batch.update(
        uv=torch.rand(b, 21, 2, generator=g) * s,
        visible=torch.ones(b, 21, dtype=torch.bool),
        K=torch.tensor([[s, 0.0, s / 2], [0.0, s, s / 2], [0.0, 0.0, 1.0]]).expand(b, 3, 3).contiguous(),
        root=torch.zeros(b, 3),
        scale=torch.ones(b),
        rotation=torch.eye(3).expand(b, 3, 3).contiguous(),
    )
    size = size or b
    return {k: v.to(device).repeat(-(-size // b), *[1] * (v.dim() - 1))[:size] for k, v in batch.items()}


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


class StepBench:
    """One strategy on the device with Adam: ``step(batch, precision)`` is a full training step."""

    def __init__(self, name: str, plan: Plan) -> None:
        from crossmodal.registry import STRATEGIES

        self.cfg = step_config(name, plan)
        self.device = plan.device
        self.strategy = STRATEGIES.get(name)(self.cfg.model).to(self.device)
        self.optimizer = torch.optim.Adam(self.strategy.parameters(), lr=self.cfg.optim.lr)

    def step(self, batch: dict[str, torch.Tensor], precision: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, precision):
            loss = self.strategy.losses(batch, 1e-3)["loss"]
        loss.backward()
        self.optimizer.step()

    def encoder_pass(self, batch: dict[str, torch.Tensor], precision: str) -> None:
        """The RGB encoder (ResNet-18 trunk and heads) forward+backward alone: the ceiling of a step."""
        encoder = self.strategy.encoders["image"]
        encoder.zero_grad(set_to_none=True)
        with autocast(self.device, precision):
            q = encoder(batch["image"])
        (q.mu.float().sum() + q.logvar.float().sum()).backward()


def time_steps(plan: Plan, budget: Budget) -> dict[str, Any]:
    from crossmodal.data.datamodule import CrossmodalDataModule
    from crossmodal.registry import STRATEGIES
    from omegaconf import OmegaConf

    dev = plan.device
    rows = []
    names = sorted(STRATEGIES.names(), key=lambda s: LABELS.get(s, s))
    batch_size = None
    for name in names:
        bench = StepBench(name, plan)
        batch = device_batch(bench.cfg, dev)
        batch_size = batch["image"].shape[0]
        passes = [(name, bench.step)] + ([("resnet18", bench.encoder_pass)] if name == "poe" else [])
        for label, fn in passes:
            for precision in PRECISIONS:
                if budget.left() < plan.reserve_s:
                    rows.append({"strategy": label, "precision": precision, "skipped": "time budget"})
                    continue
                free_memory(dev)
                reset_peak(dev)
                seconds = measure(lambda: fn(batch, precision), dev, plan.step_warmup, plan.step_repeats, plan.target_s)
                rows.append({"strategy": label, "precision": precision, "ms": seconds * 1e3,
                             "samples_per_s": batch_size / seconds, "peak_gib": peak_gib(dev)})
                say(f"step {label} {precision}: {seconds * 1e3:.1f} ms, {batch_size / seconds:.0f} samples/s")
        if name == "poe":
            data = CrossmodalDataModule(OmegaConf.to_object(bench.cfg.data), progress=False)
            augment = measure(lambda: data.finish_batch(batch, augment=True), dev, 1, plan.step_repeats, plan.target_s)
        del bench, batch
    ceiling = {r["precision"]: r["samples_per_s"] for r in rows if r["strategy"] == "resnet18" and "ms" in r}
    for r in rows:
        if "ms" in r and r["precision"] in ceiling:
            r["of_ceiling"] = r["samples_per_s"] / ceiling[r["precision"]]
    return {"batch": batch_size, "rows": rows, "augment_ms": augment * 1e3,
            "crop_size": int(step_config("poe", plan).data.preprocess.crop_size),
            "matmul_precision": torch.get_float32_matmul_precision()}


def largest_batch(plan: Plan, budget: Budget) -> dict[str, Any]:
    """S4's full step at doubling batch sizes until one does not fit (or the cap, or the time)."""
    dev = plan.device
    bench = StepBench("poe", plan)
    start = int(bench.cfg.data.batch_size)
    rows = []
    for precision in PRECISIONS:
        size = start
        while size <= plan.batch_cap:
            if budget.left() < 30:
                rows.append({"precision": precision, "batch": size, "skipped": "time budget"})
                break
            free_memory(dev)
            reset_peak(dev)
            try:
                batch = device_batch(bench.cfg, dev, size)
                begin = time.perf_counter()
                bench.step(batch, precision)
                sync(dev)
                seconds = time.perf_counter() - begin
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                batch = None
                bench.optimizer.zero_grad(set_to_none=True)
                free_memory(dev)
                rows.append({"precision": precision, "batch": size, "fits": False})
                say(f"batch {precision} {size}: out of memory")
                break
            del batch
            rows.append({"precision": precision, "batch": size, "fits": True, "ms": seconds * 1e3, "peak_gib": peak_gib(dev)})
            say(f"batch {precision} {size}: {seconds * 1e3:.0f} ms, peak {fmt(peak_gib(dev), '.1f')} GiB")
            if seconds > 20:
                break  # the next one would take too long
            size *= 2
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if dev == "cuda" else None
    return {"rows": rows, "cap": plan.batch_cap, "total_gib": total}
