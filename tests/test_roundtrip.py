"""End to end on real files: synthetic generator -> RHD-format reader -> HDF5 cache -> datamodule batch.

Also STB's format (mask-less, separate depth camera) through the same cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossmodal.config import DataConfig, PreprocessConfig, SynthConfig
from crossmodal.data import geometry
from crossmodal.data.cache import build_cache, open_cache
from crossmodal.data.datamodule import CrossmodalDataModule
from crossmodal.data.pointcloud import distance_to_skeleton
from crossmodal.data.stb import STBDataset
from realformat_fixtures import write_stb_fixture
from test_datamodule import check_batch

PRE = PreprocessConfig(crop_size=64, pool_size=256)


@pytest.fixture(scope="module")
def synthetic_module(tmp_path_factory) -> CrossmodalDataModule:
    work = tmp_path_factory.mktemp("roundtrip")
    cfg = DataConfig(
        dataset="synthetic",
        root=str(work / "synthetic"),  # absent: prepare_data generates it
        cache_dir=str(work / "cache"),
        synthetic=SynthConfig(train=10, test=4, seed=3),
        val_fraction=0.2,
        num_points=64,
        batch_size=4,
        num_workers=2,
        labeled_fraction=0.5,
        preprocess=PRE,
    )
    module = CrossmodalDataModule(cfg, progress=False)
    module.prepare_data()
    module.setup(None)
    return module


def joints_and_cloud(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised (metres, corrected camera frame) joints and distinct cloud points."""
    scale, root = float(sample["scale"]), sample["root"].astype(np.float64)
    joints = sample["pose"] * scale + root
    cloud = sample["cloud"][: int(sample["cloud_count"])] * scale + root
    return joints, cloud


def test_generated_frames_reach_the_batch(synthetic_module) -> None:
    cfg = synthetic_module.cfg
    assert (Path(cfg.root) / "training" / "anno_training.pickle").is_file()
    assert len(synthetic_module.datasets["train"]) + len(synthetic_module.datasets["val"]) == 10
    batches = [synthetic_module.on_after_batch_transfer(b, 0) for b in synthetic_module.train_dataloader()]
    for batch in batches:
        check_batch(batch, PRE.crop_size, cfg.num_points)
    labeled = np.concatenate([b["labeled"].numpy() for b in batches])
    assert labeled.sum() == 4  # first half of the 8 training samples
    test_batch = synthetic_module.on_after_batch_transfer(next(iter(synthetic_module.test_dataloader())), 0)
    check_batch(test_batch, PRE.crop_size, cfg.num_points)
    assert test_batch["labeled"].all()


def test_cloud_lies_on_the_hand(synthetic_module) -> None:
    reader = synthetic_module.datasets["train"].reader
    distances = []
    for i in range(len(reader)):
        joints, cloud = joints_and_cloud(reader[i])
        assert len(cloud) == PRE.pool_size
        d = distance_to_skeleton(cloud, joints)
        assert np.percentile(d, 99) < 0.035  # no background or flying pixels left
        distances.append(d)
    assert np.concatenate(distances).mean() < 0.015


def test_uv_is_projection_and_hand_is_centred(synthetic_module) -> None:
    reader = synthetic_module.datasets["train"].reader
    centre = (PRE.crop_size - 1) / 2.0
    for i in range(len(reader)):
        sample = reader[i]
        joints, cloud = joints_and_cloud(sample)
        np.testing.assert_allclose(geometry.project(joints, sample["K_crop"]), sample["uv"], atol=1e-3)
        np.testing.assert_allclose(sample["K_crop"][:2, 2], centre)
        # After view correction the hand's points surround the optical axis.
        hand_centre = geometry.project(cloud.mean(axis=0), sample["K_crop"])
        assert np.abs(hand_centre - centre).max() < PRE.crop_size * 0.15


def test_stb_format_round_trip(tmp_path) -> None:
    write_stb_fixture(tmp_path / "stb", sequences=("B1Counting", "B1Random"), num_frames=2)
    report = build_cache(STBDataset(tmp_path / "stb", "test"), tmp_path / "stb.h5", PRE, workers=0, progress=False)
    assert (report.written, report.skipped) == (4, 0)
    reader = open_cache(tmp_path / "stb.h5", PRE)
    for i in range(len(reader)):
        sample = reader[i]
        joints, cloud = joints_and_cloud(sample)
        assert len(cloud) > 50
        assert distance_to_skeleton(cloud, joints).mean() < 0.015
        np.testing.assert_allclose(geometry.project(joints, sample["K_crop"]), sample["uv"], atol=1e-3)
        assert np.all((sample["uv"] > 0) & (sample["uv"] < PRE.crop_size))
