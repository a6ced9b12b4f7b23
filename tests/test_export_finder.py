"""export --finder: the image -> joints ONNX graph matches PyTorch under onnxruntime on real
synthetic images, finds the same box as predict, and its joints are close to predict's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal.cli import main
from crossmodal.export import run_onnx
from crossmodal.pipeline.export import default_K, export_checkpoint_with_finder
from crossmodal.finder.model import load_finder
from crossmodal.predict import load_model, predict_image

pytestmark = pytest.mark.usefixtures("single_thread")


def eval_images(tiny_data: list[str], count: int) -> list[Path]:
    root = Path(next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))) / "evaluation" / "color"
    return sorted(root.glob("*.png"))[:count]


def test_image_to_joints_onnx_matches_pytorch_and_predict(tiny_data, tiny_checkpoints, tiny_finder, tmp_path, capsys):
    finder_ckpt = tiny_finder / "checkpoints" / "best.ckpt"
    paths = eval_images(tiny_data, 3)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    result = export_checkpoint_with_finder(tiny_checkpoints["poe"], finder_ckpt, "onnx", tmp_path / "full.onnx", None,
                                           (320, 320), images)
    assert result.checked_with == "onnxruntime" and result.max_difference <= 1e-4, result
    assert result.outputs == ("pose", "cloud", "box", "right", "found")
    model, finder = load_model(tiny_checkpoints["poe"]), load_finder(finder_ckpt)
    for k, path in enumerate(paths):
        out = {name: value[0] for name, value in run_onnx(result.path, images[k : k + 1].transpose(0, 3, 1, 2).astype(np.float32) / 255,
                                                            default_K((320, 320), 1).numpy()).items()}
        found = finder.find(images[k])
        if found is None:
            assert out["found"] == 0
            continue
        assert out["found"] == 1 and out["right"] == pytest.approx(found.right_probability, abs=1e-4)
        np.testing.assert_allclose(out["box"], found.box, atol=1e-3)  # the same box as predict
        pred = predict_image(model, path, finder=finder)
        # The graph supersamples instead of predict's integer box filter: close, not equal.
        assert np.abs(out["pose"] - pred.joints).max() < 0.5


def test_oriented_left_mirroring_model_exports_with_the_finder(tiny_data, tiny_finder, tmp_path):
    """The CPU profile's preprocessing (orient + mirror_left) in the image -> joints graph runs in
    onnxruntime as in PyTorch (onnxruntime has no Where over booleans: the graph's masks are float)."""
    from crossmodal.config import load_config
    from crossmodal.train import train

    cfg = load_config(None, [*tiny_data, "model.strategy=crossmodal", f"out_dir={tmp_path}", "name=canonical",
                             "trainer.max_steps=2", "data.preprocess.orient=true", "data.preprocess.mirror_left=true",
                             f"data.cache_dir={tmp_path / 'cache'}"])
    ckpt = train(cfg).best_checkpoint
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in eval_images(tiny_data, 3)])
    result = export_checkpoint_with_finder(ckpt, tiny_finder / "checkpoints" / "best.ckpt", "onnx",
                                           tmp_path / "canonical.onnx", None, (320, 320), images)
    assert result.checked_with == "onnxruntime" and result.max_difference <= 1e-4, result


