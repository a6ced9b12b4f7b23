"""Earth mover's distance (paper Eq. 9): mean distance under the optimal bijection.

An assignment solver runs without gradient, then the mean distance of the matched pairs is
computed in torch (at least fp32) and is differentiable. Solvers, chosen by the device:
- CPU: the C forward auction with epsilon scaling (``emd_auction.c``, built on first use);
  the batched torch auction when no C compiler is available.
- CUDA: the Jacobi auction whose bidding is a Triton kernel (``emd_triton``); the batched
  torch auction (``emd_auction``) when Triton is missing.
All stop once a duality-gap certificate (or, at the latest, eps = tol * mean nearest-neighbour
distance) bounds the result by (1 + tol) times the exact cost; the default tol = 0.005 keeps
it within 0.5%.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crossmodal.ops import emd_native
from crossmodal.ops._checks import CloudInputError, check_finite, check_lengths, check_pair, check_reduction, reduce
from crossmodal.ops.chamfer import resolve_backend, safe_sqrt
from crossmodal.ops.emd_auction import auction_torch

DEFAULT_TOL = 0.005


def _check(x: Tensor, y: Tensor, op: str) -> None:
    check_pair(x, y, op)
    if x.shape[1] != y.shape[1]:
        raise CloudInputError(
            f"{op}: clouds must have equal sizes for a bijection, got {x.shape[1]} and {y.shape[1]} points"
        )
    for t, label in ((x, "x"), (y, "y")):
        check_finite(t, check_lengths(None, t, label, op), label, op)


def _assignment(x: Tensor, y: Tensor, tol: float, solver: str | None) -> Tensor:
    # Translation changes no distance; centring keeps fp32 precise far from the origin.
    work = torch.promote_types(x.dtype, torch.float32)
    x, y = x.detach().to(work), y.detach().to(work)
    centre = y.mean(dim=1, keepdim=True)
    xs, ys = (x - centre).float(), (y - centre).float()
    if solver is None:
        if x.device.type == "cpu":
            solver = "native" if emd_native.load() is not None else "torch"
        else:
            solver = "triton" if resolve_backend(x.device, None) == "triton" else "torch"
    if solver == "native":
        return emd_native.solve(xs, ys, tol).to(x.device)
    if solver == "triton":
        from crossmodal.ops.emd_triton import auction_triton

        return auction_triton(xs, ys, tol)
    if solver == "torch":
        return auction_torch(xs, ys, tol)
    raise ValueError(f"solver must be 'native', 'triton' or 'torch', got {solver!r}")


def emd_assignment(x: Tensor, y: Tensor, *, tol: float = DEFAULT_TOL, solver: str | None = None) -> Tensor:
    """Bijection (B, N) int64: x[b, i] is matched to y[b, result[b, i]], within (1 + tol) of the optimal cost.

    x and y are (B, N, 3) with the same N. No gradient. ``solver`` ('native', 'triton' or 'torch')
    overrides the device's choice (for tests and benchmarks).
    """
    _check(x, y, "emd_assignment")
    with torch.no_grad():
        return _assignment(x, y, tol, solver)


def emd(
    x: Tensor, y: Tensor, reduction: str = "mean", *, tol: float = DEFAULT_TOL, solver: str | None = None
) -> Tensor:
    """Earth mover's distance between equal-size clouds x, y (B, N, 3), paper Eq. 9.

    Per sample: mean Euclidean distance between matched points under the bijection of
    ``emd_assignment``. ``reduction``: "none" -> (B,), "mean" or "sum" over the batch.
    Differentiable in x and y through the matched distances (the matching itself is constant).
    """
    op = "emd"
    check_reduction(reduction, op)
    _check(x, y, op)
    with torch.no_grad():
        index = _assignment(x, y, tol, solver)
    work = torch.promote_types(x.dtype, torch.float32)
    matched = torch.gather(y.to(work), 1, index.unsqueeze(-1).expand(-1, -1, 3))
    dist = safe_sqrt((x.to(work) - matched).square().sum(-1))
    return reduce(dist.mean(dim=1), reduction, op)
