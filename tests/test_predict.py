"""predict on synthetic test images with tiny trained checkpoints: the crop is the training crop,
the outputs exist and parse, and every bad input is a one-line error or a stated conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.cli import main
from crossmodal.data.geometry import project
from crossmodal.data.joints import JOINT_NAMES
from crossmodal.predict import (
    fit_root_translation,
    load_model,
    plan_hand,
    predict_image,
)
from crossmodal.registry import DATASETS
from crossmodal.data.datamodule import build_datamodule

pytestmark = pytest.mark.usefixtures("single_thread")


def data_root(tiny_data: list[str]) -> Path:
    return Path(next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root=")))


def eval_frame(tiny_data: list[str], index: int) -> tuple[Path, Path, dict]:
    """Colour PNG, mask PNG and the annotated frame of synthetic evaluation frame ``index``."""
    import crossmodal.data  # noqa: F401 - registers the datasets

    split = data_root(tiny_data) / "evaluation"
    frame = DATASETS.get("synthetic")(data_root(tiny_data), "evaluation")[index]
    return split / "color" / f"{index:05d}.png", split / "mask" / f"{index:05d}.png", frame



def hand_pixels(label_png: Path, side: str) -> np.ndarray:
    """One hand's pixels in an RHD-style part mask (2-17 left, 18-33 right)."""
    labels = np.asarray(Image.open(label_png))
    return (labels >= 2) & (labels <= 17) if side == "left" else (labels >= 18) & (labels <= 33)


@pytest.fixture(scope="module")
def poe_model(tiny_checkpoints):
    return load_model(tiny_checkpoints["poe"])


def run_predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------- the crop and the outputs' frame


def test_crop_and_joints_match_the_training_pipeline(tiny_data, poe_model):
    """With the frame's own K and mask, predict's crop is the cached training crop, byte for byte,
    and its joints are the model's output on that crop rotated back with R^T."""
    dm = build_datamodule(poe_model.config)
    dm.setup("test")
    reader = dm.datasets["test"].reader
    for row in range(3):
        cached = reader[row]
        image, mask, frame = eval_frame(tiny_data, int(cached["index"]))
        pred = predict_image(poe_model, image, mask, K=frame["K"], side=frame["hand_side"])
        assert np.array_equal(pred.crop, cached["image"])
        out = poe_model.predict(cached["image"][None])
        np.testing.assert_allclose(pred.joints, out["pose"][0] @ cached["rotation"], atol=1e-6)
        np.testing.assert_allclose(pred.cloud, out["cloud"][0] @ cached["rotation"], atol=1e-6)
        assert not np.allclose(cached["rotation"], np.eye(3))  # view correction really was undone


def test_root_fit_places_true_joints_on_their_projection(tiny_data):
    """Given the true root-relative joints and the box of their true projection, the overlay's root
    fit recovers the true root, so the overlay is exact when the pose is."""
    for index in range(3):
        _, _, frame = eval_frame(tiny_data, index)
        xyz, K = np.asarray(frame["xyz"], np.float64), np.asarray(frame["K"], np.float64)
        uv = project(xyz, K)
        root = fit_root_translation(xyz - xyz[0], K, uv.min(axis=0), uv.max(axis=0))
        np.testing.assert_allclose(root, xyz[0], atol=1e-5)


def test_bbox_gives_the_mask_crop_and_bone_mm_gives_millimetres(tiny_data, poe_model):
    image, mask, frame = eval_frame(tiny_data, 0)
    from_mask = predict_image(poe_model, image, mask, K=frame["K"], side=frame["hand_side"])
    rows, cols = np.nonzero(hand_pixels(mask, frame["hand_side"]))
    box = (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
    from_box = predict_image(poe_model, image, bbox=box, K=frame["K"], bone_mm=80.0)
    assert np.array_equal(from_box.crop, from_mask.crop)
    np.testing.assert_allclose(from_box.joints, 80.0 * from_mask.joints, rtol=1e-6)
    assert (from_box.units, from_mask.units) == ("mm", "normalised (bone 12->11 = 1)")


def test_other_hand_is_mirrored_when_training_data_holds_one_side(tiny_data, poe_model, tmp_path):
    """A model trained on left hands only (STB's rule): a right hand is flipped for the model and
    its prediction flipped back, i.e. the same as predicting the flipped image as a left hand."""
    image, labels, frame = eval_frame(tiny_data, 1)
    mask = tmp_path / "mask.png"  # binary: the user says which hand it is
    Image.fromarray(hand_pixels(labels, frame["hand_side"]).astype(np.uint8) * 255).save(mask)
    poe_model.config.data.dataset = "stb"  # the module-scoped model: restored below
    try:
        right = predict_image(poe_model, image, mask, K=frame["K"], side="right")
        flipped_image, flipped_mask = tmp_path / "flipped.png", tmp_path / "flipped_mask.png"
        Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped_image)
        Image.open(mask).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped_mask)
        K = np.array(frame["K"], np.float64)
        K[0, 2] = Image.open(image).width - 1 - K[0, 2]
        left = predict_image(poe_model, flipped_image, flipped_mask, K=K, side="left")
    finally:
        poe_model.config.data.dataset = "synthetic"
    assert right.hand.mirror and not left.hand.mirror
    assert "mirrored" in right.hand.statement and "left hands only" in right.hand.statement
    assert np.array_equal(right.crop, left.crop)
    np.testing.assert_allclose(right.joints, left.joints * [-1.0, 1.0, 1.0], atol=1e-6)
    width = Image.open(image).width
    np.testing.assert_allclose(right.uv[:, 0], width - 1 - left.uv[:, 0], atol=1e-6)  # the overlay mirrors too


