"""RHD reader (and the synthetic-hand reader sharing it) on real files in RHD's published format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from realformat_fixtures import write_png, write_rhd_fixture
from conftest import raises_one_line

from crossmodal.data.rhd import RHDDataset, SyntheticDataset, choose_hand, hand_mask, hand_pixel_counts
from crossmodal.errors import ConfigError, DataError
from crossmodal.registry import DATASETS

SMALL = 24  # image side for tests that do not need RHD's 320 px


@pytest.fixture
def small(tmp_path: Path):
    return write_rhd_fixture(tmp_path / "RHD_published_v2", "training", num_frames=3, size=SMALL)


def test_reads_format_exact_frames(tmp_path: Path) -> None:
    fx = write_rhd_fixture(tmp_path / "RHD_published_v2", "evaluation", num_frames=2, size=320, first_id=5)
    ds = DATASETS.build("rhd", tmp_path / "RHD_published_v2", "evaluation")
    assert type(ds) is RHDDataset and len(ds) == 2 and ds.ids == [5, 6]
    for i, frame_id in enumerate((5, 6)):
        frame = ds[i]
        anno = fx.annotations[frame_id]
        side = fx.sides[frame_id]
        hand = slice(0, 21) if side == "left" else slice(21, 42)
        assert frame["hand_side"] == side and frame["index"] == i
        assert frame["image"].shape == (320, 320, 3) and frame["image"].dtype == np.uint8
        np.testing.assert_array_equal(frame["image"], np.asarray(Image.open(fx.path("color", frame_id))))
        assert frame["depth"].dtype == np.float32
        np.testing.assert_array_equal(frame["depth"], fx.depth_m[frame_id])
        np.testing.assert_array_equal(frame["mask"], np.asarray(Image.open(fx.path("mask", frame_id))))
        np.testing.assert_array_equal(frame["xyz"], anno["xyz"][hand])
        np.testing.assert_array_equal(frame["uv"], anno["uv_vis"][hand, :2])
        np.testing.assert_array_equal(frame["visible"], anno["uv_vis"][hand, 2] == 1)
        np.testing.assert_array_equal(frame["K"], anno["K"])
        np.testing.assert_array_equal(frame["K_depth"], anno["K"])
        np.testing.assert_array_equal(frame["depth_to_color"], np.eye(4))
        for key, dtype, shape in (("xyz", np.float32, (21, 3)), ("uv", np.float32, (21, 2)),
                                  ("visible", np.bool_, (21,)), ("K", np.float32, (3, 3)),
                                  ("depth_to_color", np.float32, (4, 4))):
            assert frame[key].dtype == dtype and frame[key].shape == shape, key
        assert ds.frame_path(i) == fx.path("color", frame_id)


def test_depth_decoding_is_exact_and_reads_rgb_not_bgr(small) -> None:
    rgb = np.zeros((SMALL, SMALL, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 2, 0)
    rgb[0, 1] = (1, 2, 200)  # the blue channel carries nothing
    rgb[0, 2] = (0x12, 0x34, 0)
    rgb[0, 3] = (255, 255, 0)
    rgb[0, 4] = (0, 0, 9)  # a BGR reader would see R=9 here: 9 * 256 / 65535 * 5 m
    write_png(small.path("depth", 0), rgb)
    depth = RHDDataset(small.root, "training")[0]["depth"]
    assert depth[0, 0] == np.float32(258 / 65535 * 5.0)
    assert depth[0, 1] == np.float32(258 / 65535 * 5.0)
    assert depth[0, 2] == np.float32(0x1234 / 65535 * 5.0)
    assert depth[0, 3] == np.float32(5.0)
    assert depth[0, 4] == 0.0


def _write_mask(fx, frame_id: int, left_px: int, right_px: int) -> None:
    mask = np.zeros((SMALL, SMALL), dtype=np.uint8)
    mask[1, :5] = 1  # person pixels count for neither hand
    flat = mask.reshape(-1)
    flat[SMALL * 3 : SMALL * 3 + left_px] = 2 + np.arange(left_px) % 16
    flat[SMALL * 10 : SMALL * 10 + right_px] = 18 + np.arange(right_px) % 16
    write_png(fx.path("mask", frame_id), mask)


@pytest.mark.parametrize("left_px, right_px, side", [(5, 4, "left"), (4, 5, "right"), (40, 0, "left")])
def test_hand_with_more_mask_pixels_is_returned(small, left_px: int, right_px: int, side: str) -> None:
    _write_mask(small, 0, left_px, right_px)
    # Visibility must not matter when the pixel counts differ: make the other hand the more visible one.
    uv_vis = small.annotations[0]["uv_vis"]
    uv_vis[:, 2] = 1.0
    uv_vis[:21 if side == "left" else 21:, 2] = 0.0
    small.write_annotations()
    ds = RHDDataset(small.root, "training")
    hand = slice(0, 21) if side == "left" else slice(21, 42)
    for labels in (ds[0], ds.annotation(0)):
        assert labels["hand_side"] == side
        np.testing.assert_array_equal(labels["xyz"], small.annotations[0]["xyz"][hand])
        np.testing.assert_array_equal(labels["uv"], uv_vis[hand, :2])


@pytest.mark.parametrize("left_visible, right_visible, side", [(16, 3, "left"), (10, 15, "right"), (7, 7, "right")])
def test_pixel_tie_goes_to_more_visible_keypoints_then_right(small, left_visible, right_visible, side) -> None:
    _write_mask(small, 1, 6, 6)
    uv_vis = small.annotations[1]["uv_vis"]
    uv_vis[:, 2] = 0.0
    uv_vis[:left_visible, 2] = 1.0
    uv_vis[21 : 21 + right_visible, 2] = 1.0
    small.write_annotations()
    frame = RHDDataset(small.root, "training")[1]
    assert frame["hand_side"] == side
    assert frame["visible"].sum() == (left_visible if side == "left" else right_visible)


def test_mask_helpers_count_only_hand_labels() -> None:
    mask = np.array([[0, 1, 2, 17, 18], [33, 34, 255, 5, 20]], dtype=np.uint8)
    assert hand_pixel_counts(mask) == (3, 3)
    np.testing.assert_array_equal(hand_mask(mask, "left"), [[0, 0, 1, 1, 0], [0, 0, 0, 1, 0]])
    np.testing.assert_array_equal(hand_mask(mask, "right"), [[0, 0, 0, 0, 1], [1, 0, 0, 0, 1]])
    assert choose_hand(mask, np.ones(42, dtype=bool)) == "right"


def test_annotation_does_not_decode_colour_or_depth(small) -> None:
    ds = RHDDataset(small.root, "training")
    expected = {k: v for k, v in ds[2].items() if k not in ("image", "depth", "mask")}
    small.path("color", 2).write_bytes(b"not a png")
    small.path("depth", 2).write_bytes(b"not a png")
    labels = ds.annotation(2)
    assert labels.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(labels[key], value)
    with pytest.raises(DataError):
        ds[2]


def test_indexing_and_synthetic_subclass(small) -> None:
    ds = RHDDataset(small.root, "training")
    assert ds[-1]["index"] == 2
    with pytest.raises(IndexError):
        ds[3]
    assert len(list(iter(ds))) == 3  # the sequence protocol stops at IndexError
    synthetic = DATASETS.build("synthetic", small.root, "training")
    assert isinstance(synthetic, SyntheticDataset)
    np.testing.assert_array_equal(synthetic[1]["xyz"], ds[1]["xyz"])
    assert (RHDDataset.TRAIN_SPLIT, RHDDataset.TEST_SPLIT) == ("training", "evaluation")


# ----- bad input: each a one-line DataError naming the file/key and what was expected -----


def test_missing_root_and_split_show_the_layout(tmp_path: Path, small) -> None:
    with pytest.raises(DataError) as excinfo:
        RHDDataset(tmp_path / "nowhere", "training")
    raises_one_line(excinfo, str(tmp_path / "nowhere"), "RHD_published_v2/{training,evaluation}/{color,depth,mask}")
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "evaluation")
    raises_one_line(
        excinfo,
        f"RHD split folder not found: {small.root / 'evaluation'} (expected RHD_published_v2/{{training,evaluation}}"
        "/{color,depth,mask}/%05d.png and anno_<split>.pickle)",
    )
    with pytest.raises(DataError) as excinfo:
        SyntheticDataset(small.root, "evaluation")
    raises_one_line(excinfo, "synthetic-hands split folder not found", "python -m crossmodal synth")
    with pytest.raises(ConfigError) as excinfo:
        RHDDataset(small.root, "train")
    raises_one_line(excinfo, "'train'", "'training'", "'evaluation'")


@pytest.mark.parametrize("kind", ["color", "depth", "mask"])
def test_missing_folder(small, kind: str) -> None:
    for png in (small.split_dir / kind).iterdir():
        png.unlink()
    (small.split_dir / kind).rmdir()
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")
    raises_one_line(excinfo, f"{kind} folder not found", str(small.split_dir / kind))


@pytest.mark.parametrize("kind", ["color", "depth", "mask"])
def test_annotated_frame_without_png_fails_at_construction(small, kind: str) -> None:
    small.path(kind, 1).unlink()
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")
    raises_one_line(excinfo, str(small.anno_path), f"no {kind} PNG", str(small.path(kind, 1)))


def test_more_pngs_than_annotations(small) -> None:
    del small.annotations[2]
    small.write_annotations()
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")
    raises_one_line(excinfo, str(small.split_dir / "color"), "without an annotation", "00002.png")


@pytest.mark.parametrize(
    "contents, expected",
    [(b"\x80\x04garbage", "not a readable pickle"), (pickle.dumps([1, 2]), "holds a list, expected a dict"),
     (pickle.dumps({"a": {}}), "has key 'a', expected non-negative integer frame ids")],
)
def test_bad_annotation_file(small, contents: bytes, expected: str) -> None:
    small.anno_path.write_bytes(contents)
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")
    raises_one_line(excinfo, str(small.anno_path), expected)


def test_missing_annotation_file(small) -> None:
    small.anno_path.unlink()
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")
    raises_one_line(excinfo, f"annotation file not found: {small.anno_path}")


@pytest.mark.parametrize(
    "key, value, expected",
    [("xyz", np.zeros((21, 3)), "key 'xyz' has shape (21, 3), expected (42, 3)"),
     ("uv_vis", np.zeros((42, 2)), "key 'uv_vis' has shape (42, 2), expected (42, 3)"),
     ("K", np.eye(4), "key 'K' has shape (4, 4), expected (3, 3)"),
     ("K", None, "has no key 'K'"),
     ("xyz", np.full((42, 3), np.nan), "key 'xyz' contains NaN")],
)
def test_wrong_annotation_arrays_name_id_and_key(small, key: str, value, expected: str) -> None:
    if value is None:
        del small.annotations[1][key]
    else:
        small.annotations[1][key] = value
    small.write_annotations()
    ds = RHDDataset(small.root, "training")  # per-frame checks wait for the frame
    ds.annotation(0)
    for read in (ds.annotation, ds.__getitem__):
        with pytest.raises(DataError) as excinfo:
            read(1)
        raises_one_line(excinfo, str(small.anno_path), "id 1", expected)


@pytest.mark.parametrize("kind", ["color", "depth", "mask"])
def test_png_deleted_after_construction_is_named(small, kind: str) -> None:
    ds = RHDDataset(small.root, "training")
    small.path(kind, 0).unlink()
    with pytest.raises(DataError) as excinfo:
        ds[0]
    raises_one_line(excinfo, "PNG not found", str(small.path(kind, 0)))


@pytest.mark.parametrize("kind", ["color", "depth", "mask"])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_is_named(small, kind: str, damage: str) -> None:
    path = small.path(kind, 1)
    data = path.read_bytes()
    path.write_bytes(b"\x89PNG not really" if damage == "garbage" else data[: len(data) // 2])
    ds = RHDDataset(small.root, "training")
    with pytest.raises(DataError) as excinfo:
        ds[1]
    raises_one_line(excinfo, "corrupt or unreadable", str(path))


@pytest.mark.parametrize("kind", ["depth", "mask"])
def test_wrong_size_png_names_file_and_both_sizes(small, kind: str) -> None:
    shape = (SMALL + 8, SMALL) if kind == "mask" else (SMALL + 8, SMALL, 3)
    write_png(small.path(kind, 0), np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")[0]
    raises_one_line(excinfo, str(small.path(kind, 0)), f"is {SMALL}x{SMALL + 8} (WxH)", f"expected {SMALL}x{SMALL}")


def test_grey_depth_png_is_rejected(small) -> None:
    write_png(small.path("depth", 0), np.full((SMALL, SMALL), 7, dtype=np.uint8))
    with pytest.raises(DataError) as excinfo:
        RHDDataset(small.root, "training")[0]
    raises_one_line(excinfo, str(small.path("depth", 0)), "mode L", "expected 8-bit RGB")
