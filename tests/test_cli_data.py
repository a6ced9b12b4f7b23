"""The data commands end to end through the real CLI: synth -> cache, and prepare."""

from __future__ import annotations

import pickle

import h5py
import pytest

from crossmodal.cli import main


def test_synth_then_cache(tmp_path, capsys):
    root = tmp_path / "synth"
    assert main(["synth", "--out", str(root), "--train", "3", "--test", "2", "--seed", "4", "--workers", "1"]) == 0
    anno = pickle.loads((root / "training" / "anno_training.pickle").read_bytes())
    assert sorted(anno) == [0, 1, 2]
    assert len(list((root / "evaluation" / "color").glob("*.png"))) == 2
    out = tmp_path / "train.h5"
    assert main(["cache", "--dataset", "synthetic", "--root", str(root), "--split", "training", "--out", str(out),
                 "--workers", "1", "data.preprocess.crop_size=32"]) == 0
    with h5py.File(out) as f:
        assert f["image"].shape[1:] == (32, 32, 3)
        assert f["image"].chunks == (1, 32, 32, 3)  # one sample per chunk
        written = f["image"].shape[0]
    assert f"wrote {written} samples" in capsys.readouterr().out
    assert written >= 2


def test_cache_reports_missing_dataset_in_one_line(tmp_path, capsys):
    code = main(["cache", "--dataset", "rhd", "--root", str(tmp_path / "nowhere"), "--split", "training", "--out", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "nowhere" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()


def test_synth_rejects_negative_counts(capsys):
    assert main(["synth", "--out", "unused", "--train", "-1"]) == 2
    assert "--train and --test must be >= 0" in capsys.readouterr().err
