"""HDF5 cache: contents, parallel build, hash, skipped frames, and every bad-cache error."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from crossmodal.config import PreprocessConfig
from crossmodal.data.cache import (
    build_cache,
    cache_path_for,
    config_hash,
    ensure_cache,
    open_cache,
)
from crossmodal.data.preprocess import preprocess_frame
from crossmodal.errors import DataError
from realformat_fixtures import write_rhd_fixture
from test_preprocess import FrameList, render_hand_frame

CFG = PreprocessConfig(crop_size=32, pool_size=64)
EMPTY_AT = 2


@pytest.fixture(scope="module")
def frames() -> list[dict]:
    return [render_hand_frame(seed=s, index=s, empty=(s == EMPTY_AT)) for s in range(5)]


@pytest.fixture(scope="module")
def built(tmp_path_factory, frames) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("cache") / "hands.h5"
    report = build_cache(FrameList(frames), path, CFG, workers=0, progress=False)
    return path, report


def test_cache_holds_the_preprocessed_samples(built, frames) -> None:
    path, report = built
    assert (report.written, report.skipped, report.skipped_indices) == (4, 1, [EMPTY_AT])
    reader = open_cache(path, CFG)
    assert len(reader) == 4
    kept = [i for i in range(5) if i != EMPTY_AT]
    for row, frame_index in enumerate(kept):
        expected = preprocess_frame(frames[frame_index], CFG)
        got = reader[row]
        assert set(got) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    np.testing.assert_array_equal(reader.skipped_indices, [EMPTY_AT])
    with h5py.File(path, "r") as f:
        assert f["image"].chunks == (1, 32, 32, 3)
        assert f["cloud"].chunks == (1, 64, 3)
        assert f.attrs["config_hash"] == config_hash(CFG)
        assert f.attrs["count"] == 4 and f.attrs["skipped"] == 1 and f.attrs["complete"]


def test_parallel_build_matches_serial(built, frames, tmp_path) -> None:
    serial_path, _ = built
    report = build_cache(FrameList(frames), tmp_path / "par.h5", CFG, workers=2, progress=False)
    assert report.skipped_indices == [EMPTY_AT]
    with h5py.File(serial_path, "r") as a, h5py.File(tmp_path / "par.h5", "r") as b:
        for key in a:
            np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)


def test_hash_changes_with_every_field() -> None:
    base = PreprocessConfig()
    seen = {config_hash(base)}
    for f in dataclasses.fields(PreprocessConfig):
        value = getattr(base, f.name)
        changed = (not value) if isinstance(value, bool) else value + 1 if isinstance(value, int) else value * 1.5 + 0.1
        digest = config_hash(dataclasses.replace(base, **{f.name: changed}))
        assert digest not in seen, f.name
        seen.add(digest)
    assert config_hash(PreprocessConfig()) == config_hash(base)  # and is stable


def test_cache_path_names_dataset_split_and_short_hash(tmp_path) -> None:
    path = cache_path_for(tmp_path, "rhd", "training", CFG)
    assert path == tmp_path / f"rhd_training_{config_hash(CFG)[:12]}.h5"
    assert cache_path_for(tmp_path, "rhd", "training", dataclasses.replace(CFG, crop_size=64)) != path


def test_cache_built_with_another_config_is_refused(built) -> None:
    path, _ = built
    other = dataclasses.replace(CFG, crop_size=48, view_correction=False)
    with pytest.raises(DataError, match="another preprocessing config") as err:
        open_cache(path, other)
    message = str(err.value)
    assert str(path) in message and "crop_size 32 -> 48" in message and "view_correction True -> False" in message
    assert "\n" not in message


def test_missing_cache_tells_how_to_build_it(tmp_path) -> None:
    with pytest.raises(DataError, match="python -m crossmodal cache --dataset rhd --root R --split training --out") as err:
        open_cache(tmp_path / "absent.h5", CFG, dataset="rhd", root="R", split="training")
    assert "\n" not in str(err.value)


def test_truncated_cache_is_detected(built, tmp_path) -> None:
    path, _ = built
    cut = tmp_path / "cut.h5"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="cut short") as err:
        open_cache(cut, CFG)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_cache_without_complete_flag_is_detected(built, tmp_path) -> None:
    path, _ = built
    partial = tmp_path / "partial.h5"
    partial.write_bytes(path.read_bytes())
    with h5py.File(partial, "a") as f:
        del f.attrs["complete"]
    with pytest.raises(DataError, match="incomplete") as err:
        open_cache(partial, CFG)
    assert str(partial) in str(err.value)


class _BrokenAt(FrameList):
    def __getitem__(self, i: int) -> dict:
        if i == 3:
            raise DataError("colour PNG is corrupt: 00003.png")
        return super().__getitem__(i)


def test_failed_build_leaves_nothing_behind(frames, tmp_path) -> None:
    with pytest.raises(DataError, match="00003.png"):
        build_cache(_BrokenAt(frames), tmp_path / "broken.h5", CFG, workers=0, progress=False)
    assert os.listdir(tmp_path) == []


def test_reader_reopens_lazily_after_pickling(built) -> None:
    import pickle

    path, _ = built
    reader = open_cache(path, CFG)
    first = reader[0]["image"]
    clone = pickle.loads(pickle.dumps(reader))  # what a spawned DataLoader worker receives
    assert clone._file is None
    np.testing.assert_array_equal(clone[0]["image"], first)


def test_ensure_cache_builds_only_if_missing(tmp_path) -> None:
    write_rhd_fixture(tmp_path / "rhd", "training", num_frames=2, size=160)
    path = ensure_cache("rhd", tmp_path / "rhd", "training", tmp_path / "cache", CFG, workers=0, progress=False)
    assert path == cache_path_for(tmp_path / "cache", "rhd", "training", CFG)
    assert len(open_cache(path, CFG)) == 2
    stamp = path.stat().st_mtime_ns
    assert ensure_cache("rhd", tmp_path / "rhd", "training", tmp_path / "cache", CFG, progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    # The dataset folder grew: the config-named cache no longer matches it.
    write_rhd_fixture(tmp_path / "rhd", "training", num_frames=3, size=160)
    with pytest.raises(DataError, match="built from 2 frames .* now holds 3"):
        ensure_cache("rhd", tmp_path / "rhd", "training", tmp_path / "cache", CFG, progress=False)
