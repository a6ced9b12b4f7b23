"""The Triton Chamfer kernel, run on CPU tensors by Triton's interpreter (TRITON_INTERPRET=1).

The interpreter must be switched on before the kernel is defined, and other tests may already
have imported triton in this process, so the checks run in a fresh subprocess (this file run
as a script) and report what they compared as JSON.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_interpreted

pytest.importorskip("triton")


def _checks() -> dict[str, float | bool]:
    import torch

    from crossmodal.ops import chamfer_distance, nearest_neighbors

    def naive_nn(x, y):
        d = ((x.double()[:, :, None] - y.double()[:, None]) ** 2).sum(-1)
        return d.min(2)

    g = torch.Generator().manual_seed(0)
    results: dict[str, float | bool] = {}
    # Sizes that are not multiples of the 64-point tiles, N != M, and clouds far from the origin.
    x = torch.rand(2, 70, 3, generator=g) + 1000.0
    y = torch.rand(2, 131, 3, generator=g) + 1000.0
    d, i = nearest_neighbors(x, y, backend="triton")
    ref = naive_nn(x, y)
    results["nn_index_equal"] = bool((i == ref.indices).all())
    results["nn_max_rel_err"] = float(((d.double() - ref.values).abs() / ref.values).max())
    ours = chamfer_distance(x, y, reduction="none", backend="triton")
    torch_path = chamfer_distance(x, y, reduction="none", backend="torch")
    results["chamfer_triton_vs_torch_rel"] = float(((ours - torch_path).abs() / torch_path).max())
    # Padded clouds.
    x_len, y_len = torch.tensor([70, 9]), torch.tensor([5, 131])
    ours = chamfer_distance(x, y, x_len, y_len, reduction="none", backend="triton")
    ref = chamfer_distance(x, y, x_len, y_len, reduction="none", backend="torch")
    results["lengths_rel_err"] = float(((ours - ref).abs() / ref).max())
    # Gradients: the backward pass is the same torch gather/scatter from the kernel's indices.
    xa = torch.randn(2, 33, 3, generator=g).requires_grad_()
    ya = torch.randn(2, 47, 3, generator=g).requires_grad_()
    chamfer_distance(xa, ya, backend="triton").backward()
    gx, gy = xa.grad.clone(), ya.grad.clone()
    xa.grad = ya.grad = None
    xd, yd = xa.detach().double().requires_grad_(), ya.detach().double().requires_grad_()
    dist = ((xd[:, :, None] - yd[:, None]) ** 2).sum(-1).sqrt()
    (dist.min(2).values.mean(1) + dist.min(1).values.mean(1)).mean().backward()
    results["grad_max_abs_err"] = float(max((gx.double() - xd.grad).abs().max(), (gy.double() - yd.grad).abs().max()))
    return results


@pytest.fixture(scope="module")
def interpreted() -> dict[str, float | bool]:
    return run_interpreted(__file__, timeout=120)


def test_triton_nearest_neighbors_match_float64_brute_force(interpreted):
    assert interpreted["nn_index_equal"]
    assert interpreted["nn_max_rel_err"] < 1e-5


def test_triton_chamfer_matches_torch_path(interpreted):
    assert interpreted["chamfer_triton_vs_torch_rel"] < 1e-6


def test_triton_chamfer_respects_lengths(interpreted):
    assert interpreted["lengths_rel_err"] < 1e-6


def test_triton_chamfer_gradient_matches_autograd_of_brute_force(interpreted):
    assert interpreted["grad_max_abs_err"] < 1e-5


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"
    print(json.dumps(_checks()))
