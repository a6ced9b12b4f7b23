"""Self-supervised pre-training of the RGB encoder's trunk on every training image, no labels.

    python -m crossmodal pretrain [config.yaml] [key=value ...] --steps 2000 --out runs/pretrain

The config's data section picks the frames (the same cache as ``train``); every training frame
is used whatever ``data.labeled_fraction`` says, and none of its labels is read. The method is
the equivariant contrastive loss of ``crossmodal.contrastive`` (PeCLR). ``OUT/trunk.pt`` holds the
trunk's state dict under torchvision's names, which ``rgb_resnet18``'s ``pretrained_path`` loads;
``OUT/pretrain.json`` the settings, the loss curve and the time it took (to add to the cost of
the rows trained from it). An interrupted pre-training resumes from ``OUT/pretrain_state.pt``
(saved every 100 steps), with a new pass over the frames from there.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossmodal import contrastive
from crossmodal.errors import ConfigError

# An interrupted pre-training (a campaign's session ending) resumes from its last saved state in
# OUT; the state goes once trunk.pt and pretrain.json are written.
STATE_FILE = "pretrain_state.pt"
SAVE_EVERY = 100


@dataclass
class PretrainSettings:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 0.5
    points: int = 64  # the projection head's 2D points (a 2 * points embedding)
    max_degrees: float = 45.0  # each view's rotation is uniform in +- this
    max_shift: float = 0.15  # ... and its shift in +- this (normalised crop coordinates)
    jitter: float = 0.3  # brightness and contrast are scaled by a factor in 1 +- this

    def check(self) -> None:
        for name in ("steps", "batch_size", "points"):
            if getattr(self, name) < 1 or (name == "batch_size" and self.batch_size < 2):
                raise ConfigError(f"pretrain: --{name.replace('_', '-')} must be >= {2 if name == 'batch_size' else 1}, "
                                  f"got {getattr(self, name)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ConfigError(f"pretrain: --lr and --temperature must be > 0, got {self.lr} and {self.temperature}")


class PretrainNet(nn.Module):
    """The RGB encoder's trunk (its own normalisation) and a projection head to 2D points."""

    def __init__(self, points: int) -> None:
        super().__init__()
        from crossmodal.registry import ENCODERS

        encoder = ENCODERS.build("rgb_resnet18", latent_dim=8)
        self.trunk = encoder.trunk
        self.register_buffer("pixel_mean", encoder.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", encoder.pixel_std.clone(), persistent=False)
        width = self.trunk.out_channels
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, 2 * points))
        self.points = points

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk((images - self.pixel_mean) / self.pixel_std)
        return self.head(features).view(-1, self.points, 2)


def _jitter(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    b = images.shape[0]
    brightness = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * amount
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * amount
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contrast + mean * brightness).clamp(0, 1)


def pretrain(cfg: Any, settings: PretrainSettings, out: Path, progress: bool = True) -> dict[str, Any]:
    """Pre-train on the training frames of ``cfg.data``; writes ``out/trunk.pt`` and ``out/pretrain.json``."""
    from omegaconf import OmegaConf

    from crossmodal.io import atomic_write_text
    from crossmodal.data.datamodule import build_datamodule

    settings.check()
    data_cfg = OmegaConf.merge(cfg, {"data": {"labeled_fraction": 1.0, "drop_unlabeled": False, "labeled_per_batch": 0,
                                              "batch_size": settings.batch_size}})
    datamodule = build_datamodule(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    frames = len(datamodule.datasets["train"])
    torch.manual_seed(int(cfg.seed))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    net = PretrainNet(settings.points)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / settings.steps)))
    state_path = out / STATE_FILE
    # Identifies the run a saved state belongs to: resuming another one would mix two trainings.
    identity = {"settings": asdict(settings), "seed": int(cfg.seed), "frames": frames}
    losses: list[float] = []
    resumed_at: list[int] = []
    earlier_wall_s = earlier_cpu_s = 0.0
    step = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        if state["identity"] != identity:
            raise ConfigError(f"pretrain: {state_path} holds an unfinished pre-training with other settings, seed or "
                              f"frames ({state['identity']}); remove it or choose another --out")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, losses, resumed_at = int(state["step"]), list(state["losses"]), [*state["resumed_at"], int(state["step"])]
        earlier_wall_s, earlier_cpu_s = float(state["wall_s"]), float(state["cpu_s"])
        if progress:
            print(f"[pretrain] resuming from {state_path} at step {step}/{settings.steps}", flush=True)
    started, cpu_started = time.perf_counter(), time.process_time()

    def save_state() -> None:
        out.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".part")
        torch.save({"identity": identity, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(), "step": step, "losses": losses, "resumed_at": resumed_at,
                    "wall_s": earlier_wall_s + time.perf_counter() - started,
                    "cpu_s": earlier_cpu_s + time.process_time() - cpu_started}, tmp)
        tmp.replace(state_path)

    net.train()
    while step < settings.steps:
        for batch in datamodule.train_dataloader():
            images = batch["image"]
            if images.shape[0] < 2:
                continue
            views, transforms = [], []
            for _ in range(2):
                rotation, shift = contrastive.random_transforms(images.shape[0], settings.max_degrees, settings.max_shift,
                                                                generator)
                views.append(contrastive.warp(_jitter(images, settings.jitter, generator), rotation, shift))
                transforms.append((rotation, shift))
            points = net(torch.cat(views)).split(images.shape[0])
            loss = contrastive.equivariant_loss(points[0], points[1], transforms[0], transforms[1], settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if progress and (step % 50 == 0 or step == settings.steps):
                print(f"[pretrain] step {step}/{settings.steps}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}, "
                      f"{earlier_wall_s + time.perf_counter() - started:.0f} s", flush=True)
            if step >= settings.steps:
                break
            if step % SAVE_EVERY == 0:
                save_state()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "trunk.pt.part"
    torch.save(net.trunk.state_dict(), tmp)
    tmp.replace(out / "trunk.pt")
    record = {"settings": asdict(settings), "frames": frames, "data_root": str(cfg.data.root), "seed": int(cfg.seed),
              "loss_first": losses[0], "loss_last": sum(losses[-50:]) / len(losses[-50:]), "losses": losses,
              "wall_s": earlier_wall_s + time.perf_counter() - started,
              "cpu_s": earlier_cpu_s + time.process_time() - cpu_started,
              "torch_threads": torch.get_num_threads(), "trunk": str(out / "trunk.pt"), "resumed_at": resumed_at}
    atomic_write_text(out / "pretrain.json", json.dumps(record, indent=1) + "\n")
    state_path.unlink(missing_ok=True)
    return record
