"""How much each loss term weighs, and how hard it pulls on the RGB encoder.

    python experiments/term_scales.py experiments/table1/s4_rc_chp.yaml profile=cpu [--ckpt PATH] [--batches 4]

For a strategy's loss (weights included, beta at its end value), prints per term: its mean
value over a few training batches, and the norm of its gradient on the RGB encoder (the part
used at inference) and on the pose decoder. When a strategy with more decoders does worse
than one with fewer, this tells whether an auxiliary term drowns the pose term's gradient.
Without ``--ckpt`` the model is freshly initialised (the seed of the config); with it, the
trained weights are used. Writes ``experiments/results/term_scales_<config stem>[_<ckpt run>].md``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from crossmodal.config import load_config
from crossmodal.io import atomic_write_text
from crossmodal.module import CrossmodalModule
from crossmodal.data.datamodule import build_datamodule


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    squares = [(g.float() ** 2).sum() for g in grads if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0  # 0: the term does not reach them


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a row config, e.g. experiments/table1/s4_rc_chp.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value")
    parser.add_argument("--ckpt", default=None, help="trained checkpoint of the same config (default: fresh weights)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--out", default="experiments/results")
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(cfg.seed)
    if args.ckpt:
        module = CrossmodalModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    else:
        module = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))
    module.train()
    strategy = module.strategy
    rgb = [p for p in strategy.encoders["image"].parameters() if p.requires_grad]
    pose_dec = [p for p in strategy.decoders["pose"].parameters() if p.requires_grad]
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for _ in range(args.batches):
        batch = dm.finish_batch(next(loader), augment=False)
        terms = strategy.losses(batch, beta=cfg.model.beta_end)
        for name, value in terms.items():
            s = sums[name]
            s[0] += float(value.detach()) / args.batches
            s[1] += grad_norm(value, rgb) / args.batches
            s[2] += grad_norm(value, pose_dec) / args.batches
    source = f"trained weights of {args.ckpt}" if args.ckpt else f"fresh weights (seed {cfg.seed})"
    lines = [
        f"# Loss terms of {args.config} ({cfg.model.strategy})",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- {source}; mean over {args.batches} training batches of {cfg.data.batch_size}; beta = {cfg.model.beta_end:g}",
        "- values include their weights (lambda_heat, lambda_cloud, beta); gradient norms are of each term alone",
        "",
        "| term | value | grad norm, RGB encoder | grad norm, pose decoder |",
        "|---|---:|---:|---:|",
    ]
    for name, (value, g_rgb, g_pose) in sums.items():
        lines.append(f"| {name} | {value:.4g} | {g_rgb:.4g} | {g_pose:.4g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    suffix = f"_{Path(args.ckpt).resolve().parent.parent.name}" if args.ckpt else ""
    atomic_write_text(Path(args.out) / f"term_scales_{Path(args.config).stem}{suffix}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
