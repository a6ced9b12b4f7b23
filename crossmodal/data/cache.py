"""HDF5 cache of preprocessed samples: one file per (dataset, split, preprocessing config).

Layout: one dataset per sample key (see ``cache_schema``), first axis = sample.
``image`` and ``cloud`` are chunked one sample per chunk so a random read touches
one chunk; the small per-sample keys are chunked in blocks and loaded whole into
memory when the cache is opened (per-sample chunks of a few bytes would spend more
on chunk bookkeeping than on data). Attributes: ``config_hash`` (sha256 of the
canonical JSON of the PreprocessConfig), ``config_json``, ``dataset``, ``split``,
``source_root``, ``source_length``, ``count``, ``skipped``, ``format_version`` and
``complete``, written last. The file is written under a temporary name and renamed
only once complete (``crossmodal.io.atomic_path``).

Frames are preprocessed by worker processes and written, in dataset order, by the
single parent process (HDF5 files take one writer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
from tqdm.auto import tqdm

from crossmodal.config import PreprocessConfig
from crossmodal.data.joints import NUM_JOINTS
from crossmodal.data.preprocess import preprocess_frame
from crossmodal.errors import DataError, EmptyHandError
from crossmodal.io import atomic_path

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
#: Keys read from the file per sample; every other key is loaded into memory on open.
PER_SAMPLE_KEYS = ("image", "cloud")


def cache_schema(cfg: PreprocessConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-sample shape and dtype of every cached key."""
    s = cfg.crop_size
    return {
        "image": ((s, s, 3), np.dtype(np.uint8)),
        "pose": ((NUM_JOINTS, 3), np.dtype(np.float32)),
        "cloud": ((cfg.pool_size, 3), np.dtype(np.float32)),
        "cloud_count": ((), np.dtype(np.int32)),
        "uv": ((NUM_JOINTS, 2), np.dtype(np.float32)),
        "visible": ((NUM_JOINTS,), np.dtype(bool)),
        "K_crop": ((3, 3), np.dtype(np.float32)),
        "root": ((3,), np.dtype(np.float32)),
        "scale": ((), np.dtype(np.float32)),
        "rotation": ((3, 3), np.dtype(np.float32)),
        "K_source": ((3, 3), np.dtype(np.float32)),
        "index": ((), np.dtype(np.int64)),
        "hand_side": ((), np.dtype(np.uint8)),
    }


def config_json(cfg: PreprocessConfig) -> str:
    """Canonical JSON of the config fields: sorted keys, no whitespace."""
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: PreprocessConfig) -> str:
    """sha256 hex digest of :func:`config_json`; any field change changes it."""
    return hashlib.sha256(config_json(cfg).encode("utf-8")).hexdigest()


def cache_path_for(cache_dir: str | os.PathLike, dataset: str, split: str, cfg: PreprocessConfig) -> Path:
    """``<cache_dir>/<dataset>_<split>_<first 12 hex of the config hash>.h5``."""
    return Path(cache_dir) / f"{dataset}_{split}_{config_hash(cfg)[:12]}.h5"


def build_command(path: str | os.PathLike, dataset: str = "...", root: str = "...", split: str = "...") -> str:
    """The CLI line that builds a cache, for error messages."""
    return f"python -m crossmodal cache --dataset {dataset} --root {root} --split {split} --out {path}"


@dataclass
class CacheReport:
    """What ``build_cache`` did."""

    path: Path
    dataset: str
    split: str
    written: int
    skipped: int
    skipped_indices: list[int] = field(default_factory=list)
    config_hash: str = ""
    seconds: float = 0.0


# ----- building -----

_WORKER_DATASET: Any = None
_WORKER_CFG: PreprocessConfig | None = None


def _init_worker(dataset: Any, cfg: PreprocessConfig) -> None:
    global _WORKER_DATASET, _WORKER_CFG
    _WORKER_DATASET, _WORKER_CFG = dataset, cfg


