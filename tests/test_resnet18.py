"""Loading torchvision-format resnet18 checkpoints into the ``rgb_resnet18`` encoder.

torchvision cannot be installed here, so the reference key list is written out from
the published architecture (He et al. 2016, torchvision's ``resnet18``), not taken
from the module under test.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from crossmodal.errors import ConfigError
from crossmodal.registry import ENCODERS


pytestmark = pytest.mark.usefixtures("single_thread")


def torchvision_resnet18_shapes() -> "OrderedDict[str, tuple[int, ...]]":
    """Every state-dict key of torchvision's resnet18 with its shape, in torchvision's order."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    batch_norm("bn1", 64)
    in_channels = 64
    for stage, channels in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):  # BasicBlock x 2 per stage
            prefix = f"layer{stage}.{block}"
            block_in = in_channels if block == 0 else channels
            shapes[f"{prefix}.conv1.weight"] = (channels, block_in, 3, 3)
            batch_norm(f"{prefix}.bn1", channels)
            shapes[f"{prefix}.conv2.weight"] = (channels, channels, 3, 3)
            batch_norm(f"{prefix}.bn2", channels)
            if block == 0 and stage > 1:  # stride-2 stages project the skip with a 1x1 conv + BN
                shapes[f"{prefix}.downsample.0.weight"] = (channels, block_in, 1, 1)
                batch_norm(f"{prefix}.downsample.1", channels)
        in_channels = channels
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def fake_checkpoint(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """Random values in torchvision's layout (variances positive, counters integer)."""
    g = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in torchvision_resnet18_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


def test_reference_layout_has_torchvisions_key_count():
    # torchvision.models.resnet18().state_dict() has 122 entries (62 parameters, 60 buffers).
    assert len(torchvision_resnet18_shapes()) == 122


def test_trunk_keys_are_torchvisions_without_fc():
    trunk_state = ENCODERS.build("rgb_resnet18").trunk.state_dict()
    expected = {k: v for k, v in torchvision_resnet18_shapes().items() if not k.startswith("fc.")}
    assert list(trunk_state) == list(expected)
    assert {k: tuple(v.shape) for k, v in trunk_state.items()} == expected


@pytest.mark.parametrize("layout", ["raw", "wrapped", "dataparallel", "no_batch_counters"])
def test_pretrained_path_loads_every_value(tmp_path, layout):
    state = fake_checkpoint()
    saved: object = state
    if layout == "wrapped":
        saved = {"state_dict": state, "epoch": 90}
    elif layout == "dataparallel":
        saved = OrderedDict((f"module.{k}", v) for k, v in state.items())
    elif layout == "no_batch_counters":  # files saved before BatchNorm counted batches
        saved = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(saved, path)

    encoder = ENCODERS.build("rgb_resnet18", pretrained_path=str(path))
    loaded = encoder.trunk.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    for key, value in loaded.items():
        if key.endswith("num_batches_tracked") and layout == "no_batch_counters":
            continue
        assert torch.equal(value, state[key]), key
    assert not any(k.startswith("fc.") for k in encoder.state_dict())
    q = encoder.eval()(torch.rand(2, 3, 64, 64))
    assert torch.isfinite(q.mu).all() and q.mu.shape == (2, 64)


def test_normalisation_is_inside_and_not_trained():
    encoder = ENCODERS.build("rgb_resnet18")
    buffers = dict(encoder.named_buffers())
    assert torch.allclose(buffers["pixel_mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(buffers["pixel_std"].flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert not any("pixel" in name for name, _ in encoder.named_parameters())
    # An image equal to the ImageNet mean is zero after normalisation, so the stem sees zeros.
    mean_image = buffers["pixel_mean"].expand(1, 3, 8, 8)
    stem = encoder.trunk.conv1
    assert torch.count_nonzero(stem((mean_image - encoder.pixel_mean) / encoder.pixel_std)) == 0


@pytest.mark.parametrize("size", [32, 64, 96, 256])
def test_any_crop_size(size):
    encoder = ENCODERS.build("rgb_resnet18").eval()
    with torch.no_grad():
        assert encoder.features(torch.rand(1, 3, size, size)).shape == (1, 512)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(ConfigError) as info:
        ENCODERS.build("rgb_resnet18", pretrained_path=str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "does not exist" in message


def test_mismatching_keys_and_shapes_are_named(tmp_path):
    state = fake_checkpoint()
    state["layer1.0.convX.weight"] = state.pop("layer1.0.conv1.weight")
    state["layer3.0.conv2.weight"] = torch.zeros(256, 256, 5, 5)
    path = tmp_path / "other-net.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError) as info:
        ENCODERS.build("rgb_resnet18", pretrained_path=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "missing keys: layer1.0.conv1.weight" in message
    assert "unexpected keys: layer1.0.convX.weight" in message
    assert "layer3.0.conv2.weight (256, 256, 5, 5) != (256, 256, 3, 3)" in message


def test_long_key_lists_are_cut_short(tmp_path):
    path = tmp_path / "resnet50-ish.pth"
    torch.save({f"layer9.{i}.weight": torch.zeros(1) for i in range(30)} | dict(fake_checkpoint()), path)
    with pytest.raises(ConfigError, match=r"unexpected keys: layer9\.0\.weight, .* \(\+26 more\)$"):
        ENCODERS.build("rgb_resnet18", pretrained_path=path)


class NotAStateDict:
    pass


@pytest.mark.parametrize("content", ["pickled_object", "tensor_list", "garbage"])
def test_unreadable_checkpoints_are_one_line_errors(tmp_path, content):
    path = tmp_path / f"{content}.pth"
    if content == "pickled_object":
        torch.save({"state_dict": NotAStateDict()}, path)  # refused by weights_only loading
    elif content == "tensor_list":
        torch.save([torch.zeros(3)], path)
    else:
        path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError) as info:
        ENCODERS.build("rgb_resnet18", pretrained_path=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and message.startswith("rgb_resnet18 encoder: ")
