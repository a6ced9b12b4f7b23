"""Pose losses (losses/) and the anatomical measurements under them (crossmodal/kinematics.py),
each against a naive twin written with loops, on synthetic hands and on poses that break a limit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossmodal import kinematics
from crossmodal.config import load_config
from crossmodal.data.joints import BONES, PARENTS
from crossmodal.data.synthetic.scene import render_frame
from crossmodal.registry import POSE_LOSSES
from losses.projection2d import fit_root, fit_root_weak_perspective, project


def _poses(count: int, seed: int = 5) -> np.ndarray:
    """Root-relative synthetic hands in bone units (bone 12 -> 11), left hands mirrored to right
    ones, as the CPU profile's data pipeline makes them."""
    out = []
    for i in range(count):
        frame = render_frame(seed, "training", i)
        own = (frame.xyz[:21] if frame.hand_side == "left" else frame.xyz[21:]).astype(np.float64)
        if frame.hand_side == "left":
            own[:, 0] *= -1.0
        out.append((own - own[0]) / np.linalg.norm(own[12] - own[11]))
    return np.stack(out)


@pytest.fixture(scope="module")
def poses() -> np.ndarray:
    return _poses(24)


# ---------------------------------------------------------------- naive twins

def _naive_bone_lengths(p):
    return np.array([math.dist(p[c], p[pa]) for pa, c in BONES])


def _naive_root_angles(p):
    roots = [4, 8, 12, 16, 20]
    out = []
    for a, b in zip(roots[:-1], roots[1:]):
        u, v = p[a] - p[0], p[b] - p[0]
        out.append(math.acos(float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))))
    return np.array(out)


def _naive_joint_angles(p):
    normal = np.cross(p[8] - p[0], p[20] - p[0])
    normal /= np.linalg.norm(normal)
    out = []
    for tip in (1, 5, 9, 13, 17):
        chain = [0, tip + 3, tip + 2, tip + 1, tip]
        for k in range(3):
            x = p[chain[k + 1]] - p[chain[k]]
            x /= np.linalg.norm(x)
            c = p[chain[k + 2]] - p[chain[k + 1]]
            c /= np.linalg.norm(c)
            y = normal - np.dot(normal, x) * x
            y /= np.linalg.norm(y)
            z = np.cross(x, y)
            out.append([math.atan2(np.dot(c, y), np.dot(c, x)), math.atan2(np.dot(c, z), np.dot(c, x))])
    return np.array(out)


def test_measurements_match_their_naive_twins(poses) -> None:
    got = kinematics.measure(torch.as_tensor(poses))
    for i, p in enumerate(poses):
        np.testing.assert_allclose(got["bone_lengths"][i].numpy(), _naive_bone_lengths(p), rtol=1e-10)
        np.testing.assert_allclose(got["root_bone_angles"][i].numpy(), _naive_root_angles(p), atol=1e-6)
        np.testing.assert_allclose(got["joint_angles"][i].numpy(), _naive_joint_angles(p), atol=1e-9)


def test_chains_follow_the_skeleton() -> None:
    for chain in kinematics.CHAINS:
        assert all(PARENTS[child] == parent for parent, child in zip(chain[:-1], chain[1:]))


def _naive_hinge(value, lo, hi):
    return sum(max(lo_i - v_i, 0.0) + max(v_i - hi_i, 0.0) for v_i, lo_i, hi_i in zip(value.ravel(), lo.ravel(), hi.ravel()))


def test_each_term_matches_a_naive_hinge_and_is_zero_on_the_frames_that_set_the_limits(poses) -> None:
    loss = POSE_LOSSES.build("biomech")
    fitted = loss.fit(poses[:16])
    assert fitted["frames"] == 16 and len(fitted["bone_lengths"]["min"]) == 20
    terms = loss(torch.as_tensor(poses[:16], dtype=torch.float32), {})
    assert all(float(v) == pytest.approx(0.0, abs=1e-6) for v in terms.values()), terms
    others = torch.as_tensor(poses[16:], dtype=torch.float32)
    got = loss(others, {})
    values = kinematics.measure(others.double())
    for group in kinematics.GROUPS:
        lo, hi = (b.numpy() for b in loss.bounds()[group])
        naive = np.mean([_naive_hinge(v.numpy(), lo, hi) for v in values[group]])
        assert float(got[group]) == pytest.approx(naive, rel=1e-4, abs=1e-6), group


