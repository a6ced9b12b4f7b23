"""export: the ONNX graph run by onnxruntime matches PyTorch's RGB-only inference within 1e-4,
at any batch size, on random and real test crops; TorchScript likewise; S1 exports the pose alone."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from crossmodal.cli import main
from crossmodal.export import run_onnx
from crossmodal.figures import load_samples
from crossmodal.predict import load_model

pytestmark = pytest.mark.usefixtures("single_thread")


def reference(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch's own inference path (strategy.predict), not the exported wrapper."""
    out = model.strategy.predict(torch.from_numpy(images))
    return {key: value.numpy() for key, value in out.items()}


def check_batches(model, run) -> None:
    """Random crops at two batch sizes (neither is the tracing batch) and the real test crops."""
    size = model.crop_size
    rng = np.random.default_rng(0)
    real = load_samples(model, 3)["image"].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    for images in (rng.random((1, 3, size, size), dtype=np.float32), rng.random((5, 3, size, size), dtype=np.float32), real):
        ours, theirs = run(images), reference(model, images)
        assert set(ours) == {k for k in theirs if k in ("pose", "cloud")}
        for key, value in ours.items():
            assert value.shape == theirs[key].shape
            np.testing.assert_allclose(value, theirs[key], atol=1e-4, rtol=0)


def test_onnx_round_trip_matches_pytorch(tiny_checkpoints, tmp_path, capsys):
    path = tmp_path / "s4.onnx"
    assert main(["export", "--ckpt", str(tiny_checkpoints["poe"]), "--format", "onnx", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}: input image (B, 3, 32, 32) RGB crop in [0, 1] -> pose, cloud" in out
    assert "checked with onnxruntime" in out
    model = load_model(tiny_checkpoints["poe"])
    check_batches(model, lambda images: run_onnx(path, images))
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["crossmodal.crop"])["crop_size"] == 32
    assert json.loads(meta["crossmodal.joint_names"])[0] == "wrist"
    assert "view-corrected" in meta["crossmodal.frame"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch axis


def test_s1_exports_pose_only_next_to_its_checkpoint(tiny_checkpoints, capsys):
    ckpt = tiny_checkpoints["crossmodal"]
    assert main(["export", "--ckpt", str(ckpt), "--cloud"]) == 2
    assert "has no cloud decoder" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(ckpt)]) == 0
    path = ckpt.with_suffix(".onnx")
    assert f"wrote {path}" in capsys.readouterr().out
    model = load_model(ckpt)
    check_batches(model, lambda images: run_onnx(path, images))


def test_torchscript_round_trip_matches_pytorch(tiny_checkpoints, tmp_path, capsys):
    path = tmp_path / "s4.torchscript.pt"
    assert main(["export", "--ckpt", str(tiny_checkpoints["poe"]), "--format", "torchscript", "--out", str(path)]) == 0
    loaded = torch.jit.load(str(path))
    model = load_model(tiny_checkpoints["poe"])

    def run(images):
        with torch.no_grad():
            pose, cloud = loaded(torch.from_numpy(images))
        return {"pose": pose.numpy(), "cloud": cloud.numpy()}

    check_batches(model, run)


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["export", "--ckpt", str(tmp_path / "none.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: checkpoint not found: {tmp_path / 'none.ckpt'}"
