"""Training speed through the Lightning trainer: ms per step and samples/s, side by side.

Each variant (a strategy plus ``key=value`` overrides on the CPU profile) trains for
``--warmup`` steps, then ``--steps`` timed steps, on the real cache: data loading,
augmentation, forward, backward, Adam and the logging all count, as in ``make train``.
Variants run one after the other in one process, so their ratios are comparable; the
absolute times are noisy on a shared machine.

    python benchmarks/trainer_step.py                         # S1 and S4 of the CPU profile
    python benchmarks/trainer_step.py --variant "S4 bf16=model.strategy=poe trainer.precision=bf16-mixed"

Writes benchmarks/results/trainer_step.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from crossmodal.config import load_config
from crossmodal.io import atomic_write_text
from crossmodal.module import CrossmodalModule
from crossmodal.data.datamodule import build_datamodule
from crossmodal.train import _precision

DEFAULT_VARIANTS = ["S1=model.strategy=crossmodal", "S4=model.strategy=poe"]


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, 0.0, 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        self.steps = trainer.global_step - self.warmup

    def seconds_per_step(self) -> float:
        return (time.perf_counter() - self.start) / max(1, self.steps)


def time_variant(overrides: list[str], warmup: int, steps: int) -> tuple[float, int]:
    cfg = load_config(None, ["profile=cpu", "trainer.progress=false", *overrides])
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    module = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=_precision(cfg), max_steps=warmup + steps, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], gradient_clip_val=cfg.optim.grad_clip or None, log_every_n_steps=cfg.trainer.log_every_n_steps,
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds_per_step(), int(cfg.data.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", help="LABEL=key=value key=value ... (repeatable)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_step.md"))
    args = parser.parse_args()
    variants = args.variant or DEFAULT_VARIANTS
    rows = []
    for variant in variants:
        label, _, rest = variant.partition("=")
        seconds, batch = time_variant(rest.split(), args.warmup, args.steps)
        rows.append((label, rest, seconds, batch))
        print(f"{label}: {seconds * 1000:.0f} ms/step, {batch / seconds:.1f} samples/s", flush=True)
    base = rows[0][2]
    lines = [
        "# Training step time through the trainer (CPU profile)",
        "",
        f"- command: `python benchmarks/trainer_step.py " + " ".join(f'--variant "{v}"' for v in variants)
        + f" --warmup {args.warmup} --steps {args.steps}`",
        f"- date: {datetime.now().isoformat(timespec='seconds')}; machine: {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__}",
        f"- each variant: {args.warmup} warm-up steps, then {args.steps} timed steps of `trainer.fit` on the cached"
        " synthetic data (loading, augmentation, forward, backward, Adam, logging); ratios are to the first row",
        "",
        "| variant | overrides | ms / step | samples / s | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | `{rest}` | {s * 1000:.0f} | {b / s:.1f} | {s / base:.2f} |" for label, rest, s, b in rows]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
