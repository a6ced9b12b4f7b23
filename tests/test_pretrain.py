"""Self-supervised pre-training (crossmodal/contrastive.py, crossmodal/pretrain.py): each piece
against a naive twin, and the command's checkpoint loaded by rgb_resnet18's pretrained_path."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal import contrastive
from crossmodal.cli import main
from crossmodal.registry import ENCODERS


def _naive_nt_xent(a, b, temperature):
    z = [v / np.linalg.norm(v) for v in np.concatenate([a, b])]
    n, total = len(a), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        logits = [float(z[i] @ z[k]) / temperature for k in range(2 * n) if k != i]
        positive = float(z[i] @ z[j]) / temperature
        total += -positive + math.log(sum(math.exp(x) for x in logits))
    return total / (2 * n)


def test_nt_xent_matches_its_naive_twin() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    got = contrastive.nt_xent(torch.as_tensor(a), torch.as_tensor(b), 0.5)
    assert float(got) == pytest.approx(_naive_nt_xent(a, b, 0.5), rel=1e-9)


def test_warp_moves_a_bright_dot_where_the_transform_sends_it() -> None:
    image = torch.zeros(1, 1, 65, 65)
    image[0, 0, 16, 48] = 1.0  # row 16, column 48
    rotation, shift = contrastive.random_transforms(1, 90.0, 0.2, torch.Generator().manual_seed(3))
    view = contrastive.warp(image, rotation, shift)
    # The dot's normalised position (align_corners=False: pixel centres at (2i + 1) / n - 1).
    x = torch.tensor([(2 * 48 + 1) / 65 - 1, (2 * 16 + 1) / 65 - 1], dtype=torch.float32)
    moved = rotation[0] @ x + shift[0]
    col, row = ((moved + 1) * 65 - 1) / 2
    peak = divmod(int(view.flatten().argmax()), 65)
    assert abs(peak[0] - float(row)) <= 1.0 and abs(peak[1] - float(col)) <= 1.0
    back = contrastive.to_image_frame(moved.view(1, 1, 2), rotation, shift)
    torch.testing.assert_close(back.view(2), x, atol=1e-6, rtol=0)


def test_an_embedding_that_moves_with_the_view_costs_what_the_identity_costs() -> None:
    """Points that follow the view (p = R x + t) are equal in the image's frame: the loss of two views
    is then the loss of identical embeddings, the minimum for these points."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, 2, generator=g)
    ta, tb = contrastive.random_transforms(6, 60, 0.2, g), contrastive.random_transforms(6, 60, 0.2, g)
    follow = lambda t: base @ t[0].transpose(1, 2) + t[1][:, None, :]  # noqa: E731
    loss = contrastive.equivariant_loss(follow(ta), follow(tb), ta, tb, 0.5)
    same = contrastive.nt_xent(base.flatten(1), base.flatten(1), 0.5)
    assert float(loss) == pytest.approx(float(same), rel=1e-5)
    assert float(contrastive.equivariant_loss(base, base, ta, tb, 0.5)) > float(loss)  # ignoring the view costs more


def test_pretrain_writes_a_trunk_that_rgb_resnet18_loads(tiny_data, tmp_path, single_thread, capsys) -> None:
    out = tmp_path / "pre"
    assert main(["pretrain", "--out", str(out), "--steps", "3", "--batch-size", "4", *tiny_data]) == 0
    record = json.loads((out / "pretrain.json").read_text())
    assert record["frames"] == 16 and len(record["losses"]) == 3 and all(np.isfinite(record["losses"]))
    assert record["wall_s"] > 0 and "wrote" in capsys.readouterr().out
    encoder = ENCODERS.build("rgb_resnet18", latent_dim=8, pretrained_path=str(out / "trunk.pt"))
    saved = torch.load(out / "trunk.pt", weights_only=True)
    assert all(torch.equal(encoder.trunk.state_dict()[k], v) for k, v in saved.items())
    assert not torch.equal(saved["conv1.weight"], ENCODERS.build("rgb_resnet18", latent_dim=8).trunk.conv1.weight)


def test_pretrain_settings_are_one_line_errors(tmp_path, capsys) -> None:
    assert main(["pretrain", "--out", str(tmp_path), "--steps", "0", "profile=none"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--steps must be >= 1, got 0" in err
    assert not (tmp_path / "trunk.pt").exists()


def test_an_interrupted_pretraining_resumes_where_it_was_saved(tiny_data, tmp_path, single_thread, monkeypatch) -> None:
    from crossmodal import pretrain as module
    from crossmodal.config import load_config

    cfg = load_config(None, list(tiny_data))
    settings = module.PretrainSettings(steps=4, batch_size=4)
    whole = module.pretrain(cfg, settings, tmp_path / "whole", progress=False)

    monkeypatch.setattr(module, "SAVE_EVERY", 2)
    calls = {"n": 0}
    forward = module.PretrainNet.forward

    def stop_at_the_third_step(self, images):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a killed session would stop it
        return forward(self, images)

    monkeypatch.setattr(module.PretrainNet, "forward", stop_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        module.pretrain(cfg, settings, tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / module.STATE_FILE).is_file() and not (tmp_path / "cut" / "trunk.pt").exists()
    monkeypatch.setattr(module.PretrainNet, "forward", forward)
    resumed = module.pretrain(cfg, settings, tmp_path / "cut", progress=False)
    assert resumed["resumed_at"] == [2] and whole["resumed_at"] == []
    assert len(resumed["losses"]) == 4 and resumed["losses"][:2] == whole["losses"][:2]
    assert not (tmp_path / "cut" / module.STATE_FILE).exists() and (tmp_path / "cut" / "trunk.pt").is_file()


def test_a_saved_state_of_other_settings_is_refused(tiny_data, tmp_path, single_thread, monkeypatch) -> None:
    from crossmodal import pretrain as module
    from crossmodal.config import load_config
    from crossmodal.errors import ConfigError

    cfg = load_config(None, list(tiny_data))
    monkeypatch.setattr(module, "SAVE_EVERY", 1)
    forward, calls = module.PretrainNet.forward, {"n": 0}

    def stop_at_the_second_step(self, images):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return forward(self, images)

    monkeypatch.setattr(module.PretrainNet, "forward", stop_at_the_second_step)
    with pytest.raises(KeyboardInterrupt):
        module.pretrain(cfg, module.PretrainSettings(steps=3, batch_size=4), tmp_path, progress=False)
    monkeypatch.setattr(module.PretrainNet, "forward", forward)
    with pytest.raises(ConfigError) as excinfo:
        module.pretrain(cfg, module.PretrainSettings(steps=3, batch_size=4, lr=0.5), tmp_path, progress=False)
    assert str(tmp_path / module.STATE_FILE) in str(excinfo.value) and "\n" not in str(excinfo.value)
