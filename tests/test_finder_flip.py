"""The finder averaged with its mirror image (crossmodal/finder/flip.py)."""

from __future__ import annotations

import pytest
import torch

from crossmodal.finder.flip import FlipAveraged
from crossmodal.finder.locate import locate_hand
from crossmodal.finder.model import HandFinder, with_flip_average
from crossmodal.registry import FINDERS


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return FINDERS.build("fcn_small").eval()


def naive_flip_average(net: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The same average written out: column by column, class by class."""
    width = image.shape[-1]
    mirror = torch.stack([image[..., width - 1 - u] for u in range(width)], dim=-1)
    p, q = net(image).softmax(1), net(mirror).softmax(1)
    out = torch.empty_like(p)
    for u in range(width):
        back = q[..., width - 1 - u]
        out[:, 0, :, u] = (p[:, 0, :, u] + back[:, 0]) / 2  # background
        out[:, 1, :, u] = (p[:, 1, :, u] + back[:, 2]) / 2  # left: the mirror image's right
        out[:, 2, :, u] = (p[:, 2, :, u] + back[:, 1]) / 2
    return out


def test_flip_average_matches_its_naive_twin(net):
    image = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.allclose(FlipAveraged(net)(image).exp(), naive_flip_average(net, image), atol=1e-6)


def test_averaged_finder_sees_a_mirrored_image_as_the_mirrored_hand(net):
    image = torch.rand(1, 3, 48, 48)
    averaged = FlipAveraged(net)
    with torch.no_grad():
        a, b = averaged(image), averaged(image.flip(-1))
        assert torch.allclose(b, a.flip(-1)[:, [0, 2, 1]], atol=1e-5)
        # So its side flips exactly with the image, which the plain network's need not.
        right, right_mirrored = (locate_hand(x, (48, 48)).right for x in (a, b))
        assert torch.allclose(right + right_mirrored, torch.ones(1), atol=1e-4)


@pytest.mark.parametrize("setting, averaged", [(None, False), (True, True), (False, False)])
def test_hand_finder_averages_when_its_config_says_so(net, setting, averaged):
    finder = {"name": "fcn_small", "input_size": 48, "min_score": 0.5, "min_pixels": 4, "zoom": 0}
    if setting is not None:
        finder["flip_average"] = setting
    hand_finder = HandFinder(net, {"finder": finder}, "test")
    assert isinstance(hand_finder.logits_of, FlipAveraged) is averaged
    assert hand_finder.net is net  # what is saved and bundled stays the plain network


def test_the_evaluation_switch_turns_the_average_on_and_off(net):
    finder = HandFinder(net, {"finder": {"input_size": 48, "min_score": 0.5, "min_pixels": 4, "zoom": 0}}, "test")
    on = with_flip_average(finder, True)
    assert isinstance(on.logits_of, FlipAveraged) and on.net is net and "flip_average" not in finder.config["finder"]
    assert with_flip_average(on, False).logits_of is net
