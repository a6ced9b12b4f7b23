"""STB reader on real files in STB's published format (PNGs + MATLAB label files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from realformat_fixtures import STB_SEQUENCES, write_png, write_stb_fixture, write_stb_label
from conftest import raises_one_line
from scipy.spatial.transform import Rotation

from crossmodal.data.stb import STBCalibration, STBDataset, intrinsics, rodrigues
from crossmodal.errors import ConfigError, DataError
from crossmodal.registry import DATASETS

SMALL = (16, 12)  # (W, H) for tests that do not need STB's 640x480
B1 = ("B1Counting", "B1Random")

# RHD joint j comes from STB joint STB_OF_RHD[j], written out by hand from the two orders:
# RHD: wrist, thumb tip..root, index, middle, ring, little; STB: palm, little, ring,
# middle, index, thumb, each MCP..tip.
STB_OF_RHD = [0, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]


@pytest.fixture
def small(tmp_path: Path):
    return write_stb_fixture(tmp_path / "STB", sequences=B1, num_frames=2, size=SMALL)


def test_reads_format_exact_frames_with_published_calibration(tmp_path: Path) -> None:
    fx = write_stb_fixture(tmp_path / "STB", sequences=B1, num_frames={"B1Counting": 2, "B1Random": 1})
    ds = DATASETS.build("stb", fx.root, "test")
    assert type(ds) is STBDataset and len(ds) == 3
    to_color = Rotation.from_rotvec([0.00531, -0.01196, 0.00301]).inv()  # independent of the reader's Rodrigues
    t_mm = np.array([-24.0381, -0.4563, -1.2326])
    for i, (seq, n) in enumerate([("B1Counting", 0), ("B1Counting", 1), ("B1Random", 0)]):
        frame = ds[i]
        assert ds.locate(i) == (seq, n) and frame["index"] == i
        assert frame["image"].shape == (480, 640, 3) and frame["image"].dtype == np.uint8
        np.testing.assert_array_equal(frame["image"], np.asarray(Image.open(fx.color_path(seq, n))))
        assert frame["depth"].shape == (480, 640) and frame["depth"].dtype == np.float32
        assert frame["mask"] is None and frame["hand_side"] == "left"
        assert frame["visible"].dtype == np.bool_ and frame["visible"].all()
        depth_mm = fx.hand_para[seq][:, :, n].T  # (21, 3) STB order
        expected = to_color.apply(depth_mm - t_mm)[STB_OF_RHD] / 1000.0
        np.testing.assert_allclose(frame["xyz"], expected, atol=1e-6)
        assert frame["xyz"].dtype == np.float32 and frame["uv"].dtype == np.float32
        u = 607.92271 * expected[:, 0] / expected[:, 2] + 314.78337
        v = 607.88192 * expected[:, 1] / expected[:, 2] + 236.42484
        np.testing.assert_allclose(frame["uv"], np.stack([u, v], 1), atol=1e-3)
        np.testing.assert_allclose(frame["K"], [[607.92271, 0, 314.78337], [0, 607.88192, 236.42484], [0, 0, 1]])
        np.testing.assert_allclose(frame["K_depth"], [[475.62768, 0, 336.41179], [0, 474.77709, 238.77962], [0, 0, 1]])
        # depth_to_color brings depth-camera points (metres) onto the colour-frame labels.
        depth_points = np.concatenate([depth_mm[STB_OF_RHD] / 1000.0, np.ones((21, 1))], 1)
        np.testing.assert_allclose((depth_points @ frame["depth_to_color"].T)[:, :3], expected, atol=1e-6)
        # The hand's depth pixels lie where its joints project in the depth camera.
        palm_u, palm_v = (frame["K_depth"] @ (depth_mm[0] / depth_mm[0, 2]))[:2]
        assert abs(frame["depth"][int(round(palm_v)), int(round(palm_u))] - depth_mm[0, 2] / 1000.0) < 0.02
        annotation = ds.annotation(i)
        assert annotation.keys() == frame.keys() - {"image", "depth", "mask"}
        np.testing.assert_array_equal(annotation["xyz"], frame["xyz"])


def test_depth_decoding_is_exact(small) -> None:
    w, h = SMALL
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[0, 0] = (0x34, 0x12, 0)  # 0x1234 = 4660 mm
    rgb[0, 1] = (0x34, 0x12, 99)  # blue carries nothing
    rgb[0, 2] = (255, 255, 0)
    rgb[0, 3] = (0, 1, 0)
    write_png(small.depth_path("B1Random", 1), rgb)
    depth = STBDataset(small.root, "test")[3]["depth"]
    assert depth[0, 0] == np.float32(4.660) and depth[0, 1] == np.float32(4.660)
    assert depth[0, 2] == np.float32(65.535) and depth[0, 3] == np.float32(0.256)
    assert depth[0, 4] == 0.0


def _single_label_dataset(tmp_path: Path, joints_mm: np.ndarray, calibration: STBCalibration) -> STBDataset:
    fx = write_stb_fixture(tmp_path / "STB", sequences=B1, num_frames=1, size=SMALL)
    for seq in B1:
        write_stb_label(fx.label_path(seq), joints_mm.T[:, :, None])
    return STBDataset(fx.root, "test", calibration=calibration)


def test_joint_reordering_and_translation_with_zero_rotation(tmp_path: Path) -> None:
    stb_joints = np.array([[10.0 * j, 100.0 + j, 500.0 + 5 * j] for j in range(21)])  # mm, depth camera
    calibration = STBCalibration(K_color=intrinsics(500, 400, 320, 240), rotation_vector=np.zeros(3),
                                 translation_mm=np.array([10.0, 20.0, 30.0]))
    frame = _single_label_dataset(tmp_path, stb_joints, calibration)[0]
    # Hand-computed: colour = depth - T; RHD joint 1 (thumb tip) is STB joint 20 (thumb tip).
    np.testing.assert_allclose(frame["xyz"][1], [0.190, 0.100, 0.570], atol=1e-7)
    np.testing.assert_allclose(frame["uv"][1], [320 + 500 * 190 / 570, 240 + 400 * 100 / 570], rtol=1e-6)
    np.testing.assert_allclose(frame["xyz"][0], [-0.010, 0.080, 0.470], atol=1e-7)  # palm centre stays joint 0
    np.testing.assert_allclose(frame["xyz"][4], [0.160, 0.097, 0.555], atol=1e-7)  # thumb MCP = STB 17
    np.testing.assert_allclose(frame["xyz"][12], [0.080, 0.089, 0.515], atol=1e-7)  # middle MCP = STB 9
    np.testing.assert_allclose(frame["xyz"][20], [0.000, 0.081, 0.475], atol=1e-7)  # little MCP = STB 1
    expected = (stb_joints[STB_OF_RHD] - [10.0, 20.0, 30.0]) / 1000.0
    np.testing.assert_allclose(frame["xyz"], expected, atol=1e-7)
    np.testing.assert_allclose(frame["depth_to_color"][:3, 3], [-0.010, -0.020, -0.030], atol=1e-9)


@pytest.mark.parametrize(
    "rotation_vector, depth_point_mm, color_point_mm",
    [
        # 90 degrees about z: R maps x->y, y->-x, so R^-1 (x, y, z) = (y, -x, z).
        ((0.0, 0.0, np.pi / 2), (100.0, 200.0, 500.0), (200.0, -100.0, 500.0)),
        # 90 degrees about x: R maps y->z, z->-y, so R^-1 (x, y, z) = (x, z, -y).
        ((np.pi / 2, 0.0, 0.0), (100.0, -300.0, 200.0), (100.0, 200.0, 300.0)),
    ],
)
def test_ninety_degree_rotations(tmp_path: Path, rotation_vector, depth_point_mm, color_point_mm) -> None:
    joints = np.tile(np.array([[0.0, 0.0, 400.0]]), (21, 1))
    joints[20] = depth_point_mm  # STB thumb tip -> RHD joint 1
    calibration = STBCalibration(K_color=intrinsics(500, 400, 320, 240), rotation_vector=np.array(rotation_vector),
                                 translation_mm=np.zeros(3))
    frame = _single_label_dataset(tmp_path, joints, calibration)[0]
    np.testing.assert_allclose(frame["xyz"][1], np.array(color_point_mm) / 1000.0, atol=1e-7)
    x, y, z = color_point_mm
    np.testing.assert_allclose(frame["uv"][1], [320 + 500 * x / z, 240 + 400 * y / z], atol=1e-4)


def test_rodrigues_matches_an_independent_implementation() -> None:
    for r in ([0.00531, -0.01196, 0.00301], [0.3, -1.2, 2.0], [0.0, 0.0, 0.0]):
        np.testing.assert_allclose(rodrigues(np.array(r)), Rotation.from_rotvec(r).as_matrix(), atol=1e-12)


def test_frame_count_comes_from_each_label_file(tmp_path: Path) -> None:
    fx = write_stb_fixture(tmp_path / "STB", sequences=B1, num_frames={"B1Counting": 3, "B1Random": 2}, size=SMALL)
    # One labelled frame as MATLAB saves it: 3x21, the trailing singleton axis dropped.
    write_stb_label(fx.label_path("B1Random"), fx.hand_para["B1Random"][:, :, 0])
    assert scipy.io.loadmat(fx.label_path("B1Random"))["handPara"].shape == (3, 21)
    ds = STBDataset(fx.root, "test")
    assert len(ds) == 4  # images beyond the labelled frames (SK_color_1) are ignored
    assert ds.locate(3) == ("B1Random", 0) and ds.frame_path(3) == fx.color_path("B1Random", 0)
    assert ds.locate(-2) == ("B1Counting", 2)
    with pytest.raises(IndexError):
        ds[4]


def test_splits_are_b2_to_b6_and_b1(tmp_path: Path) -> None:
    fx = write_stb_fixture(tmp_path / "STB", sequences=STB_SEQUENCES, num_frames=1, size=SMALL)
    train, test = STBDataset(fx.root, "train"), STBDataset(fx.root, "test")
    assert (STBDataset.TRAIN_SPLIT, STBDataset.TEST_SPLIT) == ("train", "test")
    assert [train.locate(i)[0] for i in range(len(train))] == [s for s in STB_SEQUENCES if not s.startswith("B1")]
    assert [test.locate(i)[0] for i in range(len(test))] == ["B1Counting", "B1Random"]
    np.testing.assert_allclose(test[1]["xyz"], STBDataset(fx.root, "test").annotation(1)["xyz"])
    assert len(train) == 10


# ----- bad input: each a one-line DataError naming the file/key and what was expected -----


def test_missing_root_images_or_labels_folder(tmp_path: Path, small) -> None:
    with pytest.raises(DataError) as excinfo:
        STBDataset(tmp_path / "nowhere", "test")
    raises_one_line(excinfo, str(tmp_path / "nowhere"), "images/<seq>/SK_color_<i>.png", "labels/<seq>_SK.mat")
    (small.root / "labels").rename(small.root / "moved")
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")
    raises_one_line(excinfo, f"STB folder not found: {small.root / 'labels'}")
    with pytest.raises(ConfigError) as excinfo:
        STBDataset(small.root, "training")
    raises_one_line(excinfo, "'training'", "'train'", "'test'")


def test_missing_sequence_folder(small) -> None:
    folder = small.root / "images" / "B1Random"
    folder.rename(small.root / "images" / "elsewhere")
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")
    raises_one_line(excinfo, f"STB sequence folder not found: {folder}")


def test_missing_label_file(small) -> None:
    small.label_path("B1Counting").unlink()
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")
    raises_one_line(excinfo, f"STB label file not found: {small.label_path('B1Counting')}")


@pytest.mark.parametrize(
    "contents, expected",
    [({"handParams": np.zeros((3, 21, 2))}, "has no 'handPara' (its variables: handParams)"),
     ({"handPara": np.zeros((3, 20, 2))}, "'handPara' has shape (3, 20, 2), expected 3x21xN"),
     ({"handPara": np.zeros((21, 3, 2))}, "'handPara' has shape (21, 3, 2), expected 3x21xN"),
     ({"handPara": np.full((3, 21, 2), np.nan)}, "'handPara' must hold finite numbers")],
)
def test_bad_label_contents(small, contents: dict, expected: str) -> None:
    scipy.io.savemat(str(small.label_path("B1Random")), contents)
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")
    raises_one_line(excinfo, str(small.label_path("B1Random")), expected)


def test_corrupt_label_file(small) -> None:
    small.label_path("B1Random").write_bytes(b"MATLAB 5.0 MAT-file, but then nothing")
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")
    raises_one_line(excinfo, str(small.label_path("B1Random")), "not a readable MATLAB file")


@pytest.mark.parametrize("kind", ["color", "depth"])
def test_fewer_images_than_labels(small, kind: str) -> None:
    path = small.color_path("B1Counting", 1) if kind == "color" else small.depth_path("B1Counting", 1)
    path.unlink()
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")
    raises_one_line(excinfo, f"holds 1 of the 2 SK_{kind} images labelled in {small.label_path('B1Counting')}",
                    f"first missing: SK_{kind}_1.png")


@pytest.mark.parametrize("kind", ["color", "depth"])
def test_png_deleted_after_construction_or_corrupt(small, kind: str) -> None:
    ds = STBDataset(small.root, "test")
    gone = small.color_path("B1Random", 0) if kind == "color" else small.depth_path("B1Random", 0)
    gone.unlink()
    with pytest.raises(DataError) as excinfo:
        ds[2]
    raises_one_line(excinfo, "PNG not found", str(gone))
    bad = small.color_path("B1Random", 1) if kind == "color" else small.depth_path("B1Random", 1)
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError) as excinfo:
        ds[3]
    raises_one_line(excinfo, "corrupt or unreadable", str(bad))
    ds.annotation(3)  # labels need no image


def test_depth_png_of_wrong_size(small) -> None:
    w, h = SMALL
    write_png(small.depth_path("B1Counting", 0), np.zeros((h + 2, w, 3), dtype=np.uint8))
    with pytest.raises(DataError) as excinfo:
        STBDataset(small.root, "test")[0]
    raises_one_line(excinfo, str(small.depth_path("B1Counting", 0)), f"is {w}x{h + 2} (WxH)", f"expected {w}x{h}")