def test_graph_roll_equals_the_training_pipelines(tiny_data):
    """The graph's batched roll (crossmodal.pipeline.graph.roll_upright) of a hand mask's
    ``upright_points`` turns it as geometry.roll_upright turns predict's ``upright_pixels`` of the
    finder's hand (every third row and column), and an empty or a whole-image (isotropic) mask is
    not turned."""
    import torch

    from crossmodal.data import geometry
    from crossmodal.finder.locate import UPRIGHT_STRIDE, upright_pixels
    from crossmodal.pipeline.graph import roll_upright, upright_points

    root = Path(next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))) / "evaluation" / "mask"
    masks = [np.asarray(Image.open(p)) for p in sorted(root.glob("*.png"))[:3]]
    hands = np.stack([(m >= 2) & (m <= 33) for m in masks] + [np.ones_like(masks[0], dtype=bool),
                                                               np.zeros_like(masks[0], dtype=bool)])
    rng = np.random.default_rng(0)
    H = np.stack([np.array([[0.3, 0.02, -10.0], [-0.01, 0.3, -5.0], [1e-4, 2e-4, 1.0]]) + rng.normal(0, 1e-3, (3, 3)) for _ in hands])
    graph = roll_upright(*upright_points(torch.from_numpy(hands).float()), torch.from_numpy(H))
    for k, hand in enumerate(hands[:-1]):
        rows, cols = np.nonzero(hand)
        naive = np.stack([cols, rows], 1)[(rows % UPRIGHT_STRIDE == 0) & (cols % UPRIGHT_STRIDE == 0)].astype(np.float64)
        np.testing.assert_array_equal(upright_pixels(hand), naive)
        expected = geometry.roll_upright(geometry.apply_homography(H[k], naive))
        np.testing.assert_allclose(graph[k].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(graph[-1].numpy(), np.eye(3))
    whole = roll_upright(*upright_points(torch.ones(1, 320, 320)), torch.eye(3)[None] * 0.2)  # a whole image, scaled
    np.testing.assert_array_equal(whole[0].numpy(), np.eye(3))
    # A tiny hand with no pixel on the grid: predict and the graph both leave its crop unturned.
    tiny = np.zeros((1, 40, 40), dtype=bool)
    tiny[0, 4:6, 4:6] = True
    assert len(upright_pixels(tiny[0])) == 0
    np.testing.assert_array_equal(roll_upright(*upright_points(torch.from_numpy(tiny).float()), torch.eye(3)[None])[0].numpy(),
                                  np.eye(3))


@pytest.mark.parametrize("mirror_left", [False, True])
def test_graph_mirrors_and_turns_the_crop_as_predict_does(mirror_left, tiny_data, tiny_checkpoints, tiny_finder):
    """A model trained with preprocess.orient (and mirror_left, with a keypoint stage): the crop the
    image -> joints graph keeps is predict's crop with the finder (mirrored where the model's
    keypoint fit takes a left hand), up to the graph's supersampling; its pose and side are predict's."""
    from crossmodal.pipeline.graph import ImageToJoints

    model, finder = load_model(tiny_checkpoints["poe"]), load_finder(tiny_finder / "checkpoints" / "best.ckpt")
    model.config.data.preprocess.orient = True
    model.config.data.preprocess.mirror_left = mirror_left
    graph = ImageToJoints(finder, model, (320, 320), with_cloud=False).eval()
    assert graph.by_fit == mirror_left and ("fit_right" in graph.outputs) == mirror_left
    seen, crop = [], graph.crop

    def keep(*args):
        crops, R = crop(*args)
        seen.append(crops)
        return crops, R

    graph.crop = keep
    checked = 0
    for path in eval_images(tiny_data, 6):
        image = np.asarray(Image.open(path).convert("RGB"))
        if finder.find(image) is None:
            continue
        with torch.no_grad():
            out = graph(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, default_K((320, 320), 1))
        pred = predict_image(model, path, finder=finder)
        assert (pred.side_fit is not None) == mirror_left
        assert pred.hand.mirror == (mirror_left and pred.side_fit["side"] == "left")
        if mirror_left:
            fits = pred.side_fit["fit_right"], pred.side_fit["fit_left"]
            graph_side = "right" if out[-1][0] == 1 else "left"  # fit_right
            if abs(fits[0] - fits[1]) < 1e-3 * max(fits):
                # A near tie (a tiny model's maps are flat) falls either way as the two samplers
                # differ: the graph's side is then compared with predict given that side.
                pred = predict_image(model, path, finder=finder, side=graph_side)
            else:
                assert graph_side == pred.hand.side
        # The batch holds the hand as is and, with the fit, mirrored: the kept one is predict's.
        kept = seen[-1][int(pred.hand.mirror)].permute(1, 2, 0).numpy()
        assert np.abs(kept - pred.crop / 255.0).mean() < 0.03
        assert np.abs(out[0][0].numpy() - pred.joints).max() < 0.5
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("temperature", [0.0, 0.01])
def test_side_by_fit_graph_runs_in_onnxruntime_as_in_pytorch(temperature, tiny_data, tiny_checkpoints, tiny_finder,
                                                              tmp_path):
    """The two-hypothesis graph (a right-hands-only model with a keypoint stage) exports, and
    onnxruntime gives PyTorch's outputs, fit_right included; with a side temperature too, where
    the pose is both hypotheses' weighted."""
    from crossmodal.pipeline.export import export_with_finder

    model = load_model(tiny_checkpoints["poe"])
    model.config.data.preprocess.mirror_left = True
    model.side_temperature = temperature
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in eval_images(tiny_data, 3)])
    result = export_with_finder(model, tiny_finder / "checkpoints" / "best.ckpt", "onnx", tmp_path / "fit.onnx", None,
                                (320, 320), images)
    assert result.outputs == ("pose", "cloud", "box", "right", "found", "fit_right")
    assert result.checked_with == "onnxruntime" and result.max_difference <= 1e-4, result