def _bent(p: np.ndarray, joint: int, child: int, angle: float) -> np.ndarray:
    """``p`` with the chain beyond ``joint`` rotated by ``angle`` about the palm normal crossed with the bone."""
    q = p.copy()
    bone = q[child] - q[joint]
    normal = np.cross(q[8] - q[0], q[20] - q[0])
    axis = np.cross(bone, normal)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    beyond = [j for j in range(21) if _descends(j, joint) and j != joint]
    q[beyond] = (q[beyond] - q[joint]) @ rot.T + q[joint]
    return q


def _descends(j: int, ancestor: int) -> bool:
    while j != -1:
        if j == ancestor:
            return True
        j = PARENTS[j]
    return False


@pytest.mark.parametrize("broken", ["bone_lengths", "root_bone_angles", "joint_angles"])
def test_a_pose_that_breaks_one_limit_is_charged_in_that_term(poses, broken) -> None:
    loss = POSE_LOSSES.build("biomech")
    loss.fit(poses)
    p = poses[0].copy()
    if broken == "bone_lengths":  # the index distal bone twice as long, same direction
        p[5] = p[6] + 2.0 * (p[5] - p[6])
    elif broken == "root_bone_angles":  # the whole little finger swung far out of the palm's spread
        little = [20, 19, 18, 17]
        axis = np.cross(p[16] - p[0], p[20] - p[0])
        axis /= np.linalg.norm(axis)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + math.sin(1.2) * k + (1 - math.cos(1.2)) * k @ k
        p[little] = (p[little] - p[0]) @ rot.T + p[0]
    else:  # the index PIP bent 150 degrees backwards
        p = _bent(p, 7, 6, -2.6)
    terms = {k: float(v) for k, v in loss(torch.as_tensor(p[None], dtype=torch.float32), {}).items()}
    assert terms[broken] > 1e-3, terms
    if broken != "root_bone_angles":  # swinging a finger also turns its MCP's frame
        assert all(v == pytest.approx(0.0, abs=1e-5) for k, v in terms.items() if k != broken), terms
    fractions = kinematics.broken_fractions(torch.as_tensor(np.stack([poses[0], p])), loss.bounds())
    assert fractions[broken] == 0.5 and fractions["all"] == 0.5


def test_a_labelled_pose_at_another_size_is_within_the_bounds(poses) -> None:
    """The labels are in units of their own bone 12 -> 11, whose bound is therefore [1, 1]: a
    prediction of the right shape but 3% larger must not count as out of bounds."""
    bounds = kinematics.limits(poses)
    fractions = kinematics.broken_fractions(torch.as_tensor(poses[:8] * 1.03), bounds)
    assert fractions["all"] == 0.0, fractions
    stretched = poses[:8].copy()
    stretched[:, 5] = stretched[:, 6] + 2.0 * (stretched[:, 5] - stretched[:, 6])  # one bone, not the size
    assert kinematics.broken_fractions(torch.as_tensor(stretched), bounds)["bone_lengths"] == 1.0


def test_mean_excess_is_the_mean_distance_beyond_the_bounds_in_readable_units(poses) -> None:
    bounds = kinematics.limits(poses)
    assert all(v == pytest.approx(0.0, abs=1e-4) for v in kinematics.mean_excess(torch.as_tensor(poses[:8] * 1.05), bounds).values())
    p = poses[0].copy()
    p = _bent(p, 7, 6, -2.6)  # the index PIP bent 150 degrees backwards
    excess = kinematics.mean_excess(torch.as_tensor(p[None]), bounds)
    lo, hi = (b.numpy() for b in bounds["joint_angles"])
    angles = _naive_joint_angles(p)
    naive = np.mean(np.clip(lo - angles, 0, None) + np.clip(angles - hi, 0, None)) * 180.0 / math.pi
    assert excess["joint_angles"] == pytest.approx(naive, rel=1e-4) and excess["joint_angles"] > 1.0
    assert excess["bone_lengths"] == pytest.approx(0.0, abs=1e-4)


def test_unfitted_bounds_are_a_one_line_error() -> None:
    loss = POSE_LOSSES.build("biomech")
    with pytest.raises(Exception, match="never fitted"):
        loss(torch.zeros(1, 21, 3), {})


# ---------------------------------------------------------------- projection

