"""What every section of the GPU check shares: the time budget, timing, GPU memory, number format."""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from kernels import sync

ROOT = Path(__file__).resolve().parents[2]


class Budget:
    """Seconds left of the whole run."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure(fn: Callable[[], Any], device: str, warmup: int, repeats: int, target_s: float) -> float:
    """Median seconds of ``fn`` after ``warmup`` calls; stops repeating once ``target_s`` is spent."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < repeats and sum(times) < target_s:
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_bytes(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device == "cuda" else 0


def peak_gib(device: str) -> float | None:
    """Peak allocated GPU memory since the last reset_peak; None on the CPU (no allocator statistics)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def out_of_memory(exc: BaseException) -> bool:
    """CUDA out of memory, also when cuBLAS or cuDNN report it as a plain RuntimeError."""
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text or "ALLOC_FAILED" in text


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
