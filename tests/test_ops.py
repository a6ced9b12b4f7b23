"""Chamfer and EMD (crossmodal.ops) against naive float64 twins."""

from __future__ import annotations

import itertools

import pytest
import torch

from crossmodal.ops import chamfer_distance, emd, emd_assignment, nearest_neighbors


def naive_chamfer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = ((x.double()[:, :, None] - y.double()[:, None]) ** 2).sum(-1).sqrt()
    return d.min(2).values.mean(1) + d.min(1).values.mean(1)


def naive_emd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum over every permutation: only for tiny clouds."""
    out = []
    for b in range(x.shape[0]):
        d = ((x[b].double()[:, None] - y[b].double()[None]) ** 2).sum(-1).sqrt()
        n = x.shape[1]
        out.append(min(d[range(n), list(p)].mean() for p in itertools.permutations(range(n))))
    return torch.stack(out)


def test_chamfer_matches_float64_far_from_origin():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 50, 3, generator=g) + 1000.0
    y = torch.rand(3, 70, 3, generator=g) + 1000.0
    ours = chamfer_distance(x, y, reduction="none")
    torch.testing.assert_close(ours.double(), naive_chamfer(x, y), rtol=1e-3, atol=1e-4)


def test_chamfer_gradient_matches_autograd_of_naive():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 20, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    chamfer_distance(xa, y).backward()
    naive_chamfer(xb, y).mean().backward()
    torch.testing.assert_close(xa.grad.double(), xb.grad, rtol=1e-4, atol=1e-6)


def test_nearest_neighbors_indices():
    x = torch.tensor([[[0.0, 0, 0], [5, 5, 5]]])
    y = torch.tensor([[[5.0, 5, 4], [0, 0, 1], [9, 9, 9]]])
    d, i = nearest_neighbors(x, y)
    assert i.tolist() == [[1, 0]]
    assert d.tolist() == [[1.0, 1.0]]


def test_emd_exact_on_tiny_clouds_and_bijection():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    torch.testing.assert_close(emd(x, y, reduction="none").double(), naive_emd(x, y), rtol=1e-5, atol=1e-6)
    idx = emd_assignment(x, y)
    assert all(sorted(row) == list(range(6)) for row in idx.tolist())


def test_no_nan_gradient_at_zero_distance():
    x = torch.randn(1, 8, 3, requires_grad=True)
    (chamfer_distance(x, x.detach()) + emd(x, x.detach())).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.zeros(2, 5, 2), torch.zeros(2, 5, 3), r"\(B, N, 3\)"),
        (torch.zeros(2, 0, 3), torch.zeros(2, 5, 3), "empty cloud"),
        (torch.zeros(2, 5, 3), torch.zeros(3, 5, 3), "batch sizes differ"),
    ],
)
def test_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        chamfer_distance(x, y)


def test_emd_unequal_sizes():
    with pytest.raises(ValueError, match="equal sizes"):
        emd(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3))