def test_graph_weighs_both_sides_as_predict_does(tiny_data, tiny_checkpoints, tiny_finder):
    """With a side temperature, the graph's pose is predict's hedged joints (up to the graph's
    supersampling), and moves from the unhedged graph's where the fit is unsure."""
    from crossmodal.pipeline.graph import ImageToJoints

    model, finder = load_model(tiny_checkpoints["poe"]), load_finder(tiny_finder / "checkpoints" / "best.ckpt")
    model.config.data.preprocess.orient = True
    model.config.data.preprocess.mirror_left = True
    hard = ImageToJoints(finder, model, (320, 320), with_cloud=False).eval()
    model.side_temperature = 1.0  # far above a tiny model's fit margins: p near 1/2, the two poses averaged
    soft = ImageToJoints(finder, model, (320, 320), with_cloud=False).eval()
    checked = 0
    for path in eval_images(tiny_data, 6):
        image = np.asarray(Image.open(path).convert("RGB"))
        if finder.find(image) is None:
            continue
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            out_hard, out_soft = hard(x, default_K((320, 320), 1)), soft(x, default_K((320, 320), 1))
        pred = predict_image(model, path, finder=finder)
        assert pred.side_fit["probability"] < 0.6
        assert np.abs(out_soft[0][0].numpy() - pred.joints).max() < 0.5
        assert np.abs(out_soft[0][0].numpy() - out_hard[0][0].numpy()).max() > 1e-3
        assert torch.equal(out_soft[-1], out_hard[-1])  # the side reported is the better fit's either way
        checked += 1
    assert checked >= 2


def test_cli_export_with_finder_and_bad_image_size(tiny_checkpoints, tiny_finder, tmp_path, capsys):
    finder_ckpt = str(tiny_finder / "checkpoints" / "best.ckpt")
    args = ["export", "--ckpt", str(tiny_checkpoints["crossmodal"]), "--finder", finder_ckpt]
    assert main([*args, "--out", str(tmp_path / "m.onnx"), "--image-size", "160x120"]) == 0
    out = capsys.readouterr().out
    assert "input image (1, 3, 120, 160) RGB in [0, 1] and K (1, 3, 3) -> pose, box, right, found" in out
    assert "checked with onnxruntime" in out
    assert main([*args, "--image-size", "640"]) == 2
    assert "--image-size: expected WxH" in capsys.readouterr().err


def test_latency_benchmark_times_every_graph_and_predict(tiny_data, tiny_checkpoints, tiny_finder, tmp_path):
    """benchmarks/latency.py end to end on the tiny models (MediaPipe left out: it needs its own
    environment); the report has a row per graph and thread count, each with every image timed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("latency", Path(__file__).parents[1] / "benchmarks" / "latency.py")
    latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(latency)
    root = next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))
    out = tmp_path / "latency.md"
    assert latency.main(["--ckpt", str(tiny_checkpoints["poe"]), "--finder", str(tiny_finder / "checkpoints" / "best.ckpt"),
                         "--data", root, "--images", "5", "--predict-images", "2", "--warmup", "1", "--no-mediapipe",
                         "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ours")]
    assert len(rows) == 6, rows  # pose / pose + cloud / pose with the mirror-averaged finder, at 1 and 2 threads
    assert sum("averaged with its mirror image" in row for row in rows) == 2
    for row in rows:
        median, p90, found = [cell.strip() for cell in row.strip("|").split("|")[1:]]
        assert 0 < float(median) <= float(p90) and found.endswith("of 5")
    assert "`predict` on a folder of 2 images" in out.read_text()
    with pytest.raises(SystemExit, match="holds 6 images, expected at least 50"):
        latency.main(["--ckpt", "x", "--finder", "y", "--data", root, "--images", "50", "--no-mediapipe"])
