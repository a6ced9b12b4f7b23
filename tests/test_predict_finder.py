"""predict with no --mask or --bbox: the hand finder gives the box and side (a tiny finder trained
for real on the tiny synthetic data), where the finder comes from, images without a hand, an
image with two hands, and --hand over the finder's side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal.finder.metrics import box_iou
from crossmodal.finder.model import load_finder

pytestmark = pytest.mark.usefixtures("single_thread")


def eval_image(tiny_data: list[str], index: int) -> tuple[Path, np.ndarray]:
    """Colour PNG of a synthetic evaluation frame and the pixel-edge box of its hand (labels 2-33)."""
    root = Path(next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))) / "evaluation"
    labels = np.asarray(Image.open(root / "mask" / f"{index:05d}.png"))
    rows, cols = np.nonzero((labels >= 2) & (labels <= 33))
    return root / "color" / f"{index:05d}.png", np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])


def frames_with_a_found_hand(tiny_data: list[str], finder_run: Path) -> list[int]:
    """Evaluation frames where the tiny finder finds a hand (it is trained for seconds; not all)."""
    finder = load_finder(finder_run / "checkpoints" / "best.ckpt")
    found = [i for i in range(6) if finder.find(np.asarray(Image.open(eval_image(tiny_data, i)[0]).convert("RGB")))]
    assert len(found) >= 2, found
    return found


def run_predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record(folder: Path) -> dict:
    return json.loads((folder / "joints.json").read_text())


def iou(a, b) -> float:
    import torch

    return float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0])


def test_predict_without_a_box_uses_the_latest_finder_run(tiny_data, tiny_checkpoints, tiny_finder, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "latest-finder").symlink_to(tiny_finder)
    image, truth = eval_image(tiny_data, 0)
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["poe"], "--image", image, "--out", "preds")
    assert code == 0, err
    assert "the hand finder runs/latest-finder/checkpoints/best.ckpt gives the hand box and side" in out
    rec = record(tmp_path / "preds" / image.stem)
    found = load_finder(tiny_finder / "checkpoints" / "best.ckpt").find(np.asarray(Image.open(image).convert("RGB")))
    assert rec["crop"]["hand_box_source"] == "finder"
    assert rec["crop"]["hand_box"] == pytest.approx(found.box.tolist(), abs=1e-3)
    assert rec["hand"]["side"] == rec["crop"]["finder"]["side"] == found.side
    assert rec["hand"]["side_source"].startswith("finder (p(right) = ")
    assert iou(found.box, truth) > 0.2  # the box is on the hand


def test_no_finder_anywhere_names_the_command_that_makes_one(tiny_data, tiny_checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, _ = eval_image(tiny_data, 0)
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["poe"], "--image", image)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no hand finder" in lines[0] and "train one with `make finder`" in lines[0], err
    assert not (tmp_path / "predictions").exists()


def test_blank_image_is_a_note_and_the_other_images_still_get_results(tiny_data, tiny_checkpoints, tiny_finder,
                                                                      tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    image, _ = eval_image(tiny_data, frames_with_a_found_hand(tiny_data, tiny_finder)[0])
    Image.open(image).save(folder / "b_hand.png")
    Image.new("RGB", (320, 320), (128, 128, 128)).save(folder / "a_blank.png")
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["crossmodal"], "--image", folder,
                                 "--finder", tiny_finder / "checkpoints" / "best.ckpt", "--out", tmp_path / "out")
    assert code == 0, err
    assert f"note: {folder / 'a_blank.png'}: no hand found by the finder" in out
    assert not (tmp_path / "out" / "a_blank").exists()
    assert record(tmp_path / "out" / "b_hand")["crop"]["hand_box_source"] == "finder"
    assert "wrote 1 prediction folder under" in out


def test_image_with_two_hands_gets_the_box_of_one(tiny_data, tiny_checkpoints, tiny_finder, tmp_path, capsys):
    """Two frames side by side: one hand in each half. The box is one hand's (the rule itself, with the
    second hand seen and left out, is tested on constructed outputs in test_finder.py)."""
    first, second = frames_with_a_found_hand(tiny_data, tiny_finder)[:2]
    (left, left_box), (right, right_box) = eval_image(tiny_data, first), eval_image(tiny_data, second)
    both = np.concatenate([np.asarray(Image.open(left).convert("RGB")), np.asarray(Image.open(right).convert("RGB"))], 1)
    Image.fromarray(both).save(tmp_path / "two.png")
    right_box = right_box + np.array([320, 0, 320, 0])
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["poe"], "--image", tmp_path / "two.png",
                                 "--finder", tiny_finder / "checkpoints" / "best.ckpt", "--out", tmp_path / "out")
    assert code == 0, err
    box = record(tmp_path / "out" / "two")["crop"]["hand_box"]
    assert box[2] < 320 or box[0] > 319, box  # within one half: one hand, not both
    assert max(iou(box, left_box), iou(box, right_box)) > 0.1  # a tiny finder: loose boxes


@pytest.mark.parametrize("override", ["left", "right"])
def test_hand_overrides_the_finders_side(override, tiny_data, tiny_checkpoints, tiny_finder, tmp_path, capsys):
    image, _ = eval_image(tiny_data, 0)
    finder = tiny_finder / "checkpoints" / "best.ckpt"
    found = load_finder(finder).find(np.asarray(Image.open(image).convert("RGB")))
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["poe"], "--image", image, "--finder", finder,
                                 "--hand", override, "--out", tmp_path)
    assert code == 0, err
    rec = record(tmp_path / image.stem)
    assert rec["hand"]["side"] == override and rec["hand"]["side_source"] == "--hand"
    assert rec["crop"]["finder"]["side"] == found.side  # what the finder said is kept
    said = f"--hand {override} overrides the finder's side ({found.side}"
    assert (said in out) == (override != found.side)


def test_shared_model_file_carries_its_finder(tiny_data, tiny_checkpoints, tiny_finder, tmp_path, capsys, monkeypatch):
    """export --format safetensors --finder bundles the finder; predict then needs nothing else."""
    shared = tmp_path / "model.safetensors"
    assert main(["export", "--ckpt", str(tiny_checkpoints["poe"]), "--format", "safetensors", "--out", str(shared),
                 "--finder", str(tiny_finder / "checkpoints" / "best.ckpt")]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # no runs/latest-finder here
    image, _ = eval_image(tiny_data, 0)
    code, out, err = run_predict(capsys, "--ckpt", shared, "--image", image, "--out", "preds")
    assert code == 0, err
    rec = record(tmp_path / "preds" / image.stem)
    assert rec["crop"]["finder"]["finder"] == f"{shared} (bundled finder)"
    direct = load_finder(tiny_finder / "checkpoints" / "best.ckpt").find(np.asarray(Image.open(image).convert("RGB")))
    assert rec["crop"]["hand_box"] == pytest.approx(direct.box.tolist(), abs=1e-3)


@pytest.mark.parametrize("canonical", [False, True])
def test_finder_eval_ground_truth_crops_reproduce_the_evaluation(canonical, tiny_data, tiny_checkpoints, tiny_finder, tmp_path):
    """finder-eval's ground-truth crops are the cache's crops, so their EPE is `eval`'s, also for
    a model trained with preprocess.orient and mirror_left (each frame turned by its mask and a
    left hand mirrored by its labelled side, then mirrored back)."""
    from crossmodal.config import load_config
    from crossmodal.pipeline.end_to_end import end_to_end
    from crossmodal.train import evaluate, train

    ckpt = tiny_checkpoints["crossmodal"]
    if canonical:
        extra = ["data.preprocess.orient=true", "data.preprocess.mirror_left=true",
                 "model.encoder_options.rgb_resnet18.keypoints=true", f"data.cache_dir={tmp_path / 'cache'}"]
        cfg = load_config(None, [*tiny_data, "model.strategy=crossmodal", f"out_dir={tmp_path}", "name=canonical",
                                 "trainer.max_steps=2", *extra])
        ckpt = train(cfg).best_checkpoint
    result = end_to_end(ckpt, load_finder(tiny_finder / "checkpoints" / "best.ckpt"), progress=False)
    expected = evaluate(str(ckpt), [])
    assert result["frames"] == 6
    assert result["ground_truth_crops"]["epe_mean"] == pytest.approx(expected["epe_mean"], abs=1e-3)
    # A model that mirrored left hands, with a keypoint stage, is also scored with the side its own fit picks.
    assert ("finder_crops_side_by_fit" in result) == canonical
    if canonical:
        assert 0.0 <= result["side_by_fit_accuracy"] <= 1.0 and result["finder_crops_side_by_fit"]["epe_mean"] > 0


def test_the_side_by_fit_is_the_hypothesis_whose_keypoint_maps_peak_higher(tiny_data, tiny_checkpoints):
    from crossmodal.data.rhd import hand_mask, read_label_png, read_rgb_png
    from crossmodal.finder.data import mask_box
    from crossmodal.pipeline.end_to_end import side_by_fit
    from crossmodal.predict.boxes import box_region
    from crossmodal.predict.image import crop_and_infer

    from crossmodal.predict import load_model
    from test_predict import eval_frame

    model = load_model(tiny_checkpoints["poe"])  # keypoint stage on
    model.config.data.preprocess.mirror_left = True  # it saw right hands only
    image_path, mask_path, label = eval_frame(tiny_data, 0)
    image, mask = read_rgb_png(image_path), hand_mask(read_label_png(mask_path), label["hand_side"])
    K, box = np.asarray(label["K"], dtype=np.float64), mask_box(mask)
    region = box_region(box[:2], box[2:], model.preprocess.crop_margin, "test", mask, found=True)
    crops = np.stack([crop_and_infer(model, image, K, region, mirror)[0].image for mirror in (False, True)])
    fits = model.keypoint_fit(crops)
    assert fits.shape == (2,) and ((fits > 0) & (fits <= 1)).all() and fits[0] != fits[1]
    side, pose = side_by_fit(model, image, K, box[:2], box[2:], mask)
    assert side == ("left" if fits[1] > fits[0] else "right")
    crop, out, _ = crop_and_infer(model, image, K, region, side == "left")
    expected = (out["pose"][0].astype(np.float64) @ crop.rotation) * [-1.0 if side == "left" else 1.0, 1.0, 1.0]
    np.testing.assert_allclose(pose, expected, atol=1e-5)  # no side temperature: the better fit's pose
    with pytest.raises(Exception, match="no 2D keypoint stage to tell the side by"):
        load_model(tiny_checkpoints["crossmodal"]).keypoint_fit(crops)  # S1 here has no keypoint stage


def test_predict_takes_the_side_by_the_models_keypoint_fit(tiny_data, tiny_checkpoints, tiny_finder, tmp_path):
    """A model that saw right hands only (mirror_left) with a keypoint stage: predict cuts the
    finder's crop both ways and keeps the side whose keypoint maps peak higher; joints.json keeps
    both fits beside the finder's side; --hand still wins, and a model without the stage keeps the
    finder's side."""
    from crossmodal.predict import load_model, predict_image
    from crossmodal.predict.image import crop_and_infer
    from crossmodal.predict.outputs import write_prediction

    model = load_model(tiny_checkpoints["poe"])
    model.config.data.preprocess.mirror_left = True
    finder = load_finder(tiny_finder / "checkpoints" / "best.ckpt")
    checked = 0
    for index in frames_with_a_found_hand(tiny_data, tiny_finder)[:2]:
        image, _ = eval_image(tiny_data, index)
        pred = predict_image(model, image, finder=finder)
        crops = np.stack([crop_and_infer(model, pred.image, pred.K, pred.region, mirror)[0].image for mirror in (False, True)])
        fit_right, fit_left = model.keypoint_fit(crops)
        expected = "left" if fit_left > fit_right else "right"
        assert pred.side_fit == {"side": expected, "fit_right": pytest.approx(fit_right, abs=1e-4),
                                 "fit_left": pytest.approx(fit_left, abs=1e-4), "probability": 1.0,
                                 "side_temperature": 0.0,
                                 "joints": f"the {expected} hand's pose (no side temperature in the checkpoint)"}
        assert pred.hand.side == expected and pred.hand.mirror == (expected == "left")
        assert np.array_equal(pred.crop, crops[int(pred.hand.mirror)])  # the chosen hypothesis' crop, reused
        assert pred.hand.side_source.startswith("the model's keypoint fit (right ")
        assert pred.finder["side"] in ("left", "right")  # what the finder said is kept
        assert any("the model's keypoint fit takes" in n for n in pred.notes) == (pred.finder["side"] != expected)
        write_prediction(pred, model, tmp_path / str(index), None)
        rec = record(tmp_path / str(index))
        assert rec["hand"]["side_by_fit"]["side"] == expected and rec["crop"]["finder"]["side"] == pred.finder["side"]
        other = "left" if expected == "right" else "right"
        given = predict_image(model, image, finder=finder, side=other)
        assert given.side_fit is None and given.hand.side == other and given.hand.side_source == "--hand"
        checked += 1
    assert checked == 2
    plain = load_model(tiny_checkpoints["crossmodal"])  # no keypoint stage: the finder's side
    plain.config.data.preprocess.mirror_left = True
    pred = predict_image(plain, image, finder=finder)
    assert pred.side_fit is None and pred.hand.side == pred.finder["side"]


