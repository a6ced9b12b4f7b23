"""The README's code examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from crossmodal.registry import ENCODERS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_add_a_module_example_registers_and_runs():
    code = re.search(r"# encoders/cloud_pointnet.py\n(.*?)```", README.read_text(), re.S).group(1)
    try:
        exec(compile(code, "README.md", "exec"), {})
        encoder = ENCODERS.build("cloud_pointnet", latent_dim=8)
        q = encoder(encoder.example_input(2))
        assert q.mu.shape == (2, 8)
        q.mu.sum().backward()
        assert all(p.grad is not None for p in encoder.parameters() if p is not encoder.logvar_head.weight and p is not encoder.logvar_head.bias)
    finally:
        ENCODERS._entries.pop("cloud_pointnet", None)
