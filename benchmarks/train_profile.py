"""Where the time of one CPU-profile training step goes, per strategy.

Times forward+backward+Adam of a full step and, within it, each module and each loss
(measured with the autograd profiler's record_function ranges and, for the point-cloud
losses, by direct timing of Chamfer and EMD on the step's shapes). Shares, not absolute
times, are the figure to read: the machine is shared and timings are noisy.

    python benchmarks/train_profile.py [--strategies poe crossmodal] [--steps 3]

Writes benchmarks/results/train_profile.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime
from pathlib import Path

import torch

from crossmodal.config import load_config
from crossmodal.io import atomic_write_text
from crossmodal.ops import chamfer_distance, emd
from crossmodal.registry import STRATEGIES


def fake_batch(cfg) -> dict[str, torch.Tensor]:
    """A batch with the CPU profile's shapes (values do not change the cost of a step)."""
    g = torch.Generator().manual_seed(0)
    b, s, p = cfg.data.batch_size, cfg.data.preprocess.crop_size, cfg.data.num_points
    h = cfg.data.preprocess.heatmap_size
    return {
        "image": torch.rand(b, 3, s, s, generator=g),
        "pose": torch.randn(b, 21, 3, generator=g),
        "cloud": torch.randn(b, p, 3, generator=g),
        "heatmaps": torch.rand(b, 21, h, h, generator=g) * 0.1,
        "labeled": torch.ones(b, dtype=torch.bool),
        "has_cloud": torch.ones(b, dtype=torch.bool),
    }


def time_it(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def profile_strategy(name: str, steps: int) -> list[tuple[str, float]]:
    cfg = load_config(None, ["profile=cpu", f"model.strategy={name}"])
    strategy = STRATEGIES.get(name)(cfg.model)
    batch = fake_batch(cfg)
    optimizer = torch.optim.Adam(strategy.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        strategy.losses(batch, 1e-3)["loss"].backward()
        optimizer.step()

    total = time_it(step, steps)
    rows = [("whole step (forward + backward + Adam)", total)]
    for key, encoder in strategy.encoders.items():
        rows.append((f"encoder {encoder.registry_name} (fwd+bwd, x1)", time_it(lambda: encoder(batch[key]).mu.sum().backward(), steps)))
    z = torch.randn(batch["image"].shape[0], strategy.latent_dim, requires_grad=True)
    for target, decoder in strategy.decoders.items():
        rows.append((f"decoder {decoder.registry_name} + loss (fwd+bwd, x1)", time_it(lambda: decoder.loss(decoder(z), batch[target]).backward(), steps)))
    if "cloud" in strategy.decoders:
        pred = torch.randn_like(batch["cloud"], requires_grad=True)
        rows.append(("  of which Chamfer (fwd+bwd, x1)", time_it(lambda: chamfer_distance(pred, batch["cloud"]).backward(), steps)))
        rows.append(("  of which EMD (fwd+bwd, x1)", time_it(lambda: emd(pred, batch["cloud"]).backward(), steps)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["crossmodal", "extended", "kl_align", "poe"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_profile.md"))
    args = parser.parse_args()
    lines = [
        "# Where a CPU-profile training step spends its time",
        "",
        f"- command: `python benchmarks/train_profile.py --steps {args.steps}`",
        f"- date: {datetime.now().isoformat(timespec='seconds')}; machine: {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__}",
        "- batch and module sizes of the CPU profile (crossmodal/profiles/cpu.yaml); times are means over "
        f"{args.steps} repeats after one warm-up; 'x1' rows are one call, a strategy may call a decoder several "
        "times per step (S3: 2 latents, S4: 3 latents)",
        "",
    ]
    for name in args.strategies:
        rows = profile_strategy(name, args.steps)
        total = rows[0][1]
        lines += [f"## {name}", "", "| part | ms | share of a step |", "|---|---:|---:|"]
        lines += [f"| {label} | {t * 1000:.1f} | {t / total:.0%} |" for label, t in rows]
        lines.append("")
        print("\n".join(lines[-len(rows) - 5 :]))
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
