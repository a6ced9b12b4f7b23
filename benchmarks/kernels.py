"""Chamfer and EMD kernels against naive versions, side by side in one run.

    python benchmarks/kernels.py                      # CPU, B=32, N=M in 256 1024 2048
    python benchmarks/kernels.py --device cuda        # GPU: Triton Chamfer, GPU auction
    python benchmarks/kernels.py --sizes 256 --repeats 5

Chamfer: forward+backward of ``chamfer_distance`` vs a dense ``torch.cdist`` version.
EMD: forward+backward of ``emd`` vs the exact solver (scipy ``linear_sum_assignment`` on
each sample's cost matrix, then the same differentiable matched distance), plus the
relative cost gap to the exact solver. Times are the median of the repeats. Peak memory:
on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the growth of the process's peak
resident set (VmHWM, reset just before) measured in a fresh subprocess per case, since torch has no
CPU allocator statistics. Writes benchmarks/results/kernels_<device>.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from crossmodal.io import atomic_write_text
from crossmodal.ops import chamfer_distance, emd
from crossmodal.ops.chamfer import resolve_backend


def dense_chamfer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, y)
    return (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()


def exact_emd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cost = torch.cdist(x.detach().double(), y.detach().double()).cpu().numpy()
    idx = np.empty(cost.shape[:2], dtype=np.int64)
    for b in range(cost.shape[0]):
        rows, cols = linear_sum_assignment(cost[b])
        idx[b, rows] = cols
    index = torch.from_numpy(idx).to(x.device)
    matched = torch.gather(y, 1, index.unsqueeze(-1).expand(-1, -1, 3))
    return (x - matched).norm(dim=-1).mean()


CASES = {
    "chamfer_ours": lambda x, y: chamfer_distance(x, y),
    "chamfer_dense": dense_chamfer,
    "emd_ours": lambda x, y: emd(x, y),
    "emd_exact": exact_emd,
}


def make_inputs(batch: int, n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, 3, generator=g).to(device).requires_grad_()
    y = torch.rand(batch, n, 3, generator=g).to(device).requires_grad_()
    return x, y


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_case(case: str, batch: int, n: int, device: str, repeats: int) -> tuple[float, float]:
    """Median forward+backward seconds and the loss value."""
    x, y = make_inputs(batch, n, device)
    fn = CASES[case]
    fn(x, y).backward()  # warm-up: Triton compile, solver build, allocator
    times, value = [], 0.0
    for _ in range(repeats):
        x.grad = y.grad = None
        sync(device)
        start = time.perf_counter()
        loss = fn(x, y)
        loss.backward()
        sync(device)
        times.append(time.perf_counter() - start)
        value = float(loss.detach())
    return statistics.median(times), value


def peak_case(case: str, batch: int, n: int, device: str) -> int:
    """Peak bytes of one forward+backward beyond what the inputs already hold."""
    if device == "cuda":
        x, y = make_inputs(batch, n, device)
        CASES[case](x[:, :8], y[:, :8]).backward()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        CASES[case](x, y).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", case, str(batch), str(n)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux) and return the current RSS in bytes.

    ru_maxrss alone is not enough: Linux carries it over from the forking parent across exec."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return peak_rss()


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmHWM"].split()[0]) * 1024


def peak_child(case: str, batch: int, n: int) -> None:
    x, y = make_inputs(batch, n, "cpu")
    CASES[case](x[:, :8], y[:, :8]).backward()
    before = reset_peak_rss()
    CASES[case](x, y).backward()
    print(peak_rss() - before)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        peak_child(args.peak_child[0], int(args.peak_child[1]), int(args.peak_child[2]))
        return

    rows = []
    jobs = [(n, case) for n in args.sizes for case in CASES]
    results: dict[tuple[int, str], tuple[float, float, int]] = {}
    for n, case in tqdm(jobs, desc="kernels", disable=args.no_progress):
        seconds, value = time_case(case, args.batch, n, args.device, args.repeats)
        results[(n, case)] = (seconds, value, peak_case(case, args.batch, n, args.device))
    for n in args.sizes:
        c_ours, c_dense = results[(n, "chamfer_ours")], results[(n, "chamfer_dense")]
        e_ours, e_exact = results[(n, "emd_ours")], results[(n, "emd_exact")]
        rows.append(
            f"| {n} | {c_ours[0] * 1e3:.1f} | {c_dense[0] * 1e3:.1f} | {c_dense[0] / c_ours[0]:.2f}x "
            f"| {c_ours[2] / 2**20:.0f} | {c_dense[2] / 2**20:.0f} | {c_dense[2] / max(c_ours[2], 1):.1f}x "
            f"| {e_ours[0] * 1e3:.1f} | {e_exact[0] * 1e3:.1f} | {e_exact[0] / e_ours[0]:.2f}x "
            f"| {(e_ours[1] / e_exact[1] - 1) * 100:+.3f}% |"
        )
    name = device_name(args.device)
    backend = resolve_backend(torch.device(args.device), None)
    command = "python benchmarks/kernels.py " + " ".join(a for a in sys.argv[1:])
    text = "\n".join(
        [
            f"# Kernels benchmark ({args.device})",
            "",
            f"- command: `{command.strip()}`",
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"- machine: {name}; load average at the end {os.getloadavg()[0]:.1f} (shared machine)",
            f"- versions: python {platform.python_version()}, torch {torch.__version__}, scipy {scipy.__version__}"
            + (f", triton {__import__('triton').__version__}" if backend == "triton" else ""),
            f"- batch B = {args.batch}, N = M, uniform clouds in the unit cube; forward + backward, "
            f"median of {args.repeats}; Chamfer path: {backend}",
            "- peak memory: growth of peak RSS in a fresh process (CPU) or max_memory_allocated (CUDA) during one "
            "forward+backward, MiB",
            "",
            "| N | Chamfer ours ms | dense cdist ms | speed-up | ours MiB | dense MiB | memory ratio "
            "| EMD ours ms | exact (scipy) ms | speed-up | EMD gap to exact |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    tag = "cpu" if args.device == "cpu" else name.lower().replace(" ", "_")
    out = Path(__file__).parent / "results" / f"kernels_{tag}.md"
    atomic_write_text(out, text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