def _camera_batch(poses: np.ndarray, seed: int = 0) -> tuple[dict, torch.Tensor]:
    rng = np.random.default_rng(seed)
    n = len(poses)
    t = np.stack([rng.uniform(-2, 2, n), rng.uniform(-2, 2, n), rng.uniform(12, 30, n)], 1)
    K = np.tile(np.array([[80.0, 0, 32], [0, 80.0, 32], [0, 0, 1]]), (n, 1, 1))
    K[:, 0, 1] = rng.uniform(-1, 1, n)  # a skewed crop K still fits
    cam = poses + t[:, None]
    q = cam @ K.transpose(0, 2, 1)
    uv = q[..., :2] / q[..., 2:]
    batch = {"uv": torch.as_tensor(uv, dtype=torch.float32), "K": torch.as_tensor(K, dtype=torch.float32),
             "image": torch.zeros(n, 3, 64, 64), "labeled": torch.zeros(n, dtype=torch.bool),
             "uv_only": torch.ones(n, dtype=torch.bool)}
    return batch, torch.as_tensor(t)


def _naive_fit_root(p, uv, K):
    rows, rhs = [], []
    for j in range(len(p)):
        for axis in (0, 1):
            a = uv[j, axis] * K[2] - K[axis]
            rows.append(a)
            rhs.append(-float(a @ p[j]))
    return np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]