def test_oriented_model_crops_like_the_training_pipeline_and_needs_the_hands_pixels(tiny_data, poe_model):
    """A model trained with preprocess.orient: predict's crop turned by the mask is the one
    preprocess_frame makes of the same frame, its joints are rotated back with that crop's R, and a
    --bbox (no hand pixels) is a one-line error that says what to give instead."""
    import dataclasses

    from crossmodal.data.preprocess import preprocess_frame
    from crossmodal.predict import InputError

    image, mask, frame = eval_frame(tiny_data, 2)
    poe_model.config.data.preprocess.orient = True  # the module-scoped model: restored below
    try:
        pred = predict_image(poe_model, image, mask, K=frame["K"], side=frame["hand_side"])
        with pytest.raises(InputError) as excinfo:
            predict_image(poe_model, image, bbox=(10, 10, 40, 40), K=frame["K"])
        cfg = poe_model.preprocess
    finally:
        poe_model.config.data.preprocess.orient = False
    sample = preprocess_frame(frame, cfg)
    assert np.array_equal(pred.crop, sample["image"])
    np.testing.assert_allclose(pred.rotation, sample["rotation"], atol=1e-6)
    np.testing.assert_allclose(pred.joints, poe_model.predict(sample["image"][None])["pose"][0] @ sample["rotation"], atol=1e-5)
    plain = preprocess_frame(frame, dataclasses.replace(cfg, orient=False))
    assert not np.allclose(plain["rotation"], sample["rotation"], atol=1e-3)  # the crop really was turned
    message = str(excinfo.value)
    assert "\n" not in message and "--bbox" in message and "--mask" in message and "finder" in message


@pytest.mark.parametrize("orient", [False, True])
def test_mirrored_image_gives_the_mirrored_pose(orient, tiny_data, poe_model, tmp_path):
    """A model trained with preprocess.mirror_left saw right hands only: a left hand's image is
    flipped for it and the pose flipped back, so predicting a left hand equals predicting its
    mirror image (a right hand) and mirroring the joints (x -> -x); the crop is the training one."""
    from crossmodal.data.preprocess import preprocess_frame

    image, labels, frame = eval_frame(tiny_data, 1)
    mask, flipped_image, flipped_mask = tmp_path / "mask.png", tmp_path / "flipped.png", tmp_path / "flipped_mask.png"
    Image.fromarray(hand_pixels(labels, frame["hand_side"]).astype(np.uint8) * 255).save(mask)
    Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped_image)
    Image.open(mask).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped_mask)
    K = np.array(frame["K"], np.float64)
    K_flipped = K.copy()
    K_flipped[0, 2] = Image.open(image).width - 1 - K[0, 2]
    pre = poe_model.config.data.preprocess
    pre.mirror_left, pre.orient = True, orient  # the module-scoped model: restored below
    try:
        left = predict_image(poe_model, image, mask, K=K, side="left")
        right = predict_image(poe_model, flipped_image, flipped_mask, K=K_flipped, side="right")
        cfg = poe_model.preprocess
    finally:
        pre.mirror_left, pre.orient = False, False
    assert left.hand.mirror and not right.hand.mirror and "preprocess.mirror_left" in left.hand.training_hands
    assert np.array_equal(left.crop, right.crop)
    np.testing.assert_allclose(left.joints, right.joints * [-1.0, 1.0, 1.0], atol=1e-6)
    if frame["hand_side"] == "left":  # the cache's crop of this frame is the one predict made
        assert np.array_equal(left.crop, preprocess_frame(frame, cfg)["image"])


