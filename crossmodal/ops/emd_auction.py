"""Batched Jacobi auction with epsilon scaling, in torch: runs on any device.

Used on CUDA, and on the CPU when the C solver cannot be built. Every unassigned point of x
bids at once for its best object in y; each object goes to its highest bidder. Prices persist
across eps phases; the final eps is tol * (mean nearest-neighbour distance), which bounds the
mean matched distance by (1 + tol) times the optimum (see emd_auction.c). Cost rows are
computed on the fly for the bidders only, in chunks, so memory stays bounded.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROW_ELEMENTS = 1 << 22  # cost-row elements evaluated at once
EPS_FACTOR = 8.0


def _cost_rows(x: Tensor, y: Tensor, batch_of: Tensor, person: Tensor) -> Tensor:
    """Euclidean costs (K, N) from the bidders x[batch_of, person] to every point of their y."""
    diff = x[batch_of, person][:, None, :] - y[batch_of]
    return diff.square().sum(-1).sqrt()


def _top2(x: Tensor, y: Tensor, price: Tensor, batch_of: Tensor, person: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Best value, its object and the second best value of ``-cost - price`` for each bidder."""
    n = y.shape[1]
    chunk = max(1, ROW_ELEMENTS // (3 * n))
    best, best_j, second = [], [], []
    for start in range(0, person.numel(), chunk):
        b, i = batch_of[start : start + chunk], person[start : start + chunk]
        values = -_cost_rows(x, y, b, i) - price[b]
        top = values.topk(min(2, n), dim=1)
        best.append(top.values[:, 0])
        best_j.append(top.indices[:, 0])
        second.append(top.values[:, -1])
    return torch.cat(best), torch.cat(best_j), torch.cat(second)


@torch.no_grad()
def auction_torch(x: Tensor, y: Tensor, tol: float) -> Tensor:
    """Assignment (B, N) int64: x[b, i] is matched to y[b, result[b, i]]; x, y fp32 (B, N, 3)."""
    batch, n, _ = x.shape
    device = x.device
    nn_mean = torch.stack([_nn_mean(x[b], y[b]) for b in range(batch)])
    eps_final = (tol * nn_mean).clamp_min(1e-12)
    eps = torch.maximum(0.5 * nn_mean, eps_final)
    price = torch.zeros(batch, n, device=device, dtype=torch.float64)
    while True:
        owner = torch.full((batch * n,), -1, dtype=torch.int64, device=device)  # object -> person (flat)
        assigned = torch.full((batch * n,), -1, dtype=torch.int64, device=device)  # person -> object (flat)
        while True:
            bidders = (assigned < 0).nonzero().squeeze(1)
            if bidders.numel() == 0:
                break
            b, i = bidders // n, bidders % n
            best, j, second = _top2(x, y, price.float(), b, i)
            if n == 1:
                second = best
            bid = price[b, j] + (best - second).double() + eps[b]
            obj = b * n + j
            top_bid = torch.full((batch * n,), -float("inf"), dtype=torch.float64, device=device)
            top_bid.scatter_reduce_(0, obj, bid, "amax")
            wins = bid == top_bid[obj]
            winner = torch.full((batch * n,), -1, dtype=torch.int64, device=device)
            winner.scatter_reduce_(0, obj[wins], bidders[wins], "amax")
            won = (winner >= 0).nonzero().squeeze(1)
            previous = owner[won]
            assigned[previous[previous >= 0]] = -1
            owner[won] = winner[won]
            assigned[winner[won]] = won
            price.view(-1)[won] = top_bid[won]
        if bool((eps <= eps_final).all()):
            break
        eps = torch.maximum(eps / EPS_FACTOR, eps_final)
    return (assigned % n).view(batch, n)


def _nn_mean(x: Tensor, y: Tensor) -> Tensor:
    """Mean distance from each point of x (N, 3) to its nearest point of y, in float64."""
    from crossmodal.ops.chamfer_cpu import nearest_neighbors_chunked

    full = torch.tensor([y.shape[0]], device=x.device)
    sq, _ = nearest_neighbors_chunked(x[None], y[None], full)
    return sq.double().clamp_min(0).sqrt().mean()
