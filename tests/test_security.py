"""Loading a file never runs code: crafted annotation pickles and checkpoints are refused with a
one-line error before their payload runs; the real formats still load; a model exported as
safetensors carries no pickle and loads wherever a checkpoint does."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import raises_one_line
from realformat_fixtures import write_rhd_fixture

from crossmodal.cli import main
from crossmodal.data.rhd import RHDDataset, SyntheticDataset
from crossmodal.errors import DataError
from crossmodal.checkpoints import read_checkpoint
from crossmodal.trained import load_trained_module, without_pretrained_paths


class Payload:
    """Unpickling it calls ``func(*args)``: how a crafted file runs code as whoever opens it."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def shell_touch(marker: Path) -> Payload:
    return Payload(os.system, f"touch '{marker}'")


def python_touch(marker: Path) -> Payload:
    return Payload(exec, f"open({str(marker)!r}, 'w').close()")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture(autouse=True)
def no_weights_only_default(monkeypatch):
    """torch reads this variable to turn its weights_only default off: every load here must
    still be safe, so the project may not lean on the default."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


# ------------------------------------------------------------------ annotation pickles


@pytest.mark.parametrize("dataset", [RHDDataset, SyntheticDataset])
@pytest.mark.parametrize("make_payload", [shell_touch, python_touch])
def test_crafted_annotation_pickle_is_refused_unrun(tmp_path, marker, dataset, make_payload) -> None:
    fx = write_rhd_fixture(tmp_path / "root", "training", num_frames=2, size=24)
    payload = make_payload(marker)
    fx.annotations[1]["K"] = payload  # hidden deep inside one frame's labels
    fx.write_annotations()
    with pytest.raises(DataError) as excinfo:
        dataset(fx.root, "training")
    refused = f"{payload.func.__module__}.{payload.func.__qualname__}"
    raises_one_line(excinfo, f"{dataset.NAME} annotation file {fx.anno_path} refers to {refused}, which is not allowed")
    assert not marker.exists()


def _py2_str(data: bytes) -> bytes:
    """A Python 2 8-bit str: SHORT_BINSTRING or BINSTRING."""
    return b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data)) + data


def _py2_array(arr: np.ndarray) -> bytes:
    """numpy 1.x under Python 2: _reconstruct(ndarray, (0,), 'b') then __setstate__ with the bytes as str."""
    dtype = (b"cnumpy\ndtype\n" + _py2_str(arr.dtype.str[1:].encode()) + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    shape = b"(" + b"".join(b"K" + bytes([n]) for n in arr.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(arr.tobytes()) + b"tb")


def python2_pickle(annotations: dict[int, dict[str, np.ndarray]]) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for RHD's {id: {key: array}}, opcode by opcode."""
    out = [b"\x80\x02}"]
    for frame_id, entry in annotations.items():
        out.append(b"J" + struct.pack("<i", frame_id) + b"}")
        for key, arr in entry.items():
            out += [_py2_str(key.encode()), _py2_array(arr), b"s"]
        out.append(b"s")
    return b"".join(out) + b"."


@pytest.mark.parametrize("writer", ["python2", 0, 2, pickle.HIGHEST_PROTOCOL])
def test_published_formats_still_load(tmp_path, writer) -> None:
    """RHD's Python 2 file, and Python 3 pickles of every protocol family (bytes via _codecs at
    0-2, _reconstruct up to 4, _frombuffer at 5), read back exactly."""
    fx = write_rhd_fixture(tmp_path / "root", "evaluation", num_frames=2, size=24, first_id=7)
    fx.annotations[7]["uv_vis"] = fx.annotations[7]["uv_vis"].astype(np.float64)  # dtypes survive too
    data = python2_pickle(fx.annotations) if writer == "python2" else pickle.dumps(fx.annotations, protocol=writer)
    fx.anno_path.write_bytes(data)
    ds = RHDDataset(fx.root, "evaluation")
    assert ds.ids == [7, 8]
    for frame_id, entry in fx.annotations.items():
        for key, value in entry.items():
            stored = ds._annotations[frame_id][key]
            assert stored.dtype == value.dtype and np.array_equal(stored, value), (frame_id, key)
    assert ds[1]["hand_side"] == fx.sides[8]


# ------------------------------------------------------------------ checkpoints


@pytest.fixture
def crafted_checkpoint(tmp_path, marker) -> Path:
    """A checkpoint-shaped file whose config, once unpickled, would have run ``touch marker``."""
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": {"config": shell_touch(marker)}, "state_dict": {}}, path)
    return path


