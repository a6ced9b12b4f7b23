"""The Triton kernels on the device: checked against the CPU reference, then timed against dense cdist."""

from __future__ import annotations

from typing import Any

import torch

from kernels import dense_chamfer, exact_emd, make_inputs

from .common import Budget, free_memory, measure, peak_bytes, reset_peak, say
from .plan import Plan


def check_kernels(plan: Plan, budget: Budget) -> dict[str, Any]:
    """Triton on the plan's device against the CPU paths (and scipy) on the same inputs."""
    from crossmodal.ops import chamfer_distance, emd, emd_assignment, emd_native, nearest_neighbors

    dev = plan.device
    b, n, m = plan.check_shape
    g = torch.Generator().manual_seed(1)
    # Sizes off the 64-point tiles, N != M, far from the origin (the ops centre before fp32 work).
    x_cpu = torch.rand(b, n, 3, generator=g) + 100.0
    y_cpu = torch.rand(b, m, 3, generator=g) + 100.0
    x, y = x_cpu.to(dev), y_cpu.to(dev)
    rows: list[dict[str, Any]] = []

    def row(name: str, value: float | bool, tolerance: str, ok: bool) -> None:
        rows.append({"check": name, "value": value, "tolerance": tolerance, "ok": bool(ok)})

    d, i = nearest_neighbors(x, y, backend="triton")
    d_ref, i_ref = nearest_neighbors(x_cpu, y_cpu, backend="torch")
    agree = float((i.cpu() == i_ref).double().mean())
    rel = float(((d.cpu().double() - d_ref.double()).abs() / d_ref.double().clamp_min(1e-12)).max())
    row(f"nearest_neighbors: same index as the CPU path (B={b}, N={n}, M={m})", agree, ">= 0.999 (ties may differ)", agree >= 0.999)
    row("nearest_neighbors: max relative error of the distance", rel, "< 1e-5", rel < 1e-5)

    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    xc, yc = x_cpu.clone().requires_grad_(), y_cpu.clone().requires_grad_()
    ours = chamfer_distance(xg, yg, reduction="none", backend="triton")
    ref = chamfer_distance(xc, yc, reduction="none", backend="torch")
    ours.mean().backward()
    ref.mean().backward()
    rel = float(((ours.detach().cpu() - ref.detach()).abs() / ref.detach()).max())
    grad_scale = float(max(xc.grad.abs().max(), yc.grad.abs().max()))
    grad = float(max((xg.grad.cpu() - xc.grad).abs().max(), (yg.grad.cpu() - yc.grad).abs().max())) / grad_scale
    row("chamfer_distance: max relative error of the value", rel, "< 1e-5", rel < 1e-5)
    row("chamfer_distance: max gradient error / max gradient", grad, "< 1e-4", grad < 1e-4)
    x_len = torch.randint(1, n + 1, (b,), generator=g)
    y_len = torch.randint(1, m + 1, (b,), generator=g)
    ours = chamfer_distance(x, y, x_len.to(dev), y_len.to(dev), reduction="none", backend="triton").cpu()
    ref = chamfer_distance(x_cpu, y_cpu, x_len, y_len, reduction="none", backend="torch")
    rel = float(((ours - ref).abs() / ref).max())
    row("chamfer_distance with lengths (padded clouds): max relative error", rel, "< 1e-5", rel < 1e-5)

    if budget.left() < 30:
        raise TimeoutError("no time left for the EMD checks")
    n = plan.check_emd
    a_cpu, c_cpu = x_cpu[:, :n], torch.rand(b, n, 3, generator=g) + 100.0
    index = emd_assignment(a_cpu.to(dev), c_cpu.to(dev), solver="triton").cpu()
    bijection = bool((index.sort(dim=1).values == torch.arange(n)).all())
    row(f"emd_assignment: a bijection (B={b}, N={n})", bijection, "every sample", bijection)
    matched = torch.gather(c_cpu, 1, index.unsqueeze(-1).expand(-1, -1, 3))
    ours = (a_cpu.double() - matched.double()).norm(dim=-1).mean(1)
    exact = torch.stack([exact_emd(a_cpu[s : s + 1].double(), c_cpu[s : s + 1].double()) for s in range(b)])
    ratio = float((ours / exact).max())
    row("emd_assignment: max cost ratio to the exact solver (scipy)", ratio, "<= 1.01", 1 - 1e-6 <= ratio <= 1.01)
    value = emd(a_cpu.to(dev), c_cpu.to(dev), reduction="none", solver="triton").cpu()
    cpu_solver = "native" if emd_native.load() is not None else "torch"
    ref = emd(a_cpu, c_cpu, reduction="none", solver=cpu_solver)
    rel = float(((value - ref).abs() / ref).max())
    row(f"emd: max relative difference to the CPU solver ({cpu_solver}); both within 0.5% of exact", rel, "< 0.011", rel < 0.011)
    return {"rows": rows, "ok": all(r["ok"] for r in rows)}


def time_kernels(plan: Plan, budget: Budget) -> dict[str, Any]:
    """Forward+backward of Chamfer (Triton vs dense cdist) and EMD (Triton), EMD's gap to exact."""
    from crossmodal.ops import chamfer_distance, emd

    dev, batch = plan.device, plan.kernel_batch
    cases = {
        "chamfer_triton": lambda x, y: chamfer_distance(x, y, backend="triton"),
        "chamfer_dense": dense_chamfer,
        "emd_triton": lambda x, y: emd(x, y, solver="triton"),
    }
    rows = []
    emd_cost: tuple[int, float] | None = None  # (N, seconds of one EMD call) at the last size
    for n in plan.kernel_sizes:
        if budget.left() < plan.reserve_s:
            rows.append({"n": n, "skipped": "time budget"})
            continue
        x, y = make_inputs(batch, n, dev)
        result: dict[str, Any] = {"n": n}
        for name, fn in cases.items():
            if name == "emd_triton" and emd_cost is not None:
                # At most N^2 growth (rounds ~ N, each sweeping N objects): skip a size that would
                # take the later sections' time.
                estimate = emd_cost[1] * (n / emd_cost[0]) ** 2 * (plan.kernel_warmup + 2)
                if estimate > min(plan.emd_cap_s, budget.left() - plan.reserve_s):
                    result["emd_skipped"] = f"estimated {estimate:.0f} s"
                    continue

            def step() -> None:
                x.grad = y.grad = None
                fn(x, y).backward()

            free_memory(dev)
            base = torch.cuda.memory_allocated() if dev == "cuda" else 0
            reset_peak(dev)
            seconds = measure(step, dev, plan.kernel_warmup, plan.kernel_repeats, plan.target_s)
            result[f"{name}_ms"] = seconds * 1e3
            result[f"{name}_mib"] = (peak_bytes(dev) - base) / 2**20 if dev == "cuda" else None
            say(f"kernels N={n} {name}: {seconds * 1e3:.2f} ms")
            if name == "emd_triton":
                emd_cost = (n, seconds)
        result["chamfer_speedup"] = result["chamfer_dense_ms"] / result["chamfer_triton_ms"]
        if "emd_skipped" not in result:
            k = batch if n <= 1024 else min(batch, plan.exact_samples)
            with torch.no_grad():
                ours = emd(x.detach(), y.detach(), reduction="none", solver="triton")[:k].mean()
            exact = exact_emd(x.detach()[:k].double(), y.detach()[:k].double())
            result["exact_samples"] = k
            result["emd_gap"] = float(ours / exact - 1.0)
        rows.append(result)
    return {"batch": batch, "rows": rows}