def test_with_a_side_temperature_predict_weighs_both_sides_poses(tiny_data, tiny_checkpoints, tiny_finder):
    """The joints are the two hypotheses' poses (each through the model, back in the image's camera)
    weighted by sigmoid(fit margin / T); the side and its crop stay the better fit's."""
    from crossmodal.predict import load_model, predict_image
    from crossmodal.predict.image import crop_and_infer

    model = load_model(tiny_checkpoints["poe"])
    model.config.data.preprocess.mirror_left = True
    finder = load_finder(tiny_finder / "checkpoints" / "best.ckpt")
    (index,) = frames_with_a_found_hand(tiny_data, tiny_finder)[:1]
    image, _ = eval_image(tiny_data, index)
    hard = predict_image(model, image, finder=finder)
    poses, fits = [], []
    for mirror in (False, True):
        crop, out, _ = crop_and_infer(model, hard.image, hard.K, hard.region, mirror)
        poses.append((out["pose"][0].astype(np.float64) @ crop.rotation) * [-1.0 if mirror else 1.0, 1.0, 1.0])
        fits.append(float(model.keypoint_fit(crop.image[None])[0]))
    np.testing.assert_allclose(hard.joints, poses[int(hard.hand.mirror)], atol=1e-5)  # T = 0: the choice
    model.side_temperature = abs(fits[0] - fits[1]) + 1e-3  # a margin of about one temperature: p well inside (0, 1)
    soft = predict_image(model, image, finder=finder)
    p_right = 1.0 / (1.0 + np.exp(-(fits[0] - fits[1]) / model.side_temperature))
    np.testing.assert_allclose(soft.joints, p_right * poses[0] + (1 - p_right) * poses[1], atol=1e-5)
    assert not np.allclose(soft.joints, hard.joints, atol=1e-4)
    assert soft.side_fit["probability"] == pytest.approx(max(p_right, 1 - p_right), abs=1e-4)
    assert soft.hand.side == hard.hand.side and np.array_equal(soft.crop, hard.crop)
    assert soft.side_fit["joints"] == "both sides' poses weighted by their probability"


