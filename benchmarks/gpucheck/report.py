"""The GPU check's report: the environment, the targets, and one Markdown section per measurement."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
from typing import Any

import torch

from .common import ROOT, fmt
from .plan import LABELS, PRECISIONS, Plan

SECTIONS = {  # in report order; gpu_check.main() runs them in its own order, SECTION_WRITERS writes them
    "check": "Kernels: Triton against the CPU reference",
    "kernels": "Kernels: forward + backward timings",
    "throughput": "Training throughput",
    "batch": "GPU memory and the largest batch",
    "run": "Short real run",
}


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