def _process_one(i: int) -> tuple[int, dict[str, np.ndarray] | None, str]:
    """Preprocess frame ``i``; an empty hand comes back as (i, None, reason) instead of raising."""
    try:
        return i, preprocess_frame(_WORKER_DATASET[i], _WORKER_CFG), ""
    except EmptyHandError as exc:
        return i, None, str(exc)


def _results(dataset: Any, cfg: PreprocessConfig, workers: int) -> Iterator[tuple[int, dict | None, str]]:
    """Preprocessed frames in dataset order, from a process pool when ``workers > 1``."""
    indices = range(len(dataset))
    if workers <= 1:
        _init_worker(dataset, cfg)
        yield from map(_process_one, indices)
        return
    # fork hands the dataset to the workers without pickling it; spawn (other OSes) pickles it.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, _init_worker, (dataset, cfg)) as pool:
        yield from pool.imap(_process_one, indices, chunksize=2)


def _dataset_identity(dataset: Any) -> tuple[str, str, str]:
    name = getattr(dataset, "registry_name", type(dataset).__name__)
    return str(name), str(getattr(dataset, "split", "")), str(getattr(dataset, "root", ""))


def build_cache(
    dataset: Any,
    out_path: str | os.PathLike,
    cfg: PreprocessConfig,
    workers: int | None = None,
    progress: bool = True,
) -> CacheReport:
    """Preprocess every frame of ``dataset`` into one HDF5 file at ``out_path``.

    ``workers`` preprocessing processes (default: all CPU cores; 0 or 1: in this
    process). Frames with an empty hand are skipped, counted, logged and listed in
    the report and in the file's ``skipped_indices`` dataset.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    name, split, root = _dataset_identity(dataset)
    n = len(dataset)
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(0, min(workers, n))
    schema = cache_schema(cfg)
    skipped: list[int] = []
    written = 0
    with atomic_path(out_path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            columns = {}
            for key, (shape, dtype) in schema.items():
                rows = 1 if key in PER_SAMPLE_KEYS else max(1, min(n, 4096))
                columns[key] = f.create_dataset(
                    key, shape=(n, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(rows, *shape)
                )
            bar = tqdm(total=n, desc=f"cache {name}/{split}", unit="frame", disable=not progress)
            for i, sample, reason in _results(dataset, cfg, workers):
                if sample is None:
                    skipped.append(i)
                    log.info("skipped frame %d: %s", i, reason)
                else:
                    for key, column in columns.items():
                        column[written] = sample[key]
                    written += 1
                bar.update(1)
                bar.set_postfix(skipped=len(skipped), refresh=False)
            bar.close()
            for column in columns.values():
                column.resize(written, axis=0)
            f.create_dataset("skipped_indices", data=np.asarray(skipped, dtype=np.int64))
            f.attrs.update(
                {
                    "format_version": CACHE_FORMAT_VERSION,
                    "config_hash": config_hash(cfg),
                    "config_json": config_json(cfg),
                    "dataset": name,
                    "split": split,
                    "source_root": root,
                    "source_length": n,
                    "count": written,
                    "skipped": len(skipped),
                }
            )
            f.flush()
            f.attrs["complete"] = True  # last: a file without it was cut short
    if skipped:
        shown = ", ".join(map(str, skipped[:20])) + (", ..." if len(skipped) > 20 else "")
        log.warning("%s: skipped %d of %d frames with an empty hand (indices %s; all in 'skipped_indices')", out_path, len(skipped), n, shown)
    return CacheReport(out_path, name, split, written, len(skipped), skipped, config_hash(cfg), time.perf_counter() - started)


# ----- reading -----


def _config_difference(stored_json: str, cfg: PreprocessConfig) -> str:
    """'field cached -> requested' for each differing field."""
    try:
        stored = json.loads(stored_json)
    except (TypeError, ValueError):
        return "stored config unreadable"
    wanted = dataclasses.asdict(cfg)
    diffs = [
        f"{key} {stored.get(key, '<absent>')!r} -> {wanted.get(key, '<absent>')!r}"
        for key in sorted(set(stored) | set(wanted))
        if stored.get(key, "<absent>") != wanted.get(key, "<absent>")
    ]
    return ", ".join(diffs) or "same fields, different hash"


def check_cache(path: str | os.PathLike, cfg: PreprocessConfig | None = None, **hint: str) -> dict[str, Any]:
    """Validate a cache file and return its attributes; raise a one-line ``DataError`` otherwise.

    Checks that the file exists (else tells the command that builds it; ``hint``
    may give ``dataset``, ``root`` and ``split`` for that line), opens as HDF5 with
    its full length (a file cut short does not), carries the ``complete`` flag, holds
    ``count`` rows in every key and, when ``cfg`` is given, was built with ``cfg``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cache {path} does not exist; build it with: {build_command(path, **hint)}")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if not attrs.get("complete", False):
                raise DataError(f"cache {path} is incomplete (no 'complete' flag: its writer stopped early); delete it and rebuild it")
            count = int(attrs["count"])
            for key in cache_schema(cfg or PreprocessConfig()):
                if key not in f or f[key].shape[0] != count:
                    raise DataError(f"cache {path} is cut short: key {key!r} does not hold {count} samples; delete it and rebuild it")
                if count:
                    f[key][count - 1]  # reading the last row touches the end of the data
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cache {path} is cut short or corrupt ({reason}); delete it and rebuild it") from None
    if cfg is not None and attrs.get("config_hash") != config_hash(cfg):
        raise DataError(
            f"cache {path} was built with another preprocessing config "
            f"({_config_difference(attrs.get('config_json', ''), cfg)}); rebuild it or use its config"
        )
    return attrs


