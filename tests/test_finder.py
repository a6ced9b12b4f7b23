"""The hand finder: every registered finder through one contract, the hand-locating rule on
constructed outputs, a real training run on tiny synthetic data, and its run folder and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossmodal.config import FinderRunConfig, load_config
from crossmodal.errors import ConfigError
from crossmodal.finder.data import load_frames
from crossmodal.finder.locate import locate_hand
from crossmodal.finder.metrics import box_iou
from crossmodal.finder.model import HandFinder, load_finder
from crossmodal.finder.resize import area_matrix, area_resize
from crossmodal.finder.train import evaluate_frames
from crossmodal.registry import FINDERS
from encoders.base import ShapeError

pytestmark = pytest.mark.usefixtures("single_thread")
FINDER_NAMES = FINDERS.names()


# ------------------------------------------------------------------------- the registry contract


@pytest.mark.parametrize("name", FINDER_NAMES)
def test_finder_gives_three_class_logits_at_any_size(name):
    net = FINDERS.build(name).eval()
    for height, width in ((48, 48), (37, 50)):  # odd sizes are padded and cropped back
        image = FINDERS.get(name).example_input(2, torch.Generator().manual_seed(0), size=64)[..., :height, :width]
        assert net(image).shape == (2, 3, height, width)


@pytest.mark.parametrize("name", FINDER_NAMES)
def test_finder_backward_reaches_every_parameter_and_eval_is_deterministic(name):
    torch.manual_seed(0)
    net = FINDERS.build(name)
    image = FINDERS.get(name).example_input(2, torch.Generator().manual_seed(1))
    net(image).logsumexp(dim=1).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing
    net.eval()
    assert torch.equal(net(image), net(image))


@pytest.mark.parametrize("name", FINDER_NAMES)
def test_finder_rejects_wrong_input_in_one_line(name):
    with pytest.raises(ShapeError) as excinfo:
        FINDERS.build(name)(torch.rand(2, 1, 32, 32))
    assert f"{name} finder: expected image of shape (B, 3, H, W), got (2, 1, 32, 32)" == str(excinfo.value)


def test_unknown_finder_and_a_dataset_without_masks_are_config_errors():
    with pytest.raises(ConfigError, match="finder.name: unknown finder 'nope'; registered finders: fcn_small"):
        load_config(None, ["finder.name=nope"], schema=FinderRunConfig)
    with pytest.raises(ConfigError, match="'stb' does not have"):
        load_config(None, ["data.dataset=stb"], schema=FinderRunConfig)


# ------------------------------------------------------------------------- resizing and the locating rule


def test_area_resize_averages_each_output_pixels_footprint():
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (45, 70), dtype=np.uint8)
    # An integer factor is PIL's BOX filter (PIL works in fixed point and rounds to uint8).
    pil = np.asarray(Image.fromarray(image).resize((14, 9), Image.BOX), dtype=np.float64)
    assert np.abs(area_resize(torch.from_numpy(image).double(), (9, 14)).numpy() - pil).max() <= 1.0
    # Any factor: the mean over the footprint, here by replicating every pixel 13 x 20 times.
    fine = np.repeat(np.repeat(image.astype(np.float64), 13, axis=0), 20, axis=1)  # 585 x 1400
    naive = fine.reshape(13, 45, 20, 70).mean(axis=(1, 3))
    np.testing.assert_allclose(area_resize(torch.from_numpy(image).double(), (13, 20)).numpy(), naive, atol=1e-9)
    np.testing.assert_allclose(area_matrix(7, 3).sum(axis=1), 1.0)


def logits_with(hands: list[tuple[int, slice, slice]], size: int = 40) -> torch.Tensor:
    """Logits (1, 3, size, size) that say background everywhere but in the given (class, rows, cols) blocks."""
    logits = torch.zeros(1, 3, size, size)
    logits[0, 0] = 5.0
    for cls, rows, cols in hands:
        logits[0, 0, rows, cols] = -5.0
        logits[0, cls, rows, cols] = 5.0
    return logits


def test_two_hands_give_the_box_and_side_of_the_larger_one():
    # A small right hand top-left, a larger left hand bottom-right: the image is 4x the logits' size.
    located = locate_hand(logits_with([(2, slice(2, 6), slice(2, 6)), (1, slice(20, 32), slice(18, 34))]), (160, 160))
    assert bool(located.found(0.5, 4)[0])
    assert float(located.right[0]) < 0.01  # left
    u0, v0, u1, v1 = located.box[0].tolist()
    # Block rows 20..31, cols 18..33 of the logits cover image pixels 80..127 x 72..135 (edges +-0.5, +- a
    # pixel of interpolation).
    assert abs(u0 - 71.5) <= 2 and abs(u1 - 135.5) <= 2 and abs(v0 - 79.5) <= 2 and abs(v1 - 127.5) <= 2
    assert located.any_hand[0, 10, 10]  # the other hand is still seen as hand pixels
    assert not located.hand[0, 10, 10]  # ... but is not part of the located hand


def test_no_hand_is_not_found():
    located = locate_hand(logits_with([]), (80, 80))
    assert not bool(located.found(0.5, 4)[0])


def test_box_iou():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_iou(a, b).tolist() == pytest.approx([50 / 150, 0.0])


# ------------------------------------------------------------------------- the person's own pixels


def test_the_forearm_is_its_own_class_at_any_scale_and_not_a_hand_pixel():
    """RHD label 1 (the rest of the person) becomes PERSON where it holds the largest area share,
    left and right hands 1 and 2; the full-resolution hand pixels leave it out."""
    from crossmodal.finder.data import PERSON, LABEL_TO_CLASS, shrink_frame

    labels = np.zeros((40, 40), dtype=np.uint8)
    labels[:, 0:12] = 1  # the forearm
    labels[:, 12:24] = 20  # a right hand's part
    labels[:, 24:28] = 5  # a left hand's part
    _, classes = shrink_frame(np.zeros((40, 40, 3), dtype=np.uint8), labels, 20)
    naive = LABEL_TO_CLASS[labels[::2, ::2]]  # each 2x2 cell holds one label here
    np.testing.assert_array_equal(classes, naive)
    assert set(np.unique(classes)) == {0, 1, 2, PERSON}
    # One cell of 7 hand, 6 person and 3 background pixels: the hand's 7 are set against the other
    # 9, as they were before the person had a class of its own, and the person outweighs the background.
    mixed = np.array([20] * 7 + [1] * 6 + [0] * 3, dtype=np.uint8).reshape(4, 4)
    _, small = shrink_frame(np.zeros((4, 4, 3), dtype=np.uint8), mixed, 1)
    assert small.tolist() == [[PERSON]]
    assert np.isin(LABEL_TO_CLASS[labels], (1, 2)).sum() == 40 * 16


def test_person_pixels_are_background_with_their_own_weight():
    """The weighted cross-entropy against its naive twin: a mean over pixels, each counted weight times."""
    from crossmodal.finder.data import PERSON
    from crossmodal.finder.module import FinderModule, augment, targets

    classes = torch.tensor([[[0, 1, 2, PERSON], [PERSON, PERSON, 0, 2]]])
    target, weight = targets(classes, 4.0)
    assert target.tolist() == [[[0, 1, 2, 0], [0, 0, 0, 2]]] and weight.tolist() == [[[1, 1, 1, 4], [4, 4, 1, 1]]]
    logits = torch.randn(1, 3, 2, 4, generator=torch.Generator().manual_seed(0))
    module = FinderModule(_finder_config(person_weight=4.0, dice_weight=0.0))
    loss, _ = module.loss(logits, classes)
    log_p = logits.log_softmax(dim=1)[0]
    terms = [(-log_p[target[0, r, c], r, c], weight[0, r, c]) for r in range(2) for c in range(4)]
    naive = sum(t * w for t, w in terms) / sum(w for _, w in terms)
    torch.testing.assert_close(loss, naive)
    plain = FinderModule(_finder_config(person_weight=1.0, dice_weight=0.0)).loss(logits, classes)[0]
    torch.testing.assert_close(plain, torch.nn.functional.cross_entropy(logits, target))
    # Mirroring swaps the hands and keeps the person.
    torch.manual_seed(0)
    _, flipped = augment(torch.zeros(64, 3, 2, 4), classes.expand(64, 2, 4), flip=True, jitter=0.0)
    assert {tuple(f.flatten().tolist()) for f in flipped} == {(0, 1, 2, PERSON, PERSON, PERSON, 0, 2),
                                                                (PERSON, 1, 2, 0, 1, 0, PERSON, PERSON)}


def _finder_config(**optim) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.structured(FinderRunConfig), resolve=True)
    cfg["optim"].update(optim)
    return cfg


# ------------------------------------------------------------------------- a real training run


def data_root(tiny_data: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in tiny_data if o.startswith("data.root="))


def test_short_training_lifts_iou_above_a_floor(tiny_data, tiny_finder):
    """Untrained, the finder's hand pixels miss the hands (IoU ~0); after ~480 steps on 16 frames,
    the full-resolution mask IoU on the 6 unseen evaluation frames clears 0.1 and boxes overlap."""
    run = tiny_finder
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["frames"] == 6 and metrics["split"] == "evaluation"
    assert metrics["mask_iou"] > 0.1 and metrics["box_iou"] > 0.1, metrics
    assert 0.0 <= metrics["side_accuracy"] <= 1.0
    torch.manual_seed(0)
    frames = load_frames("synthetic", data_root(tiny_data), "evaluation", 64, keep_full=True, progress=False, workers=1)
    trained = load_finder(run / "checkpoints" / "best.ckpt")
    untrained = HandFinder(FINDERS.build("fcn_small"), trained.config, "untrained")
    before, _ = evaluate_frames(untrained, frames, (320, 320))
    after, _ = evaluate_frames(trained, frames, (320, 320))
    assert before["mask_iou"] < 0.05 < 0.1 < after["mask_iou"]
    assert after == pytest.approx({k: metrics[k] for k in after})  # the report is this evaluation


def test_run_folder_checkpoints_report_and_latest_link(tiny_finder):
    run = tiny_finder
    for name in ("config.yaml", "metrics.json", "report.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "csv/metrics.csv"):
        assert (run / name).is_file(), name
    assert (run.parent / "latest-finder").resolve() == run.resolve()


def test_finder_checkpoint_is_not_a_pose_model(tiny_finder, tiny_checkpoints):
    from crossmodal.trained import load_trained_module

    with pytest.raises(ConfigError, match="is a hand finder, not a pose model; give it with --finder"):
        load_trained_module(tiny_finder / "checkpoints" / "best.ckpt")
    with pytest.raises(ConfigError, match="is a pose model, not a hand finder; train one with `make finder`"):
        load_finder(tiny_checkpoints["poe"])


def test_missing_dataset_leaves_no_run_folder(tmp_path, capsys):
    from crossmodal.cli import main

    code = main(["finder", "data.dataset=rhd", f"data.root={tmp_path / 'absent'}", f"out_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "RHD root folder not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
