"""The first bug check of a training pipeline: can S1 memorise one batch of training frames?

    python experiments/overfit_check.py --mode vae   # z sampled from q(z|x), the KL at beta 1e-5
    python experiments/overfit_check.py --mode mu    # z = mu: the encoder-decoder alone

Takes the first batch of the CPU profile's training split (no augmentation), trains the RGB
encoder and pose decoder on it alone with Adam (no Lightning, so no validation-driven
learning-rate drops) and prints the pose loss (squared error summed over joints, normalised
units) every 20 steps. A pipeline whose images and poses disagree (a wrong crop, an augmentation
applied to one but not the other) cannot drive this loss down; a sound one memorises the batch.
"""

from __future__ import annotations

import argparse
import time

import torch
from omegaconf import OmegaConf

from crossmodal.config import load_config
from crossmodal.module import CrossmodalModule
from crossmodal.data.datamodule import build_datamodule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("vae", "mu"), default="vae")
    parser.add_argument("--frames", type=int, default=64, help="the batch to memorise")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    cfg = load_config("experiments/table1/s1_r_p.yaml", ["profile=cpu", "data.num_workers=0", "data.augment.enabled=false",
                                                         f"data.batch_size={args.frames}"])
    torch.manual_seed(0)
    strategy = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True)).strategy
    strategy.train()
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = dm.finish_batch(next(iter(dm.train_dataloader())), augment=False)
    encoder, decoder = strategy.encoders["image"], strategy.decoders["pose"]
    optimizer = torch.optim.Adam(strategy.parameters(), lr=args.lr)
    start = time.time()
    for step in range(args.steps + 1):
        q = encoder(batch["image"])
        z = q.mu if args.mode == "mu" else q.mu + torch.randn_like(q.mu) * q.logvar.mul(0.5).exp()
        loss = decoder.loss(decoder(z), batch["pose"])
        if args.mode == "vae":
            loss = loss + cfg.model.beta_start * (0.5 * (q.mu**2 + q.logvar.exp() - 1 - q.logvar).sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            sigma = q.logvar.mul(0.5).exp().mean().item()
            print(f"{args.mode} step {step:4d}  loss {loss.item():8.2f}  mean sigma {sigma:.3f}  {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
