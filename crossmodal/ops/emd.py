"""Earth mover's distance (paper Eq. 9): mean distance under the optimal bijection.

Current implementation: the exact assignment (Hungarian algorithm, scipy) solved without
gradient on the CPU, then the differentiable mean distance of the matched pairs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from crossmodal.ops.chamfer import _check_clouds, _reduce


def emd_assignment(x: Tensor, y: Tensor) -> Tensor:
    """Index (B, N) such that x[b, i] is matched to y[b, idx[b, i]] under the optimal bijection."""
    _check_clouds(x, y, "emd_assignment")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"emd: clouds must have equal sizes for a bijection, got {x.shape[1]} and {y.shape[1]} points")
    with torch.no_grad():
        cost = torch.cdist(x.detach().double(), y.detach().double()).cpu().numpy()
    idx = np.empty(cost.shape[:2], dtype=np.int64)
    for b in range(cost.shape[0]):
        rows, cols = linear_sum_assignment(cost[b])
        idx[b, rows] = cols
    return torch.from_numpy(idx).to(x.device)


def emd(x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Mean Euclidean distance between matched points of two equal-size clouds (B, N, 3)."""
    idx = emd_assignment(x, y)
    matched = torch.gather(y.float(), 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    dist = (x.float() - matched).square().sum(-1).clamp_min(1e-12).sqrt()
    return _reduce(dist.mean(dim=1), reduction, "emd")