def test_finder_eval_on_validation_frames_reproduces_the_validation_epe(tiny_data, tiny_checkpoints, tiny_finder):
    """--split validation crops the model's validation frames (the training cache's last rows):
    its ground-truth crops give the EPE the trainer validates with."""
    import lightning as L
    from omegaconf import OmegaConf

    from crossmodal.config import Config
    from crossmodal.data.datamodule import build_datamodule
    from crossmodal.pipeline.end_to_end import end_to_end, validation_frames
    from crossmodal.trained import load_trained

    ckpt = tiny_checkpoints["crossmodal"]
    module, _ = load_trained(ckpt)
    frames = validation_frames(module.cfg)
    assert len(frames) == 4 and frames.min() >= 12  # the last fifth of 20 training frames (16 cached)
    result = end_to_end(ckpt, load_finder(tiny_finder / "checkpoints" / "best.ckpt"), progress=False, split="validation")
    assert result["frames"] == len(frames) and "validation" in result["split"]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    validated = trainer.validate(module, datamodule=build_datamodule(OmegaConf.merge(OmegaConf.structured(Config), module.cfg)),
                                 verbose=False)[0]
    assert result["ground_truth_crops"]["epe_mean"] == pytest.approx(validated["val/epe_mean"], abs=1e-3)
    with pytest.raises(Exception, match="--split must be one of test, validation"):
        end_to_end(ckpt, load_finder(tiny_finder / "checkpoints" / "best.ckpt"), progress=False, split="train")


