"""GPU check: the Triton kernels and training measured on a GPU in one prepared run.

    python benchmarks/gpu_check.py --out DIR                 # on a CUDA machine (see benchmarks/GPU.md)
    python benchmarks/gpu_check.py --smoke --out /tmp/gc     # every stage at tiny sizes on CPU
    python benchmarks/gpu_check.py --prepare .gpucheck/cache # build the 64 px cache the short run reads

Writes ``DIR/gpu_check_<gpu>.md`` (``gpu_check_cpu_smoke.md`` with ``--smoke``) and the raw
numbers beside it as ``.json``:

- kernels: ``nearest_neighbors`` / ``chamfer_distance`` and ``emd_assignment`` / ``emd`` through
  Triton checked against the CPU reference on the same inputs (and EMD against the exact
  solver), then forward+backward timed at B=32, N=M=256/1024/2048 against dense ``torch.cdist``;
- training throughput: each strategy's step (forward+backward+Adam) at the GPU profile's sizes
  in bf16-mixed and fp32, beside the ResNet-18 encoder's forward+backward alone (the ceiling);
  peak GPU memory, and the largest S4 batch that fits;
- a short real run: S4 through the Lightning trainer in bf16 on a cache built elsewhere by
  ``--prepare`` (no frames can be generated on the GPU machine: it has no open3d).

The project is imported from the source tree (nothing is installed). Every section runs
under one time budget (``--budget-s``) and is guarded: an error is written into the report
with its traceback and the next section still runs; the report is rewritten after each
section, so a run cut short still leaves what it measured. Exit status 1 if a section failed.
``--smoke`` runs the Triton kernels on CPU tensors under the interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

import os
import sys

SMOKE = "--smoke" in sys.argv
if SMOKE:
    # Triton reads the flag when it is imported: set it before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The cache is only read: no HDF5 file locks, which some sandboxed file systems refuse.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import argparse
import contextlib
import datetime
import faulthandler
import gc
import json
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT))  # after benchmarks/ (sys.path[0]): the project from its source tree

import torch  # noqa: E402

from kernels import dense_chamfer, exact_emd, make_inputs, sync  # noqa: E402
from train_profile import fake_batch  # noqa: E402

#: The short real run: S4 on the CPU profile's recipe for a short budget (64 px crops, 2D keypoint
#: stage, cosine schedule, bf16). ``--prepare`` builds the cache with these same overrides, so the
#: preprocessing hash of the carried cache matches the run's.
RUN = ["profile=cpu", "model.strategy=poe", "trainer.precision=bf16-mixed",
       "data.synthetic.train=600", "data.synthetic.test=100", "data.synthetic.seed=7"]
#: Smoke: every module and the data at a few channels, pixels and points (applied on top of RUN
#: for the short run and of the GPU profile for the step timings).
TINY = ("data.synthetic.train=20 data.synthetic.test=6 data.batch_size=4 data.num_points=64 "
        "data.preprocess.crop_size=32 data.preprocess.pool_size=128 data.preprocess.heatmap_size=32 "
        "data.preprocess.heatmap_sigma=1.0 model.latent_dim=16 model.joint_hidden=32 "
        "model.encoder_options.cloud_respel.widths=[16,32] model.decoder_options.heatmap_dcgan.channels=[16,8,8] "
        "model.decoder_options.cloud_foldingnet.grid_size=8 model.decoder_options.cloud_foldingnet.hidden=[32,32]").split()
LABELS = {"crossmodal": "S1", "extended": "S2", "kl_align": "S3", "poe": "S4", "regressor": "regressor"}
PRECISIONS = ("bf16-mixed", "32-true")
SECTIONS = {  # in report order; main() runs them in its own order, SECTION_WRITERS writes them
    "check": "Kernels: Triton against the CPU reference",
    "kernels": "Kernels: forward + backward timings",
    "throughput": "Training throughput",
    "batch": "GPU memory and the largest batch",
    "run": "Short real run",
}


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: FULL on a GPU, SMOKE_PLAN on CPU."""

    device: str
    kernel_batch: int
    kernel_sizes: tuple[int, ...]
    kernel_warmup: int  # on a GPU one call compiles the Triton kernels; the interpreter needs none
    kernel_repeats: int
    check_shape: tuple[int, int, int]  # B, N, M of the Chamfer reference check
    check_emd: int  # N = M of the EMD reference check
    exact_samples: int  # samples solved exactly by scipy at N > 1024 (all of them below)
    step_overrides: tuple[str, ...]  # on top of profile=gpu
    step_warmup: int
    step_repeats: int
    batch_cap: int  # largest batch the memory search tries
    run_overrides: tuple[str, ...]
    run_steps: int
    run_workers: int
    target_s: float  # at most this long timing one case, after its warm-up
    reserve_s: float  # the kernel and step timings stop when less is left: the short run's time
    tail_s: float  # the short run stops when less is left: the largest-batch search's time
    emd_cap_s: float  # EMD is not timed at a size whose estimated cost is above this


