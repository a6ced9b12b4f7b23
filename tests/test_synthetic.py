"""The procedural hand dataset: RHD's exact on-disk format, geometry, visibility, determinism."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.data.codecs import RHD_DEPTH_MAX_M, decode_rhd_depth, encode_rhd_depth
from crossmodal.data.joints import BONES
from crossmodal.data.synthetic import (
    SPLITS,
    Scene,
    frame_rng,
    generate,
    render_frame,
    render_scene,
    sample_scene,
    writer,
)
from crossmodal.data.synthetic.png import encode_png
from crossmodal.data.synthetic.skeleton import (
    FINGER_FLEX_LIMITS,
    forward_kinematics,
    fist_pose,
    open_pose,
    reference_shape,
    sample_pose,
    sample_shape,
)
from crossmodal.errors import ConfigError

SEED = 3
N_TRAIN, N_TEST = 5, 2
FINGERTIPS = [1, 5, 9, 13, 17]
MCPS = [8, 12, 16, 20]
DEPTH_STEP = RHD_DEPTH_MAX_M / 65535


def project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    p = xyz.astype(np.float64) @ K.astype(np.float64).T
    return p[:, :2] / p[:, 2:3]


def read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        im.load()
        return im.mode, np.asarray(im)


def load_anno(split_dir: Path, split: str) -> dict:
    with open(split_dir / f"anno_{split}.pickle", "rb") as f:
        return pickle.load(f)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rot_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def rot_y(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


def crafted_scene(pose, rotation: np.ndarray, side: str = "right") -> Scene:
    """The reference hand 35 cm in front of the camera, joint centroid on the optical axis."""
    base = sample_scene(np.random.default_rng(0))
    shape = reference_shape()
    centre = forward_kinematics(shape, pose).joints.mean(axis=0)
    if side == "left":
        centre = centre * np.array([-1.0, 1.0, 1.0])
    K = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 160.0], [0.0, 0.0, 1.0]])
    translation = np.array([0.0, 0.0, 0.35]) - rotation @ centre
    return dataclasses.replace(
        base, side=side, shape=shape, pose=pose, rotation=rotation, translation=translation, K=K
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "serial"
    generate(out, N_TRAIN, N_TEST, seed=SEED, workers=1, progress=False)
    return out


def test_layout_dtypes_and_shapes_match_rhd(dataset: Path) -> None:
    for split, count in (("training", N_TRAIN), ("evaluation", N_TEST)):
        split_dir = dataset / split
        assert sorted(p.name for p in split_dir.iterdir()) == sorted(["color", "depth", "mask", f"anno_{split}.pickle"])
        names = [f"{i:05d}.png" for i in range(count)]
        for kind, mode, shape in (("color", "RGB", (320, 320, 3)), ("depth", "RGB", (320, 320, 3)), ("mask", "L", (320, 320))):
            assert sorted(p.name for p in (split_dir / kind).iterdir()) == names  # no temporary files left
            for name in names:
                got_mode, pixels = read_png(split_dir / kind / name)
                assert (got_mode, pixels.shape, pixels.dtype) == (mode, shape, np.uint8)
        anno = load_anno(split_dir, split)
        assert list(anno) == list(range(count)) and all(type(k) is int for k in anno)
        for entry in anno.values():
            assert sorted(entry) == ["K", "uv_vis", "xyz"]
            assert entry["xyz"].shape == (42, 3) and entry["uv_vis"].shape == (42, 3) and entry["K"].shape == (3, 3)
            assert all(np.isfinite(v).all() for v in entry.values())
            assert set(np.unique(entry["uv_vis"][:, 2])) <= {0.0, 1.0}


def test_files_hold_the_rendered_frame_and_depth_decodes_within_quantisation(dataset: Path) -> None:
    for split, count in (("training", N_TRAIN), ("evaluation", N_TEST)):
        anno = load_anno(dataset / split, split)
        for i in range(count):
            frame = render_frame(SEED, split, i)
            name = f"{i:05d}.png"
            assert np.array_equal(read_png(dataset / split / "color" / name)[1], frame.color)
            mask = read_png(dataset / split / "mask" / name)[1]
            assert np.array_equal(mask, frame.mask)
            depth = decode_rhd_depth(read_png(dataset / split / "depth" / name)[1])
            hand = mask >= 2
            assert hand.sum() > 50
            assert np.abs(depth - frame.depth_m).max() <= DEPTH_STEP / 2 + 1e-6
            assert np.all(depth[mask == 0] == 0.0) and np.all(depth[mask > 0] > 0.0)
            # Hand centres are placed 0.3-0.8 m away; the hand itself spans about +-12 cm.
            assert 0.3 - 0.12 <= depth[hand].min() and depth[hand].max() <= 0.8 + 0.12
            for key in ("xyz", "uv_vis", "K"):
                assert np.array_equal(anno[i][key], getattr(frame, key))


def test_mask_shows_one_hand_and_annotations_agree(dataset: Path) -> None:
    sides_seen = set()
    for split, count in (("training", N_TRAIN), ("evaluation", N_TEST)):
        anno = load_anno(dataset / split, split)
        for i in range(count):
            mask = read_png(dataset / split / "mask" / f"{i:05d}.png")[1]
            labels = set(np.unique(mask).tolist())
            left, right = labels & set(range(2, 18)), labels & set(range(18, 34))
            assert bool(left) != bool(right) and labels <= {0, 1} | left | right
            side = "left" if left else "right"
            sides_seen.add(side)
            assert render_frame(SEED, split, i).hand_side == side
            shown = slice(0, 21) if side == "left" else slice(21, 42)
            hidden = slice(21, 42) if side == "left" else slice(0, 21)
            vis = anno[i]["uv_vis"][:, 2]
            assert vis[shown].sum() >= 3 and vis[hidden].sum() == 0
            assert 17 in labels or 33 in labels  # the palm is in view
            # The hidden hand is a finite hand in front of the camera, outside the image.
            other = anno[i]["xyz"][hidden]
            assert np.all(other[:, 2] > 0.1)
            u = anno[i]["uv_vis"][hidden, 0]
            assert np.all((u < 0) | (u > 320))
            # Visible keypoints fall on their own hand's pixels.
            uv = np.rint(anno[i]["uv_vis"][shown, :2]).astype(int)
            on = vis[shown] == 1
            lo = 2 if side == "left" else 18
            pix = mask[uv[on, 1], uv[on, 0]]
            assert np.all((pix >= lo) & (pix < lo + 16) | (pix == 1))
    assert sides_seen == {"left", "right"} or N_TRAIN + N_TEST < 6


def test_uv_is_exactly_the_projection_of_xyz(dataset: Path) -> None:
    for split in SPLITS:
        for entry in load_anno(dataset / split, split).values():
            np.testing.assert_allclose(entry["uv_vis"][:, :2], project(entry["xyz"], entry["K"]), rtol=1e-6, atol=1e-4)


def test_visible_joints_lie_just_under_the_rendered_surface() -> None:
    checked = 0
    for i in range(12):
        frame = render_frame(SEED, "training", i)
        shown = slice(0, 21) if frame.hand_side == "left" else slice(21, 42)
        xyz, uv_vis = frame.xyz[shown], frame.uv_vis[shown]
        for j in np.flatnonzero(uv_vis[:, 2] == 1):
            col, row = np.rint(uv_vis[j, :2]).astype(int)
            surface = frame.depth_m[row, col]
            assert 0.0 < surface <= xyz[j, 2] + 1e-4
            assert xyz[j, 2] - surface <= frame.joint_tolerance[j]
            if j not in (0, 4, *MCPS):  # finger joints: within a finger's thickness
                assert xyz[j, 2] - surface <= 0.02
            checked += 1
    assert checked > 100
    assert np.all(render_frame(SEED, "training", 0).joint_tolerance <= 0.04)


def test_a_fist_seen_from_the_back_hides_its_fingertips() -> None:
    # Hand frame: +y distal, +z palmar. rot_z(180) keeps +z pointing away from the
    # camera (we see the back of the hand) and points the fingers up in the image.
    rng = np.random.default_rng(0)
    fist = render_scene(crafted_scene(fist_pose(), rot_z(180)), rng)
    vis = fist.uv_vis[21:, 2]
    assert np.all(vis[FINGERTIPS[1:]] == 0)  # curled under the palm
    assert np.all(vis[MCPS] == 1)  # the knuckles face the camera
    palm_view = render_scene(crafted_scene(open_pose(), rot_y(180) @ rot_z(180)), rng)
    assert np.all(palm_view.uv_vis[21:, 2] == 1)  # a flat hand facing the camera shows all joints
    # Seen from the thumb's side, the little finger is behind the others.
    side_view = render_scene(crafted_scene(open_pose(), rot_y(-90) @ rot_z(180)), rng)
    assert np.all(side_view.uv_vis[21 + 17 : 21 + 20, 2] == 0) and np.all(side_view.uv_vis[21 + 1 : 21 + 4, 2] == 1)


def test_left_hand_is_the_mirror_image_of_the_right() -> None:
    mirror = np.diag([-1.0, 1.0, 1.0])
    rotation = rot_y(30) @ rot_z(160)
    right = render_scene(crafted_scene(sample_pose(np.random.default_rng(5)), rotation), np.random.default_rng(1))
    left_scene = crafted_scene(sample_pose(np.random.default_rng(5)), mirror @ rotation @ mirror, side="left")
    left = render_scene(left_scene, np.random.default_rng(1))
    np.testing.assert_allclose(left.xyz[:21], right.xyz[21:] * np.array([-1.0, 1.0, 1.0]), atol=1e-6)
    assert left.uv_vis[:21, 2].tolist() == right.uv_vis[21:, 2].tolist()
    right_px, left_px = np.sum(right.mask >= 18), np.sum((left.mask >= 2) & (left.mask < 18))
    assert abs(int(right_px) - int(left_px)) <= 0.02 * right_px


def test_bone_lengths_follow_anatomy() -> None:
    rng = np.random.default_rng(0)
    mcp_pip, ratios = [], []
    for _ in range(300):
        shape = sample_shape(rng)
        j = forward_kinematics(shape, sample_pose(rng)).joints
        length = {b: np.linalg.norm(j[b[0]] - j[b[1]]) for b in BONES}
        mcp_pip.append(length[(12, 11)])
        ratios.append(
            [
                length[(12, 11)] / length[(11, 10)],  # middle proximal / middle phalanx ~1.6
                length[(11, 10)] / length[(10, 9)],  # middle / distal ~1.2
                length[(8, 7)] / length[(12, 11)],  # index / middle proximal ~0.9
                length[(20, 19)] / length[(12, 11)],  # little / middle proximal ~0.75
                np.linalg.norm(j[12]) / length[(12, 11)],  # wrist-MCP / proximal phalanx ~1.9
                length[(3, 2)] / length[(4, 3)],  # thumb proximal phalanx / metacarpal ~0.7
            ]
        )
    mcp_pip, ratios = np.array(mcp_pip), np.array(ratios)
    assert 0.035 <= mcp_pip.min() and mcp_pip.max() <= 0.056 and 0.042 <= mcp_pip.mean() <= 0.048
    low = np.array([1.35, 1.0, 0.78, 0.62, 1.6, 0.55])
    high = np.array([1.85, 1.45, 1.0, 0.85, 2.2, 0.85])
    assert np.all(ratios.min(axis=0) >= low) and np.all(ratios.max(axis=0) <= high)
    # The written keypoints carry the same anatomy (lengths survive placement in the camera).
    frame = render_frame(SEED, "training", 1)
    xyz = frame.xyz[:21] if frame.hand_side == "left" else frame.xyz[21:]
    assert 1.35 <= np.linalg.norm(xyz[12] - xyz[11]) / np.linalg.norm(xyz[11] - xyz[10]) <= 1.85


def test_sampled_poses_use_the_range_of_motion() -> None:
    rng = np.random.default_rng(0)
    flex = np.array([sample_pose(rng).finger_flex for _ in range(400)])  # (400, 4, 3)
    assert np.all(flex >= FINGER_FLEX_LIMITS[:, 0]) and np.all(flex <= FINGER_FLEX_LIMITS[:, 1])
    # Straight and strongly bent fingers both occur at every joint.
    assert np.all(flex.min(axis=0) < 10.0) and np.all(flex.max(axis=0) > 60.0)


def test_same_seed_gives_identical_bytes_whatever_the_counts(dataset: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    generate(small, 3, 1, seed=SEED, workers=1, progress=False)
    for split, count in (("training", 3), ("evaluation", 1)):
        for kind in ("color", "depth", "mask"):
            for i in range(count):
                name = f"{split}/{kind}/{i:05d}.png"
                assert (small / name).read_bytes() == (dataset / name).read_bytes(), name
        small_anno, big_anno = load_anno(small / split, split), load_anno(dataset / split, split)
        for i in range(count):
            assert all(np.array_equal(small_anno[i][k], big_anno[i][k]) for k in ("xyz", "uv_vis", "K"))
    other_seed = render_frame(SEED + 1, "training", 0).color
    assert not np.array_equal(other_seed, read_png(dataset / "training/color/00000.png")[1])
    assert not np.array_equal(render_frame(SEED, "evaluation", 0).color, render_frame(SEED, "training", 0).color)


def test_parallel_output_is_identical_to_serial(dataset: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "parallel"
    generate(parallel, N_TRAIN, N_TEST, seed=SEED, workers=2, progress=False)
    assert tree_bytes(parallel) == tree_bytes(dataset)


def test_regenerating_smaller_removes_stale_frames_and_failed_runs_leave_no_pickle(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    generate(out, 4, 1, seed=0, workers=1, progress=False)
    generate(out, 2, 1, seed=0, workers=1, progress=False)
    assert sorted(p.name for p in (out / "training" / "color").iterdir()) == ["00000.png", "00001.png"]
    assert list(load_anno(out / "training", "training")) == [0, 1]

    real_render = writer.render_frame

    def failing_render(seed: int, split: str, index: int):
        if index == 1:
            raise RuntimeError("interrupted")
        return real_render(seed, split, index)

    monkeypatch.setattr(writer, "render_frame", failing_render)
    with pytest.raises(RuntimeError):
        generate(out, 3, 1, seed=0, workers=1, progress=False)
    # The old pickle no longer claims the folder is complete, and no temporary file is left.
    assert not (out / "training" / "anno_training.pickle").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_bad_arguments_are_one_line_config_errors(tmp_path: Path) -> None:
    for kwargs in ({"n_train": -1, "n_test": 1}, {"n_train": 1, "n_test": 1, "workers": 0}, {"n_train": 1.5, "n_test": 1}):
        with pytest.raises(ConfigError) as info:
            generate(tmp_path / "x", progress=False, **kwargs)
        assert "\n" not in str(info.value) and "synthetic" in str(info.value)
    with pytest.raises(ConfigError, match="train.*training, evaluation"):
        frame_rng(0, "train", 0)


def test_depth_box_encoding_equals_whole_image_encoding() -> None:
    depth = render_frame(SEED, "training", 2).depth_m
    assert np.array_equal(writer.encode_depth(depth), encode_rhd_depth(depth))
    assert not writer.encode_depth(np.zeros((4, 4), np.float32)).any()


def test_png_encoder_is_lossless_for_grey_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for shape in ((320, 320, 3), (31, 17), (1, 1, 3)):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        path = tmp_path / "x.png"
        path.write_bytes(encode_png(pixels))
        mode, decoded = read_png(path)
        assert mode == ("RGB" if len(shape) == 3 else "L") and np.array_equal(decoded, pixels)