def test_a_box_alone_gets_the_hands_pixels_and_side_from_the_finder_inside_it(tiny_data, tiny_checkpoints, tiny_finder):
    """A model that turns its crop by the hand's pixels: with --bbox the finder looks inside the box
    for them (and for the side, unless --hand); an empty box is reported for that image alone."""
    from crossmodal.finder.data import mask_box
    from crossmodal.data.rhd import hand_mask, read_label_png
    from crossmodal.predict import NoHandFound, load_model, predict_image
    from test_predict import eval_frame

    model = load_model(tiny_checkpoints["poe"])
    model.config.data.preprocess.orient = True
    finder = load_finder(tiny_finder / "checkpoints" / "best.ckpt")
    image, mask_png, frame = eval_frame(tiny_data, 0)
    lo, hi = np.split(mask_box(hand_mask(read_label_png(mask_png), frame["hand_side"])), 2)
    x, y = int(lo[0] + 0.5), int(lo[1] + 0.5)
    box = (x, y, int(hi[0] + 0.5) - x, int(hi[1] + 0.5) - y)
    pred = predict_image(model, image, bbox=box, K=frame["K"], finder=finder)
    assert pred.region.source == "--bbox" and pred.finder["inside"] == "--bbox"
    uv = pred.region.hand_uv
    assert len(uv) > 0 and (uv >= lo - 0.5).all() and (uv <= hi + 0.5).all()  # the pixels stay inside the box
    assert pred.hand.side == pred.finder["side"] and pred.hand.side_source.startswith("finder inside --bbox")
    other = "left" if pred.finder["side"] == "right" else "right"
    given = predict_image(model, image, bbox=box, K=frame["K"], finder=finder, side=other)
    assert given.hand.side == other and given.hand.side_source == "--hand"
    assert any("overrides the finder's side" in n for n in given.notes)
    with pytest.raises(NoHandFound, match="inside --bbox|outside it"):
        predict_image(model, image, bbox=(0, 0, 4, 4), K=frame["K"], finder=finder)  # a corner with no hand
