"""Throughput of the synthetic hand generator (frames written per second, RHD format).

    python benchmarks/synth_speed.py                 # 400 frames, all cores, 2 repeats
    python benchmarks/synth_speed.py --frames 200 --workers 2 --repeats 3

Runs ``generate_with_stats`` into a temporary folder and reports, per repeat:
end-to-end frames/s (worker start-up, rendering, PNG files, pickles), steady-state
frames/s (after the first frame, i.e. without process start-up), and the
per-stage cost in milliseconds of one process's time per frame (skeleton and
placement, mesh, ray casting, shading with background and noise, PNG encoding and
writing). The best repeat is recorded in benchmarks/results/synth_speed.md, since
other work on a shared machine only ever slows a run down.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from crossmodal.data.synthetic import GenerationStats, generate_with_stats
from crossmodal.io import atomic_write_text

STAGES = ("skeleton", "mesh", "raycast", "shading", "png")
TARGET_FPS = 50.0


def run_once(frames: int, workers: int, seed: int) -> tuple[GenerationStats, float]:
    """One timed generation and the machine's 1-minute load average just before it."""
    out = Path(tempfile.mkdtemp(prefix="synth_speed_"))
    load = os.getloadavg()[0]
    try:
        n_test = frames // 5
        return generate_with_stats(out, frames - n_test, n_test, seed=seed, workers=workers, progress=False), load
    finally:
        shutil.rmtree(out, ignore_errors=True)


def describe(stats: GenerationStats, load: float) -> str:
    per_frame = {s: 1000.0 * stats.stage_s.get(s, 0.0) / stats.frames for s in STAGES}
    stages = ", ".join(f"{s} {ms:.1f}" for s, ms in per_frame.items())
    return (
        f"{stats.frames} frames, {stats.workers} workers: {stats.frames_per_s:.1f} frames/s end-to-end "
        f"({stats.wall_s:.2f} s, first frame after {stats.first_frame_s:.2f} s), "
        f"{stats.steady_frames_per_s:.1f} frames/s steady; ms per frame: {stages} "
        f"(sum {sum(per_frame.values()):.1f}); load average before the run {load:.1f}"
    )


def stage_table(stats: GenerationStats) -> str:
    rows = ["| stage | ms per frame (one process) | share |", "|---|---:|---:|"]
    total = sum(stats.stage_s.get(s, 0.0) for s in STAGES)
    for s in STAGES:
        seconds = stats.stage_s.get(s, 0.0)
        rows.append(f"| {s} | {1000.0 * seconds / stats.frames:.2f} | {100.0 * seconds / total:.0f}% |")
    rows.append(f"| total | {1000.0 * total / stats.frames:.2f} | 100% |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serial", action="store_true", help="also time one in-process run (workers=1)")
    parser.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "synth_speed.md")
    args = parser.parse_args()

    runs = []
    for r in range(args.repeats):
        runs.append(run_once(args.frames, args.workers, args.seed))
        print(f"repeat {r + 1}: {describe(*runs[-1])}", flush=True)
    serial = run_once(args.frames // 2, 1, args.seed) if args.serial else None
    if serial is not None:
        print(f"serial: {describe(*serial)}", flush=True)

    best = max(runs, key=lambda run: run[0].frames_per_s)[0]
    verdict = "meets" if best.frames_per_s >= TARGET_FPS else "MISSES"
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        "# Synthetic hand generation speed",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        "shared with other jobs, no GPU",
        f"- frames per run: {args.frames} (80% training, 20% evaluation), 320x320, written as RHD PNGs + pickle",
        "",
        f"Best of {len(runs)} runs: **{best.frames_per_s:.1f} frames/s end-to-end** with {best.workers} worker "
        f"processes ({verdict} the {TARGET_FPS:.0f} frames/s target); "
        f"{best.steady_frames_per_s:.1f} frames/s after worker start-up "
        f"({best.first_frame_s:.2f} s until the first frame).",
        "",
        "All runs:",
        "",
        *[f"- {describe(*run)}" for run in runs],
        *([f"- serial (in-process): {describe(*serial)}"] if serial is not None else []),
        "",
        "Per-stage cost of the best run (seconds summed over workers / frames):",
        "",
        stage_table(best),
        "",
        "Stages: skeleton = sampling hand, pose, camera and placement (incl. the mesh built for the",
        "in-view check); mesh = transforming it to the camera; raycast = Open3D scene build, one ray per",
        "pixel in the hand's box, smooth normals, 21 visibility rays; shading = albedo, Lambert + ambient,",
        "background, noise;",
        "png = encoding the three PNGs and writing them atomically.",
        "",
        "A load average above the number of cores means other jobs were using the CPU during the run;",
        "every stage then takes proportionally longer (compare with the serial run's stage times).",
        "",
    ]
    atomic_write_text(args.result, "\n".join(lines))
    print(f"recorded in {args.result}")


if __name__ == "__main__":
    main()