class CacheReader:
    """Random access to a validated cache; the HDF5 handle opens lazily in each process.

    h5py handles cannot cross process boundaries, so the reader pickles without its
    handle and reopens the file on first access in a DataLoader worker.
    """

    def __init__(self, path: str | os.PathLike, cfg: PreprocessConfig | None = None, **hint: str) -> None:
        self.path = Path(path)
        self.attrs = check_cache(self.path, cfg, **hint)
        self.config = json.loads(self.attrs["config_json"])
        with h5py.File(self.path, "r") as f:
            # Small keys live in memory: every __getitem__ then reads only image and cloud.
            self.columns = {key: f[key][()] for key in f if key not in PER_SAMPLE_KEYS and key != "skipped_indices"}
            self.skipped_indices = f["skipped_indices"][()]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.attrs["count"])

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` as numpy arrays (the keys of ``cache_schema``)."""
        f = self._handle()
        sample = {key: f[key][i] for key in PER_SAMPLE_KEYS}
        sample.update({key: column[i] for key, column in self.columns.items()})
        return sample

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to close cleanly
            pass


def open_cache(path: str | os.PathLike, cfg: PreprocessConfig | None = None, **hint: str) -> CacheReader:
    """Validated :class:`CacheReader` for ``path`` (see :func:`check_cache` for the checks)."""
    return CacheReader(path, cfg, **hint)


def ensure_cache(
    dataset: str,
    root: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike,
    cfg: PreprocessConfig,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Path of the cache for (dataset, split, cfg); builds it only if missing.

    An existing file is validated (and not silently overwritten when broken), and
    must have been built from as many frames as ``root`` now holds: the file name
    depends on the config only, so a regrown dataset folder would otherwise reuse it.
    """
    from crossmodal.registry import DATASETS

    path = cache_path_for(cache_dir, dataset, split, cfg)
    hint = {"dataset": dataset, "root": str(root), "split": split}
    frames = DATASETS.get(dataset, key="data.dataset")(root, split)
    if path.exists():
        attrs = check_cache(path, cfg, **hint)
        if int(attrs["source_length"]) != len(frames):
            raise DataError(
                f"cache {path} was built from {int(attrs['source_length'])} frames of {attrs['source_root']} "
                f"but {root} ({split}) now holds {len(frames)}; delete the cache to rebuild it"
            )
        return path
    report = build_cache(frames, path, cfg, workers=workers, progress=progress)
    log.info("built %s: %d samples, %d skipped, %.1f s", path, report.written, report.skipped, report.seconds)
    return path
