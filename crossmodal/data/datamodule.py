"""LightningDataModule over the HDF5 caches: splits, weak labels, cloud draws, augmentation.

Batch contract (after ``on_after_batch_transfer``; the loaders yield all but ``heatmaps``):

    image     float32 (B, 3, S, S) in [0, 1]     pose     (B, 21, 3) normalised
    cloud     (B, P, 3) normalised               uv       (B, 21, 2) crop pixels
    visible   (B, 21) bool                       labeled  (B,) bool
    has_cloud (B,) bool                          K        (B, 3, 3) crop intrinsics
    root      (B, 3) metres                      scale    (B,) metres
    rotation  (B, 3, 3)                          index    (B,) long
    heatmaps  (B, 21, 64, 64), made on the device after augmentation (train only)

Splits: train/val come from the training cache (val = its last ``val_fraction``),
test from the test cache. Weak supervision: the first ``labeled_fraction`` of the
training part keeps ``labeled`` True; the rest keeps its pose/uv tensors but is
flagged ``labeled`` False (or dropped with ``drop_unlabeled``). Val and test are
always labelled. With ``labeled_per_batch`` = k every training batch holds k labelled
frames and the rest unlabelled (``LabeledShareSampler``) instead of a uniform draw.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from crossmodal.config import DataConfig
from crossmodal.data.augment import augment_batch, crop_error_table
from crossmodal.data.cache import CacheReader, ensure_cache
from crossmodal.data.heatmaps import make_heatmaps
from crossmodal.errors import ConfigError, DataError


class CachedHandDataset(Dataset):
    """Torch view of some rows of a cache; the HDF5 file opens lazily in each worker.

    ``labeled`` holds one flag per selected row. With ``random_points`` each access
    draws ``num_points`` of the sample's distinct pool points at random (training);
    otherwise it takes the first ``num_points`` of the farthest-point ordering, a
    deterministic, well-spread subset (evaluation).
    """

    def __init__(
        self,
        reader: CacheReader,
        rows: np.ndarray,
        labeled: np.ndarray,
        num_points: int,
        random_points: bool,
        unlabeled_2d: bool = False,
    ) -> None:
        self.reader = reader
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labeled = np.asarray(labeled, dtype=bool)
        # Frames without a 3D label that keep their 2D keypoints.
        self.uv_only = ~self.labeled if unlabeled_2d else np.zeros_like(self.labeled)
        self.num_points = num_points
        self.random_points = random_points

    def __len__(self) -> int:
        return len(self.rows)

    def _draw_points(self, pool: np.ndarray, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros((self.num_points, 3), dtype=np.float32)
        if not self.random_points:
            return pool[np.arange(self.num_points) % count]
        # torch's RNG: DataLoader seeds it differently in every worker and epoch.
        if count >= self.num_points:
            pick = torch.randperm(count)[: self.num_points].numpy()
        else:
            pick = torch.randint(count, (self.num_points,)).numpy()
        return pool[pick]

    def labelled_poses(self) -> np.ndarray:
        """(N, 21, 3) the 3D poses of the distinct labelled rows (what bounds may be derived from)."""
        rows = np.unique(self.rows[self.labeled])
        return np.asarray(self.reader.columns["pose"][rows], dtype=np.float32)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.reader[int(self.rows[i])]
        count = int(sample["cloud_count"])
        return {
            "image": torch.from_numpy(sample["image"]).permute(2, 0, 1).float().div_(255.0),
            "pose": torch.from_numpy(sample["pose"]),
            "cloud": torch.from_numpy(np.ascontiguousarray(self._draw_points(sample["cloud"], count))),
            "uv": torch.from_numpy(sample["uv"]),
            "visible": torch.from_numpy(sample["visible"]),
            "labeled": torch.tensor(bool(self.labeled[i])),
            "uv_only": torch.tensor(bool(self.uv_only[i])),
            "has_cloud": torch.tensor(count > 0),
            "K": torch.from_numpy(sample["K_crop"]),
            "root": torch.from_numpy(sample["root"]),
            "scale": torch.tensor(float(sample["scale"]), dtype=torch.float32),
            "rotation": torch.from_numpy(sample["rotation"]),
            "index": torch.tensor(int(sample["index"]), dtype=torch.long),
        }


class LabeledShareSampler(Sampler[list[int]]):
    """Training batches of exactly ``per_batch`` labelled samples and ``batch_size - per_batch``
    unlabelled ones, as many batches an epoch as a uniform loader makes (ceil(n / batch_size)).

    Each pool is drawn without replacement in a fresh random order each epoch, and cycled when
    the epoch needs more of it than it holds (the few labelled frames, at small fractions). The
    order comes from torch's global generator, as ``shuffle=True`` does, so a seeded run repeats.
    """

    def __init__(self, labeled: np.ndarray, batch_size: int, per_batch: int) -> None:
        self.labeled_rows = np.flatnonzero(labeled)
        self.unlabeled_rows = np.flatnonzero(~np.asarray(labeled, dtype=bool))
        self.batch_size, self.per_batch = batch_size, per_batch
        self.batches = math.ceil(len(labeled) / batch_size)

    def __len__(self) -> int:
        return self.batches

    @staticmethod
    def _cycled(rows: np.ndarray, count: int) -> np.ndarray:
        rounds = math.ceil(count / len(rows))
        return np.concatenate([rows[torch.randperm(len(rows)).numpy()] for _ in range(rounds)])[:count]

    def __iter__(self):
        k, rest = self.per_batch, self.batch_size - self.per_batch
        labeled = self._cycled(self.labeled_rows, self.batches * k)
        unlabeled = self._cycled(self.unlabeled_rows, self.batches * rest)
        for b in range(self.batches):
            yield [*labeled[b * k:(b + 1) * k].tolist(), *unlabeled[b * rest:(b + 1) * rest].tolist()]


def labeled_count(n_train: int, fraction: float) -> int:
    """Number of leading training samples that keep their labels (at least one)."""
    return max(1, int(round(fraction * n_train)))


class CrossmodalDataModule(L.LightningDataModule):
    """Train/val/test loaders over the caches of ``cfg.dataset`` (built on demand by ``prepare_data``)."""

    def __init__(self, cfg: DataConfig, progress: bool = True) -> None:
        super().__init__()
        if not 0.0 < cfg.labeled_fraction <= 1.0:
            raise ConfigError(f"data.labeled_fraction must be in (0, 1], got {cfg.labeled_fraction}")
        if not 0.0 <= cfg.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
        if cfg.num_points < 1:
            raise ConfigError(f"data.num_points must be >= 1, got {cfg.num_points}")
        if cfg.labeled_per_batch and not 0 < cfg.labeled_per_batch < cfg.batch_size:
            raise ConfigError(f"data.labeled_per_batch must be 0 (uniform batches) or in [1, data.batch_size - 1 = "
                              f"{cfg.batch_size - 1}], got {cfg.labeled_per_batch}")
        if cfg.labeled_per_batch and (cfg.labeled_fraction == 1.0 or cfg.drop_unlabeled):
            raise ConfigError("data.labeled_per_batch mixes labelled and unlabelled frames in each batch: it needs "
                              "data.labeled_fraction < 1 and data.drop_unlabeled=false")
        if not 0.0 <= cfg.augment.crop_error_rate <= 1.0:
            raise ConfigError(f"data.augment.crop_error_rate must be in [0, 1], got {cfg.augment.crop_error_rate}")
        if not 0.0 <= cfg.augment.crop_error_max_turn <= 180.0:
            raise ConfigError(f"data.augment.crop_error_max_turn must be in [0, 180] degrees, got "
                              f"{cfg.augment.crop_error_max_turn}")
        self.cfg = cfg
        self.progress = progress
        self.datasets: dict[str, CachedHandDataset] = {}
        self._crop_error_table: torch.Tensor | None = None
        if cfg.augment.enabled and cfg.augment.crop_errors:
            self._crop_errors()  # a missing or malformed file fails here, not at the first batch

    # ----- caches -----

    def _dataset_class(self) -> Any:
        from crossmodal.registry import DATASETS

        return DATASETS.get(self.cfg.dataset, key="data.dataset")

    def splits(self) -> tuple[str, str]:
        reader = self._dataset_class()
        return reader.TRAIN_SPLIT, reader.TEST_SPLIT

    def _hint(self, split: str) -> dict[str, str]:
        return {"dataset": self.cfg.dataset, "root": str(self.cfg.root), "split": split}

    def cache_path(self, split: str) -> Path:
        from crossmodal.data.cache import cache_path_for

        return cache_path_for(self.cfg.cache_dir, self.cfg.dataset, split, self.cfg.preprocess)

    def _synthetic_present(self) -> bool:
        # The generator writes each split's annotation pickle last: its presence marks a finished split.
        train, test = self.splits()
        root = Path(self.cfg.root)
        return all((root / split / f"anno_{split}.pickle").is_file() for split in (train, test))

    def prepare_data(self) -> None:
        """Generate the synthetic frames if absent, then build each missing cache (train and test split).

        Synthetic frames already in ``cfg.root`` are used as they are, whatever ``cfg.synthetic``
        says; delete the folder to regenerate it.
        """
        if self.cfg.dataset == "synthetic" and not self._synthetic_present():
            from crossmodal.data.synthetic import generate

            synth = self.cfg.synthetic
            generate(self.cfg.root, synth.train, synth.test, synth.seed, progress=self.progress)
        for split in self.splits():
            ensure_cache(self.cfg.dataset, self.cfg.root, split, self.cfg.cache_dir, self.cfg.preprocess, progress=self.progress)

    def _open(self, split: str) -> CacheReader:
        return CacheReader(self.cache_path(split), self.cfg.preprocess, **self._hint(split))

    @staticmethod
    def _require(rows: np.ndarray, what: str, reader: CacheReader) -> None:
        if len(rows) == 0:
            raise DataError(f"the {what} split of cache {reader.path} is empty ({len(reader)} cached samples); use more frames or other fractions")

    def setup(self, stage: str | None = None) -> None:
        """Open the caches: train + val for fit/validate, test for test/predict."""
        cfg = self.cfg
        train_split, test_split = self.splits()
        if stage in (None, "fit", "validate"):
            reader = self._open(train_split)
            n = len(reader)
            n_val = math.ceil(n * cfg.val_fraction)
            n_train = n - n_val
            train_rows = np.arange(n_train)
            val_rows = np.arange(n_train, n)
            self._require(train_rows, "training", reader)
            if cfg.val_fraction > 0:
                self._require(val_rows, "validation", reader)
            labeled = train_rows < labeled_count(n_train, cfg.labeled_fraction)
            if cfg.drop_unlabeled:
                train_rows, labeled = train_rows[labeled], labeled[labeled]
                if cfg.repeat_to_full:
                    train_rows, labeled = np.resize(train_rows, n_train), np.ones(n_train, bool)
            if cfg.labeled_per_batch and labeled.all():
                raise DataError(f"data.labeled_per_batch: no unlabelled frame left in the {n_train} training frames of "
                                f"{reader.path} at data.labeled_fraction={cfg.labeled_fraction}")
            self.datasets["train"] = CachedHandDataset(reader, train_rows, labeled, cfg.num_points, random_points=True,
                                                       unlabeled_2d=cfg.unlabeled_2d)
            self.datasets["val"] = CachedHandDataset(reader, val_rows, np.ones(len(val_rows), bool), cfg.num_points, False)
        if stage in (None, "test", "predict"):
            reader = self._open(test_split)
            rows = np.arange(len(reader))
            self._require(rows, "test", reader)
            self.datasets["test"] = CachedHandDataset(reader, rows, np.ones(len(rows), bool), cfg.num_points, False)

    # ----- loaders -----

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if name not in self.datasets:
            raise RuntimeError(f"CrossmodalDataModule.setup() has not prepared the {name} split")
        workers, dataset = self.cfg.num_workers, self.datasets[name]
        if name == "train" and self.cfg.labeled_per_batch:
            batching = {"batch_sampler": LabeledShareSampler(dataset.labeled, self.cfg.batch_size, self.cfg.labeled_per_batch)}
        else:
            batching = {"batch_size": self.cfg.batch_size, "shuffle": shuffle}
        return DataLoader(
            dataset,
            **batching,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.datasets.get("val", ())) == 0:
            return []  # val_fraction == 0: no validation
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # ----- on the device -----

    def _crop_errors(self) -> torch.Tensor | None:
        """The measured crop errors to train with (``augment.crop_errors``), read once."""
        if not self.cfg.augment.crop_errors:
            return None
        if self._crop_error_table is None:
            self._crop_error_table = crop_error_table(self.cfg.augment.crop_errors, self.cfg.preprocess.crop_margin,
                                                      self.cfg.augment.crop_error_max_turn)
        return self._crop_error_table

    def finish_batch(self, batch: dict[str, torch.Tensor], augment: bool) -> dict[str, torch.Tensor]:
        """Augment (if asked and enabled) then add heatmaps: what ``on_after_batch_transfer`` does."""
        if augment and self.cfg.augment.enabled:
            batch = augment_batch(batch, self.cfg.augment, crop_errors=self._crop_errors())
        batch = dict(batch)
        pre = self.cfg.preprocess
        batch["heatmaps"] = make_heatmaps(batch["uv"], batch["visible"], pre.crop_size, pre.heatmap_size, pre.heatmap_sigma)
        return batch

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        trainer = getattr(self, "trainer", None)
        training = bool(trainer is not None and trainer.training)
        return self.finish_batch(batch, augment=training)


def build_datamodule(cfg: Any) -> "CrossmodalDataModule":
    """The data module of a run's config (its ``data`` section; progress bars as ``trainer.progress``)."""
    from omegaconf import OmegaConf

    return CrossmodalDataModule(OmegaConf.to_object(cfg.data), progress=bool(cfg.trainer.progress))
