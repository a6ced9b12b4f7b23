"""EMD assignment on the GPU: Jacobi auction with epsilon scaling, bidding in a Triton kernel.

Each round, every unassigned person (point of x) bids at once. The bidding kernel gives each
bidder its best and second best object over all M objects, keeping a running top two per tile
of objects and computing the costs |x_i - y_j| on the fly from the coordinates, so no N x M
matrix is ever stored. The awards are dense (B, N) torch ops with no host sync: a scatter-max
of the bids per object, the highest bidder wins, its previous owner becomes unassigned, the
price becomes the winning bid. The host only checks every few rounds whether anyone is left.

Accuracy as in ``emd_auction.c``: after each eps phase the cost P of the assignment and the
dual lower bound LB = sum_i min_j (c_ij + p_j) - sum_j p_j are compared, and a sample stops
once P <= (1 + tol) LB, or at eps = tol * (mean nearest-neighbour distance), where eps-slackness
alone gives the (1 + tol) bound. Phases are warm-started: prices carry over and persons still
happy within the new eps keep their objects. No gradient: the caller differentiates the
matched distances. Also runs on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests check it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

EPS_START = 0.25  # first eps, in units of the mean nearest-neighbour distance
EPS_FACTOR = 5.0  # eps shrinks by this factor per phase
ROUNDS_PER_CHECK = 4  # rounds between host syncs; a round with no bidder changes nothing


@triton.jit
def _bid_kernel(
    x_ptr, y_ptr, price_ptr, assigned_ptr, best_ptr, second_ptr, best_j_ptr,
    n, assigned_stride, everyone,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    b = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    bidding = row_ok & ((tl.load(assigned_ptr + b * assigned_stride + rows, mask=row_ok, other=0) < 0) | (everyone != 0))
    x_base = x_ptr + b * n * 3 + rows * 3
    qx = tl.load(x_base + 0, mask=row_ok, other=0.0)
    qy = tl.load(x_base + 1, mask=row_ok, other=0.0)
    qz = tl.load(x_base + 2, mask=row_ok, other=0.0)
    best = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    second = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_j = tl.zeros((BLOCK_N,), tl.int32)
    # Programs without a bidder skip the sweep: late rounds have few bidders.
    if tl.max(bidding.to(tl.int32), axis=0) > 0:
        for start in range(0, n, BLOCK_M):
            cols = start + tl.arange(0, BLOCK_M)
            col_ok = cols < n
            y_base = y_ptr + b * n * 3 + cols * 3
            px = tl.load(y_base + 0, mask=col_ok, other=0.0)
            py = tl.load(y_base + 1, mask=col_ok, other=0.0)
            pz = tl.load(y_base + 2, mask=col_ok, other=0.0)
            price = tl.load(price_ptr + b * n + cols, mask=col_ok, other=0.0)
            dx = qx[:, None] - px[None, :]
            dy = qy[:, None] - py[None, :]
            dz = qz[:, None] - pz[None, :]
            value = -tl.sqrt(dx * dx + dy * dy + dz * dz) - price[None, :]
            value = tl.where(col_ok[None, :], value, float("-inf"))
            tile_best = tl.max(value, axis=1)
            tile_j = tl.argmax(value, axis=1).to(tl.int32)
            tile_second = tl.max(tl.where(cols[None, :] == (tile_j + start)[:, None], float("-inf"), value), axis=1)
            # Merge the tile's top two into the running top two; earlier objects win ties.
            better = tile_best > best
            second = tl.maximum(tl.minimum(best, tile_best), tl.maximum(second, tile_second))
            best_j = tl.where(better, tile_j + start, best_j)
            best = tl.maximum(best, tile_best)
    tl.store(best_ptr + b * n + rows, best, mask=row_ok)
    tl.store(second_ptr + b * n + rows, second, mask=row_ok)
    tl.store(best_j_ptr + b * n + rows, best_j.to(tl.int64), mask=row_ok)


class _Bidder:
    """Launches the bidding kernel with reused output buffers."""

    def __init__(self, x: Tensor, y: Tensor, block_n: int, block_m: int) -> None:
        self.x, self.y = x.contiguous(), y.contiguous()
        self.batch, self.n = x.shape[0], x.shape[1]
        self.best = torch.empty(self.batch, self.n, dtype=torch.float32, device=x.device)
        self.second = torch.empty_like(self.best)
        self.best_j = torch.empty(self.batch, self.n, dtype=torch.int64, device=x.device)
        self.block_n, self.block_m = block_n, block_m

    def __call__(self, price: Tensor, assigned: Tensor, everyone: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        grid = (self.batch, triton.cdiv(self.n, self.block_n))
        _bid_kernel[grid](
            self.x, self.y, price, assigned, self.best, self.second, self.best_j,
            self.n, assigned.stride(0), int(everyone), BLOCK_N=self.block_n, BLOCK_M=self.block_m,
        )
        return self.best, self.second, self.best_j


def _award(best: Tensor, second: Tensor, best_j: Tensor, price: Tensor, owner: Tensor, assigned: Tensor, eps: Tensor) -> None:
    """One Jacobi round's awards, in place, with dense (B, N) ops and no host sync."""
    batch, n = price.shape
    bidding = assigned[:, :n] < 0
    bid = torch.where(bidding, price.gather(1, best_j) + (best - second) + eps[:, None], float("-inf"))
    top = torch.full_like(price, float("-inf")).scatter_reduce_(1, best_j, bid, "amax")
    wins = bidding & (bid == top.gather(1, best_j))
    person = torch.arange(n, device=price.device).expand(batch, n)
    winner = torch.full_like(owner, -1).scatter_reduce_(1, best_j, torch.where(wins, person, -1), "amax")
    won = winner >= 0
    # Column n of `assigned` is a dump for the writes that must not happen.
    previous = torch.where(won & (owner >= 0), owner, n)
    assigned.scatter_(1, previous, -1)
    assigned.scatter_(1, torch.where(won, winner, n), person)
    owner.copy_(torch.where(won, winner, owner))
    price.copy_(torch.where(won, top, price))