def cli_args(command: str, ckpt: Path, tmp_path: Path) -> list[str]:
    if command == "train":  # resume=true finds the crafted file as the run's last.ckpt
        return ["train", "profile=none", f"out_dir={tmp_path}", "name=run", "resume=true"]
    args = [command, "--ckpt", str(ckpt)]
    if command == "predict":
        image = tmp_path / "hand.png"
        Image.new("RGB", (8, 8)).save(image)
        args += ["--image", str(image), "--out", str(tmp_path / "predictions")]
    return args


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["eval", "predict", "export", "figures", "train"])
def test_crafted_checkpoint_is_refused_unrun(tmp_path, marker, crafted_checkpoint, capsys, command) -> None:
    assert main(cli_args(command, crafted_checkpoint, tmp_path)) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"error: {crafted_checkpoint}: refused: it holds posix.system"), err
    assert not marker.exists()
    assert not (tmp_path / "predictions").exists()


@pytest.mark.parametrize("command", ["eval", "predict", "export", "figures", "train"])
def test_checkpoint_whose_config_is_not_a_mapping(tmp_path, capsys, command) -> None:
    """What the crafted file held once its payload had run (os.system's exit status): a one-line error."""
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": {"config": 0}, "state_dict": {}}, ckpt)
    assert main(cli_args(command, ckpt, tmp_path)) == 2
    assert one_line_error(capsys) == (
        f"error: {ckpt}: not a crossmodal checkpoint (its config is of type int, expected a mapping)")


def test_lightning_resume_loader(tiny_checkpoints, crafted_checkpoint, marker, monkeypatch) -> None:
    """Lightning 2.6 hands weights_only=None to torch.load for a local file: torch >= 2.6 reads that
    as True, unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns the default off. train() passes True,
    which holds either way; a real checkpoint needs no allowlisted global to resume."""
    import lightning as L

    strategy = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False).strategy
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        strategy.load_checkpoint(crafted_checkpoint, weights_only=True)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        strategy.load_checkpoint(crafted_checkpoint)  # the default
    assert not marker.exists()
    loaded = strategy.load_checkpoint(tiny_checkpoints["poe"], weights_only=True)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(loaded)


# ------------------------------------------------------------------ safetensors


def test_safetensors_export_is_pickle_free_and_loads_as_the_checkpoint(tiny_checkpoints, tmp_path, capsys) -> None:
    ckpt = tiny_checkpoints["poe"]
    path = tmp_path / "shared.safetensors"
    assert main(["export", "--ckpt", str(ckpt), "--format", "safetensors", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}: the model's weights and config, no pickle; use it as --ckpt" in out
    assert "checked with load_trained_module: max |exported - PyTorch| = 0\n" in out
    # The whole file is a JSON header followed by raw tensor bytes: there is nothing to unpickle.
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    metadata = header.pop("__metadata__")
    assert 8 + size + max(t["data_offsets"][1] for t in header.values()) == len(raw)
    config, original = read_checkpoint(ckpt)
    assert json.loads(metadata["crossmodal.config"]) == without_pretrained_paths(config)
    shared = load_trained_module(path).state_dict()
    assert shared.keys() == original["state_dict"].keys()
    assert all(torch.equal(shared[key], value) for key, value in original["state_dict"].items())
    assert main(["eval", "--ckpt", str(path)]) == 0
    assert "EPE mean" in capsys.readouterr().out
    assert main(["train", "profile=none", f"out_dir={tmp_path}", f"resume={path}"]) == 2
    assert f"resume: {path} is a shared safetensors model" in one_line_error(capsys)


def test_s1_safetensors_goes_beside_its_checkpoint(tiny_checkpoints, capsys) -> None:
    ckpt = tiny_checkpoints["crossmodal"]
    assert main(["export", "--ckpt", str(ckpt), "--format", "safetensors"]) == 0
    assert f"wrote {ckpt.with_suffix('.safetensors')}" in capsys.readouterr().out
    assert list(load_trained_module(ckpt.with_suffix(".safetensors")).strategy.decoders) == ["pose"]


def test_foreign_safetensors_files_are_one_line_errors(tmp_path, capsys) -> None:
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"weight": torch.zeros(2)}, str(bare))
    assert main(["eval", "--ckpt", str(bare)]) == 2
    assert one_line_error(capsys) == (
        f"error: {bare}: a safetensors file without 'crossmodal.config' metadata; expected one written by "
        "`python -m crossmodal export --format safetensors`")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["eval", "--ckpt", str(corrupt)]) == 2
    assert one_line_error(capsys).startswith(f"error: {corrupt}: not a readable safetensors file (")
