"""Write synthetic frames in RHD_published_v2's exact on-disk format, in parallel processes.

    out/training/color/00000.png     320x320 RGB
    out/training/depth/00000.png     RGB, metres = (R * 256 + G) / 65535 * 5
    out/training/mask/00000.png      8-bit labels: 0 background, 1 person, 2-17 left, 18-33 right
    out/training/anno_training.pickle  {id: {'xyz': (42, 3), 'uv_vis': (42, 3), 'K': (3, 3)}}
    out/evaluation/...               the same with anno_evaluation.pickle

Every file is written to a temporary name and renamed when complete; each split's
pickle is written last, after all its frames, so a folder with a pickle is complete.
Frames are independent (each depends only on seed, split and index), so any number
of worker processes produce byte-identical files.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from crossmodal.data.codecs import encode_rhd_depth
from crossmodal.data.synthetic import render
from crossmodal.data.synthetic.png import encode_png
from crossmodal.data.synthetic.scene import SPLITS, SynthFrame, render_frame
from crossmodal.errors import ConfigError
from crossmodal.io import atomic_path, atomic_write_bytes

FRAME_FOLDERS = ("color", "depth", "mask")
ANNOTATION_KEYS = ("xyz", "uv_vis", "K")
_FRAME_NAME = re.compile(r"^(\d{5,})\.png$")


@dataclass
class GenerationStats:
    """What ``generate_with_stats`` measured: frames, wall time and summed per-stage seconds."""

    frames: int = 0
    wall_s: float = 0.0  # everything: worker start-up, frames, pickles
    first_frame_s: float = 0.0  # until the first frame was done (mostly worker start-up)
    workers: int = 1
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def steady_frames_per_s(self) -> float:
        """Throughput once the workers run: frames after the first over the time they took."""
        busy = self.wall_s - self.first_frame_s
        return (self.frames - 1) / busy if self.frames > 1 and busy > 0 else float("nan")


def annotation(frame: SynthFrame) -> dict[str, np.ndarray]:
    """The frame's entry of RHD's annotation pickle."""
    return {"xyz": frame.xyz.copy(), "uv_vis": frame.uv_vis.copy(), "K": frame.K.copy()}


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """RHD's depth encoding (``codecs.encode_rhd_depth``), applied only to the box holding depth.

    Zero depth encodes to zero bytes, so the result equals encoding the whole image.
    """
    out = np.zeros(depth_m.shape + (3,), np.uint8)
    rows, cols = np.flatnonzero(depth_m.any(axis=1)), np.flatnonzero(depth_m.any(axis=0))
    if rows.size:
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        out[box] = encode_rhd_depth(depth_m[box])
    return out


def write_frame(frame: SynthFrame, split_dir: Path, index: int) -> None:
    """Write the colour, depth and mask PNGs of one frame (each atomically)."""
    name = f"{index:05d}.png"
    atomic_write_bytes(split_dir / "color" / name, encode_png(frame.color))
    atomic_write_bytes(split_dir / "depth" / name, encode_png(encode_depth(frame.depth_m)))
    atomic_write_bytes(split_dir / "mask" / name, encode_png(frame.mask))


def _render_and_write(task: tuple[int, str, int, str]) -> tuple[str, int, dict[str, np.ndarray], dict[str, float]]:
    seed, split, index, out = task
    frame = render_frame(seed, split, index)
    t0 = time.perf_counter()
    write_frame(frame, Path(out) / split, index)
    stages = dict(frame.timings)
    stages["png"] = time.perf_counter() - t0
    return split, index, annotation(frame), stages


def _canonical(anno: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fresh arrays and keys owned by this process, so the pickle's bytes do not depend on workers.

    Objects unpickled from a worker (key strings, dtype instances) are distinct but
    equal copies; pickle's memo then writes them out again and the bytes differ.
    """
    out = {}
    for key in ANNOTATION_KEYS:
        out[key] = np.empty(anno[key].shape, dtype=np.float32)
        out[key][...] = anno[key]
    return out


def _init_worker() -> None:
    # Parallelism comes from the processes; Open3D's own threads would oversubscribe the cores.
    render.set_raycast_threads(1)


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"synthetic {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _remove_stale_frames(split_dir: Path, count: int) -> None:
    """Delete frames numbered >= count left by an earlier, larger run into the same folder."""
    for folder in FRAME_FOLDERS:
        for path in (split_dir / folder).iterdir():
            match = _FRAME_NAME.match(path.name)
            if match and int(match.group(1)) >= count:
                path.unlink()


def _results(tasks: list[tuple[int, str, int, str]], workers: int) -> Iterator[tuple]:
    if workers <= 1:
        yield from map(_render_and_write, tasks)
        return
    # Not "fork": Open3D's (TBB/Embree) thread pools do not survive fork() once used, and
    # the caller may have rendered already. A fork server is a fresh process that imports
    # the renderer once and forks the workers from there: cheaper than "spawn", where
    # every worker imports Open3D itself.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    chunksize = max(1, min(16, len(tasks) // (8 * workers)))
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_render_and_write, tasks, chunksize=chunksize)


def generate_with_stats(
    out: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> GenerationStats:
    """``generate``, returning frame count, wall time and per-stage seconds (summed over workers)."""
    n_train = _check_count("train count", n_train, 0)
    n_test = _check_count("test count", n_test, 0)
    seed = _check_count("seed", seed, 0)
    workers = _check_count("workers", (os.cpu_count() or 1) if workers is None else workers, 1)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"synthetic output {out} exists and is not a directory")
    counts = {"training": n_train, "evaluation": n_test}
    for split in SPLITS:
        split_dir = out / split
        # An old pickle would mark a half-rewritten folder as complete: drop it first.
        (split_dir / f"anno_{split}.pickle").unlink(missing_ok=True)
        for folder in FRAME_FOLDERS:
            (split_dir / folder).mkdir(parents=True, exist_ok=True)

    tasks = [(seed, split, i, str(out)) for split in SPLITS for i in range(counts[split])]
    workers = max(1, min(workers, len(tasks)))
    stats = GenerationStats(frames=len(tasks), workers=workers)
    annotations: dict[str, dict[int, dict[str, np.ndarray]]] = {split: {} for split in SPLITS}
    t0 = time.perf_counter()
    with tqdm(total=len(tasks), desc="synthetic hands", unit="frame", disable=not progress) as bar:
        for split, index, anno, stages in _results(tasks, workers):
            if not any(annotations.values()):
                stats.first_frame_s = time.perf_counter() - t0
            annotations[split][index] = _canonical(anno)
            for stage, seconds in stages.items():
                stats.stage_s[stage] += seconds
            bar.update(1)

    for split in SPLITS:
        split_dir = out / split
        _remove_stale_frames(split_dir, counts[split])
        with atomic_path(split_dir / f"anno_{split}.pickle") as tmp:
            with open(tmp, "wb") as f:
                pickle.dump(dict(sorted(annotations[split].items())), f, protocol=pickle.HIGHEST_PROTOCOL)
    stats.wall_s = time.perf_counter() - t0
    return stats


def generate(
    out: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> None:
    """Render ``n_train`` training and ``n_test`` evaluation frames into ``out`` in RHD's format.

    Frame i of a split depends only on (seed, split, i): the files are byte-identical
    whatever the counts and the number of worker processes (default: all CPU cores).
    """
    generate_with_stats(out, n_train, n_test, seed=seed, workers=workers, progress=progress)