def test_root_fit_recovers_the_camera_translation_and_matches_least_squares(poses) -> None:
    batch, t = _camera_batch(poses[:6])
    p = torch.as_tensor(poses[:6])
    got = fit_root(p, batch["uv"].double(), batch["K"].double())
    np.testing.assert_allclose(got.numpy(), t.numpy(), rtol=1e-4)
    noisy = batch["uv"].double() + torch.randn(6, 21, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = fit_root(p, noisy, batch["K"].double())
    for i in range(6):
        np.testing.assert_allclose(got[i].numpy(), _naive_fit_root(poses[i], noisy[i].numpy(), batch["K"][i].double().numpy()),
                                   rtol=1e-7)


def test_reprojection_is_zero_at_the_truth_and_pulls_a_wrong_pose_back(poses) -> None:
    loss = POSE_LOSSES.build("projection2d")
    batch, t = _camera_batch(poses[:6])
    truth = torch.as_tensor(poses[:6], dtype=torch.float32)
    assert float(loss(truth, batch)["reprojection"]) < 1e-3
    wrong = truth.clone()
    wrong[:, 5:9] *= 1.3  # the index finger too long
    wrong.requires_grad_(True)
    value = loss(wrong, batch)["reprojection"]
    assert float(value.detach()) > 0.1
    value.backward()
    assert wrong.grad[:, 5:9].abs().sum() > 0
    labelled = dict(batch, labeled=torch.ones(6, dtype=torch.bool), uv_only=torch.zeros(6, dtype=torch.bool))
    assert float(loss(wrong, labelled)["reprojection"]) == 0.0
    np.testing.assert_allclose(project(truth.double() + t[:, None], batch["K"].double()).numpy(), batch["uv"].numpy(), atol=1e-3)


def _naive_weak_perspective(p, uv, K):
    q = (np.linalg.inv(K) @ np.c_[uv, np.ones(len(uv))].T).T[:, :2]
    # unknowns: scale s and shift (a, b): s * p_xy + (a, b) = q
    A = np.zeros((2 * len(p), 3))
    A[0::2, 0], A[0::2, 1] = p[:, 0], 1.0
    A[1::2, 0], A[1::2, 2] = p[:, 1], 1.0
    s, a, b = np.linalg.lstsq(A, q.reshape(-1), rcond=None)[0]
    depth = 1.0 / s
    return np.array([a * depth, b * depth, depth]) - np.r_[p[:, :2].mean(0) * 0, p[:, 2].mean()]


def test_weak_perspective_fit_matches_least_squares_and_is_near_the_truth_for_a_far_hand(poses) -> None:
    batch, t = _camera_batch(poses[:6])
    p = torch.as_tensor(poses[:6])
    got = fit_root_weak_perspective(p, batch["uv"].double(), batch["K"].double())
    for i in range(6):
        np.testing.assert_allclose(got[i].numpy(), _naive_weak_perspective(poses[i], batch["uv"][i].double().numpy(),
                                                                            batch["K"][i].double().numpy()), rtol=1e-6)
    # the hand spans a few bone units at 12-30 units away: weak perspective is off by a fraction
    assert float((got[:, 2] - t[:, 2]).abs().max()) < 0.1 * float(t[:, 2].min())


@pytest.mark.parametrize("case", ["random", "huge", "behind", "flat"])
def test_a_wild_pose_costs_a_bounded_term_with_finite_gradients(case, poses) -> None:
    """Early in training the predicted pose is anything; the algebraic root fit alone can put joints
    at or behind the camera, and the projection then runs to millions (a training run diverged so)."""
    batch, _ = _camera_batch(poses[:8])
    g = torch.Generator().manual_seed(3)
    wild = {"random": torch.randn(8, 21, 3, generator=g), "huge": 50 * torch.randn(8, 21, 3, generator=g),
            "behind": torch.as_tensor(poses[:8], dtype=torch.float32) * torch.tensor([1.0, 1.0, -40.0]),
            "flat": torch.zeros(8, 21, 3) + 1e-4 * torch.randn(8, 21, 3, generator=g)}[case].requires_grad_(True)
    loss = POSE_LOSSES.build("projection2d")
    value = loss(wild, batch)["reprojection"] / loss.weight
    # 42 coordinates in [-1, 1] crop units with the labels inside the crop, depths floored at a tenth
    # of the hand's: at most about 42 x 2; the algebraic fit alone gives thousands to millions here
    assert math.isfinite(float(value.detach())) and float(value.detach()) < 100.0
    value.backward()
    assert torch.isfinite(wild.grad).all()


# ---------------------------------------------------------------- every registered loss; training

@pytest.mark.parametrize("name", POSE_LOSSES.names())
def test_every_registered_pose_loss_gives_finite_weighted_terms(name, poses) -> None:
    loss = POSE_LOSSES.build(name)
    if loss.needs_labelled_poses:
        loss.fit(poses)
    batch, _ = _camera_batch(poses[:4])
    pose = torch.as_tensor(poses[:4], dtype=torch.float32).requires_grad_(True)
    terms = loss(pose, batch)
    assert terms and all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
    sum(terms.values()).backward()
    assert pose.grad is not None and torch.isfinite(pose.grad).all()
    with pytest.raises(Exception, match="has no option 'nope'"):
        from alignment.base import build_module

        build_module(POSE_LOSSES, name, 8, {"nope": 1}, "model.pose_losses")


def test_weak_2d_training_with_both_losses_writes_the_limits_and_the_anatomy_metrics(tiny_data, tmp_path, single_thread):
    from crossmodal.train import train

    cfg = load_config(None, [*tiny_data, "model.strategy=poe", f"out_dir={tmp_path}", "name=weak2d",
                             "trainer.max_steps=2", "data.labeled_fraction=0.5", "data.unlabeled_2d=true",
                             "model.pose_losses=[biomech,projection2d]",
                             "model.encoder_options.rgb_resnet18.keypoints=true"])
    result = train(cfg)
    limits = json.loads((result.run_dir / "pose_limits.json").read_text())
    assert limits["biomech"]["frames"] == 8  # half of the 16 training frames (20, 20% validate)
    assert 0.0 <= result.metrics["limits_broken"] <= 1.0 and "limits_broken_labels/joint_angles" in result.metrics
    logged = (result.run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    for term in ("pose_loss/biomech/joint_angles", "pose_loss/projection2d/reprojection", "image/keypoints2d"):
        assert f"train/{term}" in logged
    state = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.isfinite(state["strategy.pose_losses.biomech.limits_bone_lengths"]).all()


def test_frames_that_keep_only_their_2d_labels_train_the_2d_terms_and_not_the_3d_one(tiny_data):
    from omegaconf import OmegaConf

    from crossmodal.module import CrossmodalModule
    from crossmodal.data.datamodule import build_datamodule

    cfg = load_config(None, [*tiny_data, "model.strategy=poe", "data.labeled_fraction=0.5", "data.unlabeled_2d=true",
                             "model.encoder_options.rgb_resnet18.keypoints=true"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert (train.uv_only == ~train.labeled).all() and train.labeled.any() and train.uv_only.any()
    batch = dm.finish_batch(next(iter(dm.train_dataloader())), augment=False)
    batch["labeled"] = torch.zeros_like(batch["labeled"])
    batch["uv_only"] = torch.ones_like(batch["uv_only"])
    module = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))
    terms = module.strategy.losses(batch, beta=1e-3)
    terms["loss"].backward()
    assert float(terms["image/keypoints2d"]) > 0 and float(terms["image/heatmaps"]) > 0
    assert all(float(v) == 0 for k, v in terms.items() if k.endswith("/pose"))
    assert all(p.grad is None or not p.grad.any() for p in module.strategy.decoders["pose"].parameters())
    assert any(p.grad is not None and p.grad.any() for p in module.strategy.decoders["heatmaps"].parameters())
