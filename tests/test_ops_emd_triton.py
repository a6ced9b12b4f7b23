"""The Triton EMD auction, run on CPU tensors by Triton's interpreter (TRITON_INTERPRET=1).

As in test_ops_triton.py, the interpreter must be on before the kernel is defined, so the
checks run in a fresh subprocess (this file run as a script) and report JSON.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_interpreted

pytest.importorskip("triton")


def _checks() -> dict[str, object]:
    import numpy as np
    import torch
    from scipy.optimize import linear_sum_assignment

    from crossmodal.ops import emd, emd_assignment
    from crossmodal.ops.emd_triton import _Bidder

    results: dict[str, object] = {}
    g = torch.Generator().manual_seed(0)

    # The bidding kernel alone: top two of -|x_i - y_j| - p_j over all objects, for bidders only
    # (N = 70 is not a multiple of the 64-object tile).
    x, y = torch.rand(2, 70, 3, generator=g), torch.rand(2, 70, 3, generator=g)
    price = torch.rand(2, 70, generator=g) * 0.3
    assigned = torch.full((2, 71), -1, dtype=torch.int64)
    assigned[:, :35] = 5  # half the persons hold an object and must not bid
    best, second, best_j = _Bidder(x, y, block_n=32, block_m=64)(price, assigned)
    value = -torch.cdist(x.double(), y.double()) - price.double()[:, None, :]
    top = value.topk(2, dim=2)
    bidders = assigned[:, :70] < 0
    results["bid_best_err"] = float((best.double() - top.values[..., 0])[bidders].abs().max())
    results["bid_second_err"] = float((second.double() - top.values[..., 1])[bidders].abs().max())
    results["bid_index_equal"] = bool((best_j == top.indices[..., 0])[bidders].all())

    # Whole solver against the exact assignment: uniform clouds and two tight clusters.
    cases = {
        "uniform16": (torch.rand(2, 16, 3, generator=g), torch.rand(2, 16, 3, generator=g)),
        "uniform64": (torch.rand(2, 64, 3, generator=g), torch.rand(2, 64, 3, generator=g)),
        "clusters48": tuple(
            torch.randn(2, 48, 3, generator=g) * 0.05 + torch.tensor([[0.0, 0, 0]] * 24 + [[1.0, 0, 0]] * 24)
            for _ in range(2)
        ),
    }
    for name, (a, b) in cases.items():
        idx = emd_assignment(a, b, solver="triton")
        n = a.shape[1]
        cost = torch.cdist(a.double(), b.double()).numpy()
        ratios = []
        for s in range(a.shape[0]):
            rows, cols = linear_sum_assignment(cost[s])
            ratios.append(float(cost[s][np.arange(n), idx[s].numpy()].sum() / cost[s][rows, cols].sum()))
        results[f"{name}_bijection"] = bool((idx.sort(dim=1).values == torch.arange(n)).all())
        results[f"{name}_ratio_to_exact"] = ratios
    # Far from the origin: emd() centres the clouds before the float32 solver.
    a, b = cases["uniform16"]
    far = emd(a + 1000.0, b + 1000.0, reduction="none", solver="triton")
    near = emd(a, b, reduction="none", solver="native")
    results["far_vs_native_rel"] = float(((far - near).abs() / near).max())
    return results


@pytest.fixture(scope="module")
def interpreted() -> dict[str, object]:
    return run_interpreted(__file__, timeout=300)


def test_bidding_kernel_finds_best_and_second_best_object(interpreted):
    assert interpreted["bid_index_equal"]
    assert interpreted["bid_best_err"] < 1e-5
    assert interpreted["bid_second_err"] < 1e-5


@pytest.mark.parametrize("case", ["uniform16", "uniform64", "clusters48"])
def test_triton_auction_is_a_bijection_within_one_percent_of_exact(interpreted, case):
    assert interpreted[f"{case}_bijection"]
    for ratio in interpreted[f"{case}_ratio_to_exact"]:
        assert 1 - 1e-6 <= ratio <= 1.01, interpreted[f"{case}_ratio_to_exact"]


def test_triton_emd_far_from_origin_matches_native_solver(interpreted):
    # Both are within 0.5% of the exact cost, so they agree within about 1%.
    assert interpreted["far_vs_native_rel"] < 0.011


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"
    print(json.dumps(_checks()))
