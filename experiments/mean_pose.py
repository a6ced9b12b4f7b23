"""Sanity anchor: predict the labelled training frames' mean pose for every frame.

A model's EPE means something only beside what knowing nothing about the image gives. The mean
is taken in the frame the model is trained in (after the config's view correction, orientation
and mirroring), over the labelled training rows, and scored by the protocol on the validation
and test splits.

    PYTHONPATH=. python experiments/mean_pose.py experiments/table1/s1_r_p.yaml [key=value ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from crossmodal.config import load_config
from crossmodal.metrics import KeypointMetrics
from crossmodal.data.datamodule import build_datamodule


def mean_pose_epe(cfg) -> dict[str, float]:
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup(None)
    train = dm.datasets["train"]
    poses = train.reader.columns["pose"]
    mean = poses[train.rows[train.labeled]].mean(axis=0)
    out = {"labelled_frames": int(train.labeled.sum())}
    for split in ("val", "test"):
        ds = dm.datasets[split]
        cols = ds.reader.columns
        rows = ds.rows
        metric = KeypointMetrics(palm_is_joint0=cfg.data.dataset == "stb")
        gt = torch.from_numpy(cols["pose"][rows])
        metric.update(torch.from_numpy(np.broadcast_to(mean, gt.shape).copy()), gt,
                      torch.from_numpy(cols["scale"][rows]).float(), torch.from_numpy(cols["visible"][rows]))
        out[f"{split}_epe_mean"] = float(metric.compute()["epe_mean"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a training config, e.g. experiments/table1/s1_r_p.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. profile=cpu-long")
    args = parser.parse_args()
    result = mean_pose_epe(load_config(args.config, args.overrides))
    print(f"mean pose of {result['labelled_frames']} labelled training frames: "
          f"validation EPE {result['val_epe_mean']:.2f} mm, test EPE {result['test_epe_mean']:.2f} mm")


if __name__ == "__main__":
    main()
