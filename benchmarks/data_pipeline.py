"""Data pipeline throughput: the cached loader vs decoding and preprocessing every sample.

Both loaders read the same synthetic frames (generated here in RHD's on-disk format)
with the same batch size and number of DataLoader workers, one after the other in
one run:

* cached: ``CrossmodalDataModule.train_dataloader()`` over the HDF5 cache;
* raw: a DataLoader whose dataset decodes the colour/depth/mask PNGs with the RHD
  reader and runs ``preprocess_frame`` (crop, view correction, cloud, FPS) per sample.

Writes the figures to ``benchmarks/results/data_pipeline.md``.

    python benchmarks/data_pipeline.py --frames 256 --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from crossmodal.config import DataConfig, PreprocessConfig, SynthConfig
from crossmodal.data.datamodule import CrossmodalDataModule
from crossmodal.data.preprocess import preprocess_frame
from crossmodal.data.rhd import SyntheticDataset
from crossmodal.errors import EmptyHandError
from crossmodal.io import atomic_write_text


class DecodeAndPreprocess(Dataset):
    """The uncached path: PNG decoding + full preprocessing for every sample access."""

    def __init__(self, frames: SyntheticDataset, cfg: PreprocessConfig, num_points: int) -> None:
        self.frames = frames
        self.cfg = cfg
        self.num_points = num_points

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        try:
            sample = preprocess_frame(self.frames[i], self.cfg)
        except EmptyHandError:
            sample = preprocess_frame(self.frames[(i + 1) % len(self.frames)], self.cfg)
        count = max(int(sample["cloud_count"]), 1)
        pick = torch.randint(count, (self.num_points,)).numpy()
        return {
            "image": torch.from_numpy(sample["image"]).permute(2, 0, 1).float().div_(255.0),
            "pose": torch.from_numpy(sample["pose"]),
            "cloud": torch.from_numpy(sample["cloud"][pick]),
            "uv": torch.from_numpy(sample["uv"]),
            "visible": torch.from_numpy(sample["visible"]),
            "K": torch.from_numpy(sample["K_crop"]),
            "root": torch.from_numpy(sample["root"]),
            "scale": torch.tensor(float(sample["scale"])),
            "rotation": torch.from_numpy(sample["rotation"]),
            "index": torch.tensor(int(sample["index"])),
        }


def samples_per_second(loader: DataLoader, max_samples: int, desc: str) -> tuple[float, int]:
    """Iterate ``loader`` until ``max_samples`` samples (after one warm-up batch); return (rate, samples)."""
    iterator = iter(loader)
    next(iterator)  # worker start-up and file opening are not steady-state throughput
    seen = 0
    started = time.perf_counter()
    with tqdm(total=max_samples, desc=desc, unit="sample") as bar:
        while seen < max_samples:
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                continue
            seen += len(batch["index"])
            bar.update(len(batch["index"]))
    return seen / (time.perf_counter() - started), seen


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=256, help="synthetic training frames")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for both loaders")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crop-size", type=int, default=PreprocessConfig.crop_size)
    parser.add_argument("--pool-size", type=int, default=PreprocessConfig.pool_size)
    parser.add_argument("--num-points", type=int, default=DataConfig.num_points)
    parser.add_argument("--cached-samples", type=int, default=4096, help="samples timed on the cached loader")
    parser.add_argument("--raw-samples", type=int, default=256, help="samples timed on the raw loader")
    parser.add_argument("--work", type=Path, default=None, help="folder for frames and caches (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_pipeline.md")
    args = parser.parse_args(argv)

    work_dir = args.work or Path(tempfile.mkdtemp(prefix="crossmodal-bench-"))
    pre = PreprocessConfig(crop_size=args.crop_size, pool_size=args.pool_size)
    cfg = DataConfig(
        dataset="synthetic",
        root=str(work_dir / "synthetic"),
        cache_dir=str(work_dir / "cache"),
        synthetic=SynthConfig(train=args.frames, test=8, seed=0),
        val_fraction=0.0,
        num_points=args.num_points,
        batch_size=args.batch_size,
        num_workers=args.workers,
        preprocess=pre,
    )
    module = CrossmodalDataModule(cfg)
    started = time.perf_counter()
    module.prepare_data()  # generates the frames and builds the caches (timed for the record only)
    prepare_s = time.perf_counter() - started
    module.setup("fit")
    train_rows = len(module.datasets["train"])

    # Timed first, before any loader has workers that could still be prefetching in the background.
    batch = next(iter(DataLoader(module.datasets["train"], batch_size=args.batch_size)))
    started = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        module.finish_batch(batch, augment=True)
    finish_rate = repeats * len(batch["index"]) / (time.perf_counter() - started)

    cached_rate, cached_n = samples_per_second(module.train_dataloader(), args.cached_samples, "cached loader")
    raw_loader = DataLoader(
        DecodeAndPreprocess(SyntheticDataset(cfg.root, "training"), pre, args.num_points),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    raw_rate, raw_n = samples_per_second(raw_loader, args.raw_samples, "decode + preprocess")

    ratio = cached_rate / raw_rate
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    report = f"""# Data pipeline throughput

- command: `{command}`
- date: {datetime.datetime.now().isoformat(timespec="seconds")}
- machine: {os.cpu_count()} CPU cores ({cpu_name()}), no GPU, shared with other jobs
  (1-minute load average {load:.1f} at the end of the run); torch {torch.__version__}
- both loaders are timed one after the other in this one run; absolute rates move with the
  load of the shared machine
- data: {args.frames} synthetic frames (320x320, RHD format), {train_rows} cached training samples;
  crop {pre.crop_size} px, pool {pre.pool_size} points, {args.num_points} points per sample,
  batch {args.batch_size}, {args.workers} DataLoader workers for both loaders
- generating the frames and building both caches took {prepare_s:.1f} s

| loader | samples timed | samples/s |
|---|---:|---:|
| cached (CrossmodalDataModule.train_dataloader, HDF5) | {cached_n} | {cached_rate:.0f} |
| decode PNGs + preprocess per sample | {raw_n} | {raw_rate:.1f} |
| **speed-up** | | **{ratio:.1f}x** |

Augmentation + heatmaps on a loaded batch (``finish_batch``, CPU, main process):
{finish_rate:.0f} samples/s; on a GPU this runs on the device after transfer.
"""
    atomic_write_text(args.out, report)
    print(report)
    if args.work is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
