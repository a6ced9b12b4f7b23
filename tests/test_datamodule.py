"""CrossmodalDataModule over caches of an RHD-format folder: splits, labels, workers, batches."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal.config import AugmentConfig, DataConfig, PreprocessConfig
from crossmodal.data.datamodule import CrossmodalDataModule, LabeledShareSampler
from crossmodal.errors import ConfigError, DataError
from conftest import raises_one_line
from realformat_fixtures import write_rhd_fixture

N_TRAIN, N_TEST = 10, 4


@pytest.fixture(scope="module")
def rhd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rhd")
    write_rhd_fixture(root, "training", num_frames=N_TRAIN, size=160)
    write_rhd_fixture(root, "evaluation", num_frames=N_TEST, size=160, seed=1)
    return root


@pytest.fixture(scope="module")
def base_cfg(rhd_root, tmp_path_factory) -> DataConfig:
    cfg = DataConfig(
        dataset="rhd",
        root=str(rhd_root),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        val_fraction=0.2,
        num_points=32,
        batch_size=4,
        num_workers=0,
        preprocess=PreprocessConfig(crop_size=32, pool_size=64),
    )
    module = CrossmodalDataModule(cfg, progress=False)
    module.prepare_data()  # builds both caches once for the whole module
    return cfg


def datamodule(cfg: DataConfig, stage: str = "fit", **changes) -> CrossmodalDataModule:
    module = CrossmodalDataModule(dataclasses.replace(cfg, **changes), progress=False)
    module.setup(stage)
    return module


def test_prepare_data_builds_both_caches(base_cfg) -> None:
    caches = sorted(p.name for p in Path(base_cfg.cache_dir).glob("*.h5"))
    assert len(caches) == 2 and caches[0].startswith("rhd_evaluation_") and caches[1].startswith("rhd_training_")


def test_splits_and_labels(base_cfg) -> None:
    module = datamodule(base_cfg, labeled_fraction=0.5)
    train, val = module.datasets["train"], module.datasets["val"]
    assert len(train) == 8 and len(val) == 2  # val = the last 20 % of the training cache
    np.testing.assert_array_equal(val.rows, [8, 9])
    np.testing.assert_array_equal(train.labeled, [True] * 4 + [False] * 4)  # first half of the TRAINING part
    assert val.labeled.all()
    unlabeled = train[6]
    assert not unlabeled["labeled"] and unlabeled["pose"].shape == (21, 3)  # labels kept, but flagged
    dropped = datamodule(base_cfg, labeled_fraction=0.5, drop_unlabeled=True).datasets["train"]
    assert len(dropped) == 4 and dropped.labeled.all()
    # labeled_fraction 0.375 keeps 3 of 8: cycled back to 8 rows so an epoch has the full length
    repeated = datamodule(base_cfg, labeled_fraction=0.375, drop_unlabeled=True, repeat_to_full=True).datasets["train"]
    np.testing.assert_array_equal(repeated.rows, [0, 1, 2, 0, 1, 2, 0, 1])
    assert repeated.labeled.all()
    test = datamodule(base_cfg, stage="test").datasets["test"]
    assert len(test) == N_TEST and test.labeled.all()


def test_labeled_per_batch_fixes_each_batch_share(base_cfg) -> None:
    """k labelled and batch_size - k unlabelled frames in every training batch, an epoch as long as
    a uniform loader's, each pool drawn without replacement before it repeats, a seeded order."""
    module = datamodule(base_cfg, labeled_fraction=0.25, labeled_per_batch=1, batch_size=3)  # 2 of 8 labelled
    train = module.datasets["train"]
    loader = module.train_dataloader()
    torch.manual_seed(0)
    epoch = [batch["index"].tolist() for batch in loader]
    assert len(epoch) == len(loader) == math.ceil(8 / 3)
    for batch in loader:
        assert batch["labeled"].tolist() == [True, False, False]
    labelled = [b[0] for b in epoch]
    assert sorted(labelled[:2]) == sorted(train.rows[:2].tolist())  # both labelled frames before a repeat
    unlabelled = [i for b in epoch for i in b[1:]]
    assert sorted(unlabelled) == sorted(train.rows[2:].tolist())  # 3 batches x 2 = the 6 unlabelled frames
    torch.manual_seed(0)
    assert [batch["index"].tolist() for batch in module.train_dataloader()] == epoch
    assert module.val_dataloader().batch_size == 3  # validation batches stay uniform