def _matched_cost(x: Tensor, y: Tensor, assigned: Tensor) -> Tensor:
    """(B, N) float32 cost of each person's object (assigned must be complete)."""
    matched = torch.gather(y, 1, assigned.clamp_min(0).unsqueeze(-1).expand(-1, -1, 3))
    return (x - matched).square().sum(-1).sqrt()


@torch.no_grad()
def auction_triton(x: Tensor, y: Tensor, tol: float, block_n: int = 32, block_m: int = 64) -> Tensor:
    """Assignment (B, N) int64: x[b, i] is matched to y[b, result[b, i]]; x, y fp32 (B, N, 3), centred."""
    from crossmodal.ops.chamfer_triton import nearest_neighbors_triton

    x, y = x.float().contiguous(), y.float().contiguous()
    batch, n, _ = x.shape
    device = x.device
    if n == 1:
        return torch.zeros(batch, 1, dtype=torch.int64, device=device)
    full = torch.full((batch,), n, dtype=torch.int64, device=device)
    nn_mean = nearest_neighbors_triton(x, y, full)[0].clamp_min(0).sqrt().double().mean(1)
    radius = x.norm(dim=-1).amax(1) + y.norm(dim=-1).amax(1)  # bounds every cost
    # Float prices reach about the largest cost: a smaller eps would vanish when added to them.
    eps_final = torch.maximum(tol * nn_mean, 1e-6 * radius.double().clamp_min(1e-30)).float()
    eps = torch.maximum(EPS_START * nn_mean.float(), eps_final)
    price = torch.zeros(batch, n, dtype=torch.float32, device=device)
    owner = torch.full((batch, n), -1, dtype=torch.int64, device=device)  # object -> person
    assigned = torch.full((batch, n + 1), -1, dtype=torch.int64, device=device)  # person -> object
    bidder = _Bidder(x, y, block_n, block_m)
    while True:
        while True:
            for _ in range(ROUNDS_PER_CHECK):
                best, second, best_j = bidder(price, assigned)
                _award(best, second, best_j, price, owner, assigned, eps)
            if not bool((assigned[:, :n] < 0).any()):
                break
        if bool((eps <= eps_final).all()):
            break
        best, _, _ = bidder(price, assigned, everyone=True)
        primal = _matched_cost(x, y, assigned[:, :n]).double().sum(1)
        lower = -(best.double().sum(1) + price.double().sum(1))
        done = (primal <= (1.0 + tol) * lower) | (eps <= eps_final)
        if bool(done.all()):
            break
        eps = torch.where(done, eps, torch.maximum(eps / EPS_FACTOR, eps_final))
        # Warm start: unfinished samples keep the pairs still happy within the new eps.
        value = -_matched_cost(x, y, assigned[:, :n]) - price.gather(1, assigned[:, :n])
        unhappy = (value < best - eps[:, None]) & ~done[:, None]
        freed = torch.where(unhappy, assigned[:, :n], n)
        owner_ext = torch.cat([owner, owner.new_full((batch, 1), -1)], dim=1)
        owner_ext.scatter_(1, freed, -1)
        owner.copy_(owner_ext[:, :n])
        assigned[:, :n].masked_fill_(unhappy, -1)
    return assigned[:, :n].clone()