def test_hand_plan_states_the_training_data():
    both = plan_hand("synthetic", None, "not given")
    assert not both.mirror and "left and right hands unmirrored" in both.statement
    assumed = plan_hand("stb", None, "not given")
    assert assumed.side == "left" and not assumed.mirror and "assumed" in assumed.statement


# ------------------------------------------------------------------------- the command's outputs


def test_predict_writes_joints_overlay_skeleton_and_cloud(tiny_data, tiny_checkpoints, tmp_path, capsys):
    import open3d as o3d

    image, mask, _ = eval_frame(tiny_data, 2)
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["poe"], "--image", image, "--mask", mask,
                                 "--out", tmp_path)
    assert code == 0, err
    folder = tmp_path / image.stem
    record = json.loads((folder / "joints.json").read_text())
    assert list(record["joints"]) == list(JOINT_NAMES)
    assert all(len(v) == 3 and all(np.isfinite(v)) for v in record["joints"].values())
    assert record["units"] == "normalised (bone 12->11 = 1)"
    assert record["hand"]["side"] in ("left", "right") and record["hand"]["mirrored"] is False
    assert "assumed (no --K)" in record["camera"]["intrinsics"] and "no --K given" in out
    assert "not measured" in record["overlay"]["method"]
    for name in ("overlay.png", "skeleton.png"):
        with Image.open(folder / name) as png:
            assert png.format == "PNG" and min(png.size) > 100
    cloud = o3d.io.read_point_cloud(str(folder / "cloud.ply"))
    points = np.asarray(cloud.points)
    model = load_model(tiny_checkpoints["poe"])
    assert len(points) == model.cloud_points == 64 == record["cloud"]["points"]
    colours = np.asarray(cloud.colors)
    assert colours.shape == (64, 3)
    # Coloured by depth: the nearest and the farthest point get the colormap's two ends.
    near, far = np.argmin(points[:, 2]), np.argmax(points[:, 2])
    from crossmodal.report import depth_colours

    np.testing.assert_allclose(colours[[near, far]], depth_colours(np.array([0.0, 1.0])), atol=1 / 255)  # 8-bit PLY
    assert f"{image} -> {folder}/" in out