def test_sampler_cycles_a_pool_smaller_than_an_epoch_needs() -> None:
    labeled = np.array([True, False, False, False, False, False, False, False, False, False])
    sampler = LabeledShareSampler(labeled, batch_size=4, per_batch=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    assert [b[:2] for b in batches] == [[0, 0]] * 3  # the one labelled frame, cycled
    rest = [i for b in batches for i in b[2:]]
    assert len(rest) == 6 and len(set(rest)) == 6 and not labeled[rest].any()


@pytest.mark.parametrize("overrides, fragment", [
    ({"labeled_per_batch": 4, "labeled_fraction": 0.5}, "data.labeled_per_batch must be 0"),
    ({"labeled_per_batch": -1, "labeled_fraction": 0.5}, "data.labeled_per_batch must be 0"),
    ({"labeled_per_batch": 1}, "needs data.labeled_fraction < 1"),
    ({"labeled_per_batch": 1, "labeled_fraction": 0.5, "drop_unlabeled": True}, "data.drop_unlabeled=false"),
])
def test_labeled_per_batch_errors(base_cfg, overrides, fragment) -> None:
    with pytest.raises(ConfigError) as excinfo:
        CrossmodalDataModule(dataclasses.replace(base_cfg, **overrides))
    raises_one_line(excinfo, fragment)


def check_batch(batch: dict[str, torch.Tensor], size: int, points: int) -> None:
    b = len(batch["index"])
    expected = {
        "image": ((b, 3, size, size), torch.float32),
        "pose": ((b, 21, 3), torch.float32),
        "cloud": ((b, points, 3), torch.float32),
        "uv": ((b, 21, 2), torch.float32),
        "visible": ((b, 21), torch.bool),
        "labeled": ((b,), torch.bool),
        "uv_only": ((b,), torch.bool),
        "has_cloud": ((b,), torch.bool),
        "K": ((b, 3, 3), torch.float32),
        "root": ((b, 3), torch.float32),
        "scale": ((b,), torch.float32),
        "rotation": ((b, 3, 3), torch.float32),
        "index": ((b,), torch.int64),
        "heatmaps": ((b, 21, 64, 64), torch.float32),
    }
    assert set(batch) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0 and batch["image"].std() > 0.01
    assert batch["has_cloud"].all()
    torch.testing.assert_close(batch["pose"][:, 0], torch.zeros(b, 3), atol=1e-6, rtol=0)  # root-relative
    bone = (batch["pose"][:, 12] - batch["pose"][:, 11]).norm(dim=-1)
    torch.testing.assert_close(bone, torch.ones(b), atol=1e-5, rtol=0)  # unit bone 12 -> 11
    assert batch["cloud"].abs().max() < 10.0  # normalised: a few bone lengths around the root
    assert (batch["scale"] > 0.01).all() and (batch["scale"] < 0.1).all()  # metres
    assert (batch["root"][:, 2] > 0.2).all()  # in front of the camera
    torch.testing.assert_close(batch["rotation"] @ batch["rotation"].transpose(1, 2), torch.eye(3).expand(b, 3, 3), atol=1e-5, rtol=0)
    joints = batch["pose"] * batch["scale"][:, None, None] + batch["root"][:, None]
    projected = joints @ batch["K"].transpose(1, 2)
    torch.testing.assert_close(projected[..., :2] / projected[..., 2:], batch["uv"], atol=2e-3, rtol=0)
    assert 0.0 <= batch["heatmaps"].min() and batch["heatmaps"].max() <= 1.0


def test_batches_from_two_workers_meet_the_contract(base_cfg) -> None:
    module = datamodule(base_cfg, num_workers=2)
    # h5py handles cannot cross processes: each worker must open the file itself.
    batches = [module.on_after_batch_transfer(batch, 0) for batch in module.train_dataloader()]
    assert sum(len(b["index"]) for b in batches) == 8
    for batch in batches:
        check_batch(batch, 32, 32)
    seen = torch.cat([b["index"] for b in batches]).sort().values
    np.testing.assert_array_equal(seen.numpy(), np.arange(8))
    val_serial = next(iter(datamodule(base_cfg).val_dataloader()))
    val_parallel = next(iter(module.val_dataloader()))
    for key in val_serial:
        torch.testing.assert_close(val_parallel[key], val_serial[key])  # eval draws are deterministic


def test_cloud_points_are_redrawn_each_step_from_the_pool(base_cfg) -> None:
    train = datamodule(base_cfg).datasets["train"]
    reader_pool = train.reader[0]["cloud"]
    count = int(train.reader[0]["cloud_count"])
    first, second = train[0]["cloud"], train[0]["cloud"]
    assert not torch.equal(first, second)
    pool_points = {tuple(p) for p in reader_pool[:count].tolist()}
    assert all(tuple(p) in pool_points for p in first.tolist())
    assert len({tuple(p) for p in first.tolist()}) == 32  # without replacement while the pool allows
    val = datamodule(base_cfg).datasets["val"]
    torch.testing.assert_close(val[0]["cloud"], val[0]["cloud"])


class _Probe(L.LightningModule):
    """Records what training_step receives, to check augmentation happens on train only."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.train_batches: list[dict] = []
        self.val_batches: list[dict] = []

    def training_step(self, batch, batch_idx):
        self.train_batches.append(batch)
        return (self.weight * batch["image"].mean()).sum()

    def validation_step(self, batch, batch_idx):
        self.val_batches.append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_augments_training_batches_only(base_cfg) -> None:
    cfg = dataclasses.replace(base_cfg, augment=AugmentConfig(rotate=3.0, hue=0.0))
    module = CrossmodalDataModule(cfg, progress=False)
    probe = _Probe()
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    torch.manual_seed(0)
    trainer.fit(probe, datamodule=module)
    trainer.validate(probe, datamodule=module, verbose=False)
    train_batch, val_batch = probe.train_batches[0], probe.val_batches[0]
    check_batch(train_batch, 32, 32)
    check_batch(val_batch, 32, 32)
    # Validation keeps the cached geometry; training batches were rotated about the view axis.
    plain = module.datasets["val"][0]
    torch.testing.assert_close(val_batch["K"][0], plain["K"])
    angle = torch.atan2(train_batch["rotation"][:, 1, 0], train_batch["rotation"][:, 0, 0])
    cached = torch.stack([torch.from_numpy(module.datasets["train"].reader[int(i)]["rotation"]) for i in train_batch["index"]])
    cached_angle = torch.atan2(cached[:, 1, 0], cached[:, 0, 0])
    assert (angle - cached_angle).abs().max() > 0.05


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_labeled_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"data.labeled_fraction must be in \(0, 1\]"):
        CrossmodalDataModule(DataConfig(labeled_fraction=fraction))


def test_empty_split_is_an_error(base_cfg, tmp_path) -> None:
    with pytest.raises(DataError, match="training split of cache .* is empty"):
        datamodule(base_cfg, val_fraction=0.95)
    # A test split whose every frame has an empty hand mask: all skipped, nothing cached.
    root = tmp_path / "rhd"
    write_rhd_fixture(root, "training", num_frames=2, size=96)
    evaluation = write_rhd_fixture(root, "evaluation", num_frames=2, size=96)
    for frame_id in evaluation.annotations:
        Image.fromarray(np.zeros((96, 96), dtype=np.uint8)).save(evaluation.path("mask", frame_id))
    cfg = dataclasses.replace(base_cfg, root=str(root), cache_dir=str(tmp_path / "cache"))
    module = CrossmodalDataModule(cfg, progress=False)
    module.prepare_data()
    with pytest.raises(DataError, match="test split of cache .* is empty"):
        module.setup("test")


def test_missing_cache_names_the_build_command(base_cfg, tmp_path) -> None:
    cfg = dataclasses.replace(base_cfg, cache_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"python -m crossmodal cache --dataset rhd --root {base_cfg.root} --split training"):
        datamodule(cfg)
