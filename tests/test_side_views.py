"""The views the side-by-fit study bins by: how the palm faces the camera, how far the fingers bend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from side_views import finger_bend, palm_facing  # noqa: E402


def flat_hand(z: float = 1.0) -> np.ndarray:
    """A flat right hand in the plane at depth ``z``, fingers pointing up the image (-v), thumb left."""
    xyz = np.zeros((21, 3))
    xyz[:, 2] = z
    for finger, x in zip(range(1, 5), (-0.02, 0.0, 0.015, 0.03)):  # index .. little
        mcp = np.array([x, -0.08, z])
        for k in range(4):  # RHD: tip first, MCP last; each finger straight on from the wrist
            xyz[4 * finger + 4 - k] = xyz[0] + (mcp - xyz[0]) * (1.0 + 0.3 * k)
    xyz[1:5] = [(-0.06 + 0.01 * k, -0.06 + 0.015 * k, z) for k in range(4)]
    return xyz


def test_facing_follows_the_generator_palmar_axis():
    from crossmodal.data.synthetic.scene import _sample_scene, frame_rng, render_scene

    for index in range(6):
        rng = frame_rng(0, "training", index)
        scene, mesh = _sample_scene(rng)
        frame = render_scene(scene, rng, None, mesh)
        joints = frame.xyz[:21] if frame.hand_side == "left" else frame.xyz[21:]
        palmar = scene.rotation @ np.array([0.0, 0.0, 1.0])  # what the generator tints
        centre = joints[[0, 8, 20]].mean(axis=0)
        expected = float(palmar @ -centre / np.linalg.norm(centre))
        # The joints' palm plane is within a few degrees of the generator's palmar axis.
        assert palm_facing(joints.astype(np.float64), frame.hand_side) == pytest.approx(expected, abs=0.15)


def test_facing_of_a_flat_hand_flips_with_the_side_and_vanishes_edge_on():
    hand = flat_hand()
    right, left = palm_facing(hand, "right"), palm_facing(hand, "left")
    assert right == pytest.approx(-1.0, abs=0.01) and left == pytest.approx(1.0, abs=0.01)
    # Turned 90 degrees about the vertical axis through the wrist: the camera sees the hand's edge.
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    edge = (hand - hand[0]) @ turn.T + hand[0]
    assert abs(palm_facing(edge, "right")) < 0.05


def test_bend_is_zero_for_a_flat_hand_and_the_mean_of_the_joint_angles():
    hand = flat_hand()
    assert finger_bend(hand) == pytest.approx(0.0, abs=1e-6)
    # The index finger's PIP bent by 90 degrees towards the camera: one of the 12 angles is 90.
    hand[5:7] = hand[7] + np.array([[0.0, 0.0, -0.05], [0.0, 0.0, -0.025]])
    assert finger_bend(hand) == pytest.approx(90.0 / 12, abs=1e-6)