def image_and_mask_folders(tiny_data, tmp_path: Path, indices) -> tuple[Path, Path, Path]:
    """Folders of the evaluation frames' images and masks, and the last mask copied."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for index in indices:
        image, mask, _ = eval_frame(tiny_data, index)
        shutil.copy(image, images / image.name)
        shutil.copy(mask, masks / mask.name)
    return images, masks, mask


def test_folder_of_images_with_matching_masks(tiny_data, tiny_checkpoints, tmp_path, capsys):
    images, masks, _ = image_and_mask_folders(tiny_data, tmp_path, (0, 3))
    (images / "notes.txt").write_text("not an image, and not picked up from a folder")
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["crossmodal"], "--image", images,
                                 "--mask", masks, "--out", tmp_path / "out")
    assert code == 0, err
    for stem in ("00000", "00003"):
        record = json.loads((tmp_path / "out" / stem / "joints.json").read_text())
        assert record["cloud"] is None and record["strategy"] == "crossmodal"
        assert not (tmp_path / "out" / stem / "cloud.ply").exists()
    assert "has no cloud decoder; no cloud.ply is written" in out


def test_a_bad_image_in_a_folder_is_reported_and_skipped(tiny_data, tiny_checkpoints, tmp_path, capsys):
    images, masks, mask = image_and_mask_folders(tiny_data, tmp_path, (0, 3))
    (images / "00001.png").write_text("plain text, not a PNG")
    shutil.copy(mask, masks / "00001.png")
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["crossmodal"], "--image", images,
                                 "--mask", masks, "--out", tmp_path / "out")
    assert code == 2
    assert "00001.png: not a readable image" in out and "(skipped)" in out
    assert "1 of 3 images skipped" in err and "the other 2 prediction folders are written" in err
    for stem in ("00000", "00003"):
        assert (tmp_path / "out" / stem / "joints.json").is_file()
    assert not (tmp_path / "out" / "00001").exists()


# ------------------------------------------------------------------------- bad input


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not_an_image", "not a readable image"),
        ("mask_of_other_size", "is 100x80 but the image is 320x320; the mask must have the image's size"),
        ("empty_mask", "is empty (no hand pixels)"),
        ("box_outside", "--bbox 400,10,30,30 lies outside the 320x320 image"),
        ("missing_checkpoint", "checkpoint not found"),
        ("corrupt_checkpoint", "not a readable checkpoint"),
        ("cloud_without_decoder", "has no cloud decoder (its decoders: pose)"),
        ("bad_intrinsics", "--K: expected 4 comma-separated numbers fx,fy,cx,cy, got '300,300'"),
        ("bad_bone", "--bone-mm must be a length > 0 in millimetres"),
        ("masks_do_not_pair", "--mask: 2 masks for 1 images"),
        ("missing_image", "no such file or folder"),
    ],
)
def test_bad_input_is_one_line_error(case, expected, tiny_data, tiny_checkpoints, tmp_path, capsys):
    image, mask, _ = eval_frame(tiny_data, 0)
    ckpt = tiny_checkpoints["poe"]
    extra: list = []
    if case == "not_an_image":
        image = write_text(tmp_path / "photo.png", "plain text, not a PNG")
    elif case == "mask_of_other_size":
        Image.new("L", (100, 80), 255).save(tmp_path / "m.png")
        extra = ["--mask", tmp_path / "m.png"]
    elif case == "empty_mask":
        Image.new("L", (320, 320), 0).save(tmp_path / "m.png")
        extra = ["--mask", tmp_path / "m.png"]
    elif case == "box_outside":
        extra = ["--bbox", "400,10,30,30"]
    elif case == "missing_checkpoint":
        ckpt = tmp_path / "nothing.ckpt"
    elif case == "corrupt_checkpoint":
        ckpt = write_text(tmp_path / "broken.ckpt", "garbage")
    elif case == "cloud_without_decoder":
        ckpt, extra = tiny_checkpoints["crossmodal"], ["--cloud"]
    elif case == "bad_intrinsics":
        extra = ["--K", "300,300"]
    elif case == "bad_bone":
        extra = ["--bone-mm", "-3"]
    elif case == "masks_do_not_pair":
        extra = ["--mask", mask, mask]
    elif case == "missing_image":
        image = tmp_path / "absent.png"
    if "--mask" not in extra and "--bbox" not in extra:
        extra.append("--whole-image")  # without a box predict would look for a hand finder first
    code, out, err = run_predict(capsys, "--ckpt", ckpt, "--image", image, *extra, "--out", tmp_path / "out")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (tmp_path / "out" / image.stem / "joints.json").exists()


@pytest.mark.parametrize(
    "mode, note",
    [("L", "is grayscale; converted to RGB"), ("RGBA", "is RGBA; alpha dropped, converted to RGB"),
     ("I;16", "is I;16 grayscale; scaled to 8 bits and converted to RGB")],
)
def test_grayscale_and_rgba_are_converted_and_said(mode, note, tiny_data, tiny_checkpoints, tmp_path, capsys):
    image, _, _ = eval_frame(tiny_data, 0)
    rgb = Image.open(image).convert("RGB")
    converted = tmp_path / f"hand_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(converted)
    else:
        rgb.convert(mode).save(converted)
    assert Image.open(converted).mode == mode
    code, out, err = run_predict(capsys, "--ckpt", tiny_checkpoints["crossmodal"], "--image", converted,
                                 "--bbox", "100,100,120,120", "--out", tmp_path)
    assert code == 0, err
    assert f"note: {converted} {note}" in out
    assert any(note in n for n in json.loads((tmp_path / converted.stem / "joints.json").read_text())["notes"])


def test_image_far_larger_than_the_crop(tiny_checkpoints, poe_model, tmp_path):
    rng = np.random.default_rng(0)
    big = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (1800, 2400, 3), dtype=np.uint8)).save(big, quality=80)
    pred = predict_image(poe_model, big)  # whole image as the hand box, assumed intrinsics
    assert pred.crop.shape == (32, 32, 3) and pred.region.source == "whole image"
    assert np.isfinite(pred.joints).all() and np.isfinite(pred.uv).all()
    assert "focal length = image width (2400 px)" in pred.K_statement
    # Inside the image, each crop pixel averages ~100x100 noise pixels (box filter before sampling):
    # flat grey, no aliasing. (The square crop reaches beyond the 4:3 image, where it reads black.)
    centre = pred.crop[12:20, 12:20].astype(np.float64)
    assert abs(centre.mean() - 127.5) < 5 and centre.std() < 5


@pytest.mark.parametrize("which", ["image", "mask"])
def test_decompression_bomb_image_or_mask_is_a_one_line_error(tmp_path, monkeypatch, which):
    """An image or mask whose pixel count Pillow refuses as a decompression bomb is an InputError
    naming the option and the file, like any unreadable input."""
    from crossmodal.predict import read_hand_mask, read_image
    from crossmodal.predict.inputs import InputError

    path = tmp_path / f"{which}.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x 100: Pillow raises
    with pytest.raises(InputError) as err:
        read_image(path) if which == "image" else read_hand_mask(path, (64, 64), None)
    option = "--image" if which == "image" else "--mask"
    assert str(err.value).startswith(f"{option} {path}: too large to decode safely") and "\n" not in str(err.value)