FULL = Plan("cuda", 32, (256, 1024, 2048), 1, 10, (4, 1000, 1500), 1000, 8, (), 3, 10, 16384, tuple(RUN), 300, 4, 3.0, 150.0, 60.0, 40.0)
# The interpreted auction costs ~1 s per solve at N = 16 on a free core: EMD stays at N <= 24.
SMOKE_PLAN = Plan("cpu", 2, (16, 24), 0, 1, (2, 40, 70), 20, 2, tuple(TINY), 1, 2, 16, (*RUN, *TINY), 8, 0, 1.0, 60.0, 30.0, 120.0)


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


# ----------------------------------------------------------------------------- kernels

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


# ----------------------------------------------------------------------------- training steps

def step_config(name: str, plan: Plan) -> Any:
    from crossmodal.config import load_config

    return load_config(None, ["profile=gpu", f"model.strategy={name}", *plan.step_overrides])


def device_batch(cfg: Any, device: str, size: int | None = None) -> dict[str, torch.Tensor]:
    """A batch of the config's shapes on the device, with every key the data module provides; ``size``
    samples (default the config's batch) tiled on the device from one config-sized batch, so that a
    batch of thousands costs no CPU time to make."""
    batch = fake_batch(cfg)
    b, s = batch["image"].shape[0], cfg.data.preprocess.crop_size
    g = torch.Generator().manual_seed(1)
    batch.update(
        uv=torch.rand(b, 21, 2, generator=g) * s,
        visible=torch.ones(b, 21, dtype=torch.bool),
        K=torch.tensor([[s, 0.0, s / 2], [0.0, s, s / 2], [0.0, 0.0, 1.0]]).expand(b, 3, 3).contiguous(),
        root=torch.zeros(b, 3),
        scale=torch.ones(b),
        rotation=torch.eye(3).expand(b, 3, 3).contiguous(),
    )
    size = size or b
    return {k: v.to(device).repeat(-(-size // b), *[1] * (v.dim() - 1))[:size] for k, v in batch.items()}


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


class StepBench:
    """One strategy on the device with Adam: ``step(batch, precision)`` is a full training step."""

    def __init__(self, name: str, plan: Plan) -> None:
        from crossmodal.registry import STRATEGIES

        self.cfg = step_config(name, plan)
        self.device = plan.device
        self.strategy = STRATEGIES.get(name)(self.cfg.model).to(self.device)
        self.optimizer = torch.optim.Adam(self.strategy.parameters(), lr=self.cfg.optim.lr)

    def step(self, batch: dict[str, torch.Tensor], precision: str) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, precision):
            loss = self.strategy.losses(batch, 1e-3)["loss"]
        loss.backward()
        self.optimizer.step()

    def encoder_pass(self, batch: dict[str, torch.Tensor], precision: str) -> None:
        """The RGB encoder (ResNet-18 trunk and heads) forward+backward alone: the ceiling of a step."""
        encoder = self.strategy.encoders["image"]
        encoder.zero_grad(set_to_none=True)
        with autocast(self.device, precision):
            q = encoder(batch["image"])
        (q.mu.float().sum() + q.logvar.float().sum()).backward()


def time_steps(plan: Plan, budget: Budget) -> dict[str, Any]:
    from crossmodal.data.datamodule import CrossmodalDataModule
    from crossmodal.registry import STRATEGIES
    from omegaconf import OmegaConf

    dev = plan.device
    rows = []
    names = sorted(STRATEGIES.names(), key=lambda s: LABELS.get(s, s))
    batch_size = None
    for name in names:
        bench = StepBench(name, plan)
        batch = device_batch(bench.cfg, dev)
        batch_size = batch["image"].shape[0]
        passes = [(name, bench.step)] + ([("resnet18", bench.encoder_pass)] if name == "poe" else [])
        for label, fn in passes:
            for precision in PRECISIONS:
                if budget.left() < plan.reserve_s:
                    rows.append({"strategy": label, "precision": precision, "skipped": "time budget"})
                    continue
                free_memory(dev)
                reset_peak(dev)
                seconds = measure(lambda: fn(batch, precision), dev, plan.step_warmup, plan.step_repeats, plan.target_s)
                rows.append({"strategy": label, "precision": precision, "ms": seconds * 1e3,
                             "samples_per_s": batch_size / seconds, "peak_gib": peak_gib(dev)})
                say(f"step {label} {precision}: {seconds * 1e3:.1f} ms, {batch_size / seconds:.0f} samples/s")
        if name == "poe":
            data = CrossmodalDataModule(OmegaConf.to_object(bench.cfg.data), progress=False)
            augment = measure(lambda: data.finish_batch(batch, augment=True), dev, 1, plan.step_repeats, plan.target_s)
        del bench, batch
    ceiling = {r["precision"]: r["samples_per_s"] for r in rows if r["strategy"] == "resnet18" and "ms" in r}
    for r in rows:
        if "ms" in r and r["precision"] in ceiling:
            r["of_ceiling"] = r["samples_per_s"] / ceiling[r["precision"]]
    return {"batch": batch_size, "rows": rows, "augment_ms": augment * 1e3,
            "crop_size": int(step_config("poe", plan).data.preprocess.crop_size),
            "matmul_precision": torch.get_float32_matmul_precision()}


def largest_batch(plan: Plan, budget: Budget) -> dict[str, Any]:
    """S4's full step at doubling batch sizes until one does not fit (or the cap, or the time)."""
    dev = plan.device
    bench = StepBench("poe", plan)
    start = int(bench.cfg.data.batch_size)
    rows = []
    for precision in PRECISIONS:
        size = start
        while size <= plan.batch_cap:
            if budget.left() < 30:
                rows.append({"precision": precision, "batch": size, "skipped": "time budget"})
                break
            free_memory(dev)
            reset_peak(dev)
            try:
                batch = device_batch(bench.cfg, dev, size)
                begin = time.perf_counter()
                bench.step(batch, precision)
                sync(dev)
                seconds = time.perf_counter() - begin
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                batch = None
                bench.optimizer.zero_grad(set_to_none=True)
                free_memory(dev)
                rows.append({"precision": precision, "batch": size, "fits": False})
                say(f"batch {precision} {size}: out of memory")
                break
            del batch
            rows.append({"precision": precision, "batch": size, "fits": True, "ms": seconds * 1e3, "peak_gib": peak_gib(dev)})
            say(f"batch {precision} {size}: {seconds * 1e3:.0f} ms, peak {fmt(peak_gib(dev), '.1f')} GiB")
            if seconds > 20:
                break  # the next one would take too long
            size *= 2
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if dev == "cuda" else None
    return {"rows": rows, "cap": plan.batch_cap, "total_gib": total}


# ----------------------------------------------------------------------------- short real run

def run_config(plan: Plan, cache_dir: Path, work: Path, extra: list[str] | None = None) -> Any:
    from crossmodal.config import load_config

    return load_config(None, [*plan.run_overrides, f"data.cache_dir={cache_dir}", f"data.root={work / 'frames'}",
                              f"out_dir={work / 'runs'}", "name=s4-short", f"trainer.max_steps={plan.run_steps}",
                              "trainer.progress=false", f"data.num_workers={plan.run_workers}", *(extra or [])])


def prepare(plan: Plan, cache_dir: Path) -> list[Path]:
    """Generate the run's synthetic frames in a scratch folder, cache them into ``cache_dir``, drop the frames."""
    from crossmodal.data.datamodule import build_datamodule

    scratch = Path(tempfile.mkdtemp(prefix="gpucheck-frames-"))
    try:
        data = build_datamodule(run_config(plan, cache_dir, scratch))
        data.prepare_data()
        return [data.cache_path(split) for split in data.splits()]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def short_run(plan: Plan, budget: Budget, cache_dir: Path, work: Path) -> dict[str, Any]:
    """S4 through the Lightning trainer (crossmodal.train.build_trainer) on the carried cache."""
    import lightning as L
    from omegaconf import OmegaConf

    from crossmodal.data.cache import check_cache
    from crossmodal.data.datamodule import CrossmodalDataModule
    from crossmodal.module import CrossmodalModule
    from crossmodal.runlog import run_directory, validation_curve
    from crossmodal.train import build_trainer

    class CarriedCache(CrossmodalDataModule):
        """The caches were built on another machine (--prepare): there are no frames here to build from."""

        def prepare_data(self) -> None:
            for split in self.splits():
                check_cache(self.cache_path(split), self.cfg.preprocess)

    class Curve(L.Callback):
        """Each step's loss; stops the fit when only the largest-batch search's time is left."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.stopped = False

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(outputs["loss"]))
            if budget.left() < plan.tail_s:
                trainer.should_stop = self.stopped = True

    cfg = run_config(plan, cache_dir, work)
    data = CarriedCache(OmegaConf.to_object(cfg.data), progress=False)
    missing = [p for p in (data.cache_path(s) for s in data.splits()) if not p.is_file()]
    if missing and SMOKE:
        say(f"building the tiny cache in {cache_dir}")
        prepare(plan, cache_dir)
    elif missing:
        raise FileNotFoundError(f"no cache {missing[0]}: build it with python benchmarks/gpu_check.py --prepare {cache_dir}")
    L.seed_everything(cfg.seed, verbose=False)
    module = CrossmodalModule(OmegaConf.to_container(cfg, resolve=True))
    run_dir = run_directory(cfg)
    trainer = build_trainer(cfg, run_dir)
    curve = Curve()
    trainer.callbacks.append(curve)
    begin = time.perf_counter()
    error = None
    try:
        trainer.fit(module, datamodule=data)
    except Exception as exc:  # NonFiniteLossError and the like: reported with the curve so far
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - begin
    losses = curve.losses
    return {
        "steps": len(losses), "planned_steps": plan.run_steps, "seconds": seconds, "batch": int(cfg.data.batch_size),
        "crop_size": int(cfg.data.preprocess.crop_size), "precision": str(trainer.precision),
        "train_samples": len(data.datasets.get("train", ())), "val_samples": len(data.datasets.get("val", ())),
        "losses": losses, "finite": bool(losses) and all(v == v and abs(v) != float("inf") for v in losses),
        "val_epe": validation_curve(run_dir), "stopped_by_budget": curve.stopped, "error": error,
        "cache_mib": sum(data.cache_path(s).stat().st_size for s in data.splits()) / 2**20,
    }


# ----------------------------------------------------------------------------- report

def gpu_tag(plan: Plan) -> str:
    if plan.device != "cuda":
        return "cpu_smoke"
    return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name().lower()).strip("_")


def commit(given: str | None) -> str:
    if given:
        return given
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout here: pass --commit)"


def environment(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    import lightning
    import triton

    env: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": commit(args.commit),
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": triton.__version__,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "lightning": lightning.__version__,
        "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    if plan.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, compute capability {p.major}.{p.minor}"
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, check=True).stdout.strip()
    else:
        env["gpu"] = "none: --smoke on CPU, Triton kernels under the interpreter"
    return env


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("PASS" if ok else "FAIL")


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, goal, met) from whatever was measured; met is None where nothing was."""
    out: list[tuple[str, str, str, bool | None]] = []
    checks = results.get("check", {}).get("rows", [])
    out.append(("kernels agree with the CPU reference", f"{sum(r['ok'] for r in checks)}/{len(checks)} checks" if checks else "-",
                "all", results["check"]["ok"] if checks else None))
    rows = {r["n"]: r for r in results.get("kernels", {}).get("rows", []) if "chamfer_speedup" in r}
    emd_rows = {n: r for n, r in rows.items() if "emd_gap" in r}
    big = max(rows, default=None)
    mid = 1024 if 1024 in emd_rows else max(emd_rows, default=None)
    out.append((f"Chamfer speed-up over dense cdist at N={big or 2048}", f"{rows[big]['chamfer_speedup']:.3g}x" if big else "-",
                ">= 20x at N=2048", rows[big]["chamfer_speedup"] >= 20 if big else None))
    out.append((f"EMD forward+backward at N={mid or 1024}", f"{emd_rows[mid]['emd_triton_ms']:.2f} ms" if mid else "-",
                "< 10 ms at N=1024", emd_rows[mid]["emd_triton_ms"] < 10 if mid else None))
    gaps = [abs(r["emd_gap"]) for r in emd_rows.values()]
    out.append(("EMD cost gap to exact (largest over N)", f"{max(gaps) * 100:.3f}%" if gaps else "-", "< 1%",
                max(gaps) < 0.01 if gaps else None))
    steps = {r["precision"]: r for r in results.get("throughput", {}).get("rows", []) if r["strategy"] == "poe" and "of_ceiling" in r}
    for precision in PRECISIONS:
        r = steps.get(precision)
        out.append((f"S4 step / ResNet-18 ceiling, {precision}", f"{r['of_ceiling'] * 100:.0f}%" if r else "-", ">= 40%",
                    r["of_ceiling"] >= 0.4 if r else None))
    run = results.get("run")
    out.append(("short run: every loss finite, no error", f"{run['steps']} steps" if run else "-", "no NaN",
                (run["finite"] and not run["error"]) if run else None))
    return out


def render(results: dict[str, Any], errors: dict[str, str], plan: Plan, env: dict[str, Any], budget_s: float) -> str:
    smoke = plan.device != "cuda"
    lines = [
        "# GPU check" + (" (smoke run on CPU)" if smoke else f": {env['gpu']}"),
        "",
        "Written by `benchmarks/gpu_check.py`; benchmarks/GPU.md gives the device call."
        + (" **Smoke run**: every stage at tiny sizes on CPU with the Triton kernels interpreted. It proves that"
           " each stage runs; no figure below says anything about speed, and the targets are the GPU's." if smoke else ""),
        "",
        f"- date: {env['date']}; commit: {env['commit']}",
        f"- command: `{env['command']}`; time budget {budget_s:.0f} s, wall time {results.get('wall_s', 0):.0f} s",
        f"- machine: {env['gpu']}; CPU {env['cpu']}" + (f"; driver {env['driver']}" if env.get("driver") else ""),
        f"- versions: python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
        f"triton {env['triton']}" + (" (interpreter)" if env["triton_interpret"] == "1" else "") + f", lightning {env['lightning']}",
        "",
        "## Targets",
        "",
        "| target | measured | goal | result |",
        "|---|---|---|---|",
        *[f"| {t} | {m} | {g} | {verdict(ok)} |" for t, m, g, ok in targets(results)],
        "",
    ]
    for key, title in SECTIONS.items():
        lines += [f"## {title}", ""]
        if key in results.get("sections", {}):
            lines += [f"Section time: {results['sections'][key]['wall_s']:.1f} s.", ""]
        if key in errors:
            lines += ["**This section failed:**", "", "```", errors[key].rstrip(), "```", ""]
        if key in results:
            lines += SECTION_WRITERS[key](results[key], plan)
        elif key not in errors:
            lines += ["not run (time budget)", ""]
    return "\n".join(lines)


def write_check(r: dict[str, Any], plan: Plan) -> list[str]:
    return [
        "Same inputs on the device (Triton) and on the CPU (chunked torch search; the C or torch auction), "
        "clouds offset by 100 to exercise the centring; EMD also against `scipy.optimize.linear_sum_assignment`.",
        "",
        "| check | value | tolerance | ok |",
        "|---|---|---|---|",
        *[f"| {x['check']} | {fmt(x['value'], '.6g')} | {x['tolerance']} | {fmt(x['ok'])} |" for x in r["rows"]],
        "",
    ]


def write_kernels(r: dict[str, Any], plan: Plan) -> list[str]:
    lines = [
        f"B = {r['batch']}, N = M, uniform clouds in the unit cube, forward + backward; median after "
        f"{plan.kernel_warmup} warm-up call(s), at most {plan.kernel_repeats} repeats or {plan.target_s:.0f} s; peak "
        "memory above the inputs (CUDA only). EMD gap: our mean matched distance over the exact one on the first "
        "k samples.",
        "",
        "| N | Chamfer Triton ms | dense cdist ms | speed-up | Chamfer MiB | dense MiB | EMD Triton ms | EMD MiB "
        "| EMD gap to exact (k) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        if "skipped" in x:
            lines.append(f"| {x['n']} | skipped: {x['skipped']} | | | | | | | |")
            continue
        emd = (f"{x['emd_triton_ms']:.2f} | {fmt(x['emd_triton_mib'], '.0f')} | {x['emd_gap'] * 100:+.3f}% ({x['exact_samples']})"
               if "emd_gap" in x else f"skipped: {x.get('emd_skipped')} | | ")
        lines.append(
            f"| {x['n']} | {x['chamfer_triton_ms']:.2f} | {x['chamfer_dense_ms']:.2f} | {x['chamfer_speedup']:.3g}x "
            f"| {fmt(x['chamfer_triton_mib'], '.0f')} | {fmt(x['chamfer_dense_mib'], '.0f')} | {emd} |"
        )
    return lines + [""]


def write_throughput(r: dict[str, Any], plan: Plan) -> list[str]:
    lines = [
        f"Profile `gpu` ({r['crop_size']} px crops, the paper's module widths"
        + (", shrunk by the smoke overrides" if plan.step_overrides else "")
        + f"), batch {r['batch']}, one batch on the device; forward + backward + Adam, median after "
        f"{plan.step_warmup} warm-up steps. `resnet18`: the RGB encoder's forward + backward alone, the ceiling "
        f"of a step. fp32 matmul precision: {r['matmul_precision']}. Augmentation + heatmaps of one batch on the "
        f"device (not in the step): {r['augment_ms']:.2f} ms.",
        "",
        "| strategy | precision | ms / step | samples / s | peak GiB | of the ResNet-18 ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        label = LABELS.get(x["strategy"], x["strategy"])
        name = x["strategy"] if label == x["strategy"] else f"{label} {x['strategy']}"
        if "skipped" in x:
            lines.append(f"| {name} | {x['precision']} | skipped: {x['skipped']} | | | |")
            continue
        ceiling = f"{x['of_ceiling'] * 100:.0f}%" if "of_ceiling" in x else "-"
        lines.append(f"| {name} | {x['precision']} | {x['ms']:.1f} | {x['samples_per_s']:.1f} "
                     f"| {fmt(x['peak_gib'], '.2f')} | {ceiling} |")
    return lines + [""]


def write_batch(r: dict[str, Any], plan: Plan) -> list[str]:
    total = f"{r['total_gib']:.1f} GiB on the device" if r["total_gib"] else "CPU: no GPU memory to fill"
    lines = [
        f"S4's full step at doubling batch sizes until one runs out of memory ({total}; cap {r['cap']}); "
        "peak = `torch.cuda.max_memory_allocated` during that step; ms is the first step at that size.",
        "",
        "| precision | batch | fits | ms / step | peak GiB |",
        "|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        fits = f"skipped: {x['skipped']}" if "skipped" in x else fmt(x["fits"])
        lines.append(f"| {x['precision']} | {x['batch']} | {fits} | {fmt(x.get('ms'), '.0f')} | {fmt(x.get('peak_gib'), '.2f')} |")
    lines.append("")
    for precision in PRECISIONS:
        fit = [x for x in r["rows"] if x["precision"] == precision and x.get("fits")]
        failed = [x["batch"] for x in r["rows"] if x["precision"] == precision and x.get("fits") is False]
        if fit:
            bound = f"out of memory at {failed[0]}" if failed else "no larger size tried"
            lines.append(f"- largest batch that fits, {precision}: {fit[-1]['batch']} ({bound})" + projection(fit, r["total_gib"]))
    return lines + [""]


def projection(fit: list[dict[str, Any]], total_gib: float | None) -> str:
    """'; memory ... per sample, ... projected' from the peaks of the two largest batches that fit."""
    if total_gib is None or len(fit) < 2 or fit[-1]["batch"] == fit[-2]["batch"]:
        return ""
    (b0, m0), (b1, m1) = ((x["batch"], x["peak_gib"]) for x in fit[-2:])
    per_sample = (m1 - m0) / (b1 - b0)
    if per_sample <= 0:
        return ""
    projected = int((0.95 * total_gib - (m1 - per_sample * b1)) / per_sample)
    return f"; {per_sample * 2**10:.1f} MiB per sample, so about {projected} would fill 95% of the device"


def write_run(r: dict[str, Any], plan: Plan) -> list[str]:
    losses = r["losses"]
    window = max(1, len(losses) // 10)
    spans = [(i + 1, min(i + window, len(losses))) for i in range(0, len(losses), window)]
    steps_per_s = r["steps"] / r["seconds"] if r["seconds"] else 0.0
    return [
        f"S4 (`poe`) through `crossmodal.train.build_trainer` ({r['precision']}), {r['crop_size']} px crops, batch "
        f"{r['batch']}, {r['train_samples']} training / {r['val_samples']} validation frames of the carried cache "
        f"({r['cache_mib']:.1f} MiB); overrides: `{' '.join(plan.run_overrides)}`.",
        "",
        f"- steps: {r['steps']} of {r['planned_steps']}" + (" (stopped by the time budget)" if r["stopped_by_budget"] else "")
        + f"; {r['seconds']:.1f} s including validation ({steps_per_s:.2f} steps/s)",
        f"- every training loss finite: {fmt(r['finite'])}" + (f"; **error: {r['error']}**" if r["error"] else ""),
        f"- validation EPE (mm) after each validation: {', '.join(f'{v:.2f}' for v in r['val_epe']) or 'none'}",
        "",
        "| steps | mean train loss |",
        "|---|---|",
        *[f"| {a}{'' if a == b else f'-{b}'} | {statistics.fmean(losses[a - 1 : b]):.4g} |" for a, b in spans],
        "",
    ]


SECTION_WRITERS = {"check": write_check, "kernels": write_kernels, "throughput": write_throughput,
                   "batch": write_batch, "run": write_run}


# ----------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_check_<gpu>.md and .json")
    parser.add_argument("--smoke", action="store_true", help="every stage at tiny sizes on CPU, Triton interpreted")
    parser.add_argument("--prepare", type=Path, metavar="CACHE_DIR", help="only build the short run's cache there")
    parser.add_argument("--cache-dir", type=Path, help="the short run's cache (default .gpucheck/cache; smoke: WORK/cache)")
    parser.add_argument("--work", type=Path, help="scratch folder for the run (default: a temporary folder, removed)")
    parser.add_argument("--budget-s", type=float, help="time budget of the whole run (default 420; smoke 600)")
    parser.add_argument("--commit", help="the commit to report where there is no git checkout")
    args = parser.parse_args()
    plan = SMOKE_PLAN if args.smoke else FULL
    if args.prepare:
        for path in prepare(plan, args.prepare):
            say(f"cache {path}: {path.stat().st_size / 2**20:.1f} MiB")
        return 0
    if args.out is None:
        parser.error("--out DIR is required (or --prepare CACHE_DIR)")
    if plan.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --smoke for the CPU run of every stage")
    if args.smoke:
        torch.set_num_threads(1)  # tiny networks: a second contended thread only slows them down
    from crossmodal.io import atomic_write_text

    budget_s = args.budget_s or (600.0 if args.smoke else 420.0)
    budget = Budget(budget_s)
    # A section that hangs (a kernel that never returns) must not take the device's whole timeout:
    # 45 s past the budget, print every thread's stack and exit; the sections before it are written.
    faulthandler.dump_traceback_later(budget_s + 45, exit=True)
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpucheck-"))
    cache_dir = args.cache_dir or (work / "cache" if args.smoke else ROOT / ".gpucheck" / "cache")
    env = environment(plan, args)
    tag = gpu_tag(plan)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timing: dict[str, dict[str, float]] = {}
    results["sections"] = timing
    runners = {
        "check": lambda: check_kernels(plan, budget),
        "kernels": lambda: time_kernels(plan, budget),
        "throughput": lambda: time_steps(plan, budget),
        "run": lambda: short_run(plan, budget, cache_dir, work),
        "batch": lambda: largest_batch(plan, budget),  # last: the open-ended one
    }

    def write() -> None:
        results["wall_s"] = time.perf_counter() - started
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"gpu_check_{tag}.md", render(results, errors, plan, env, budget_s) + "\n")
        atomic_write_text(args.out / f"gpu_check_{tag}.json",
                          json.dumps({"env": env, "plan": asdict(plan), "results": results, "errors": errors}, indent=1))

    say(f"{env['gpu']}; torch {env['torch']}, triton {env['triton']}; budget {budget_s:.0f} s")
    write()
    try:
        for key, runner in runners.items():
            if budget.left() < 30:
                say(f"{key}: skipped (time budget)")
                continue
            say(f"{SECTIONS[key]} ...")
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                results[key] = runner()
            except Exception:
                errors[key] = "\n".join(traceback.format_exc().splitlines()[-25:])
                say(f"{key} FAILED:\n{errors[key]}")
            timing[key] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
            say(f"{key}: {timing[key]['wall_s']:.1f} s ({timing[key]['cpu_s']:.1f} s of CPU in this process)")
            with contextlib.suppress(Exception):  # after a CUDA error even freeing memory fails
                free_memory(plan.device)
            write()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {args.out / f'gpu_check_{tag}.md'} in {time.perf_counter() - started:.0f} s; "
        + ("every section ran" if not errors else f"FAILED sections: {', '.join(errors)}"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
