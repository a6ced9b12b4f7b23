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
The sections live in benchmarks/gpucheck/, one module each; this file runs them.
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:
    # Triton reads the flag when it is imported: set it before anything imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The cache is only read: no HDF5 file locks, which some sandboxed file systems refuse.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import argparse
import contextlib
import faulthandler
import json
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT))  # after benchmarks/ (sys.path[0]): the project from its source tree

import torch  # noqa: E402

from gpucheck.common import Budget, free_memory, say  # noqa: E402
from gpucheck.kernel_checks import check_kernels, time_kernels  # noqa: E402
from gpucheck.plan import FULL, SMOKE_PLAN  # noqa: E402
from gpucheck.report import SECTIONS, environment, gpu_tag, render  # noqa: E402
from gpucheck.short_run import prepare, short_run  # noqa: E402
from gpucheck.steps import largest_batch, time_steps  # noqa: E402


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
        "run": lambda: short_run(plan, budget, cache_dir, work, build_missing=args.smoke),
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
