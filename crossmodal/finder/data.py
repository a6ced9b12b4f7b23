"""RHD-format frames (colour PNG + part mask) at the finder's working resolution.

The HDF5 pose caches hold crops, not masks, so the finder reads the raw frames with the RHD
reader's own PNG functions (``crossmodal.data.rhd``). Each frame becomes the image and its
per-pixel class (background, left, right: the class with the largest area fraction after
area downscaling) at ``input_size``; the evaluation split also keeps the full-resolution hand
pixels, the evaluated hand's box and side (the hand with more mask pixels, as RHD's protocol
and the pose cache choose it) for the full-resolution report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.data.rhd import choose_hand, hand_mask, read_label_png, read_rgb_png
from crossmodal.finder.resize import area_resize_numpy, working_size

#: Finder classes per RHD mask label: 0 background, 1 left, 2 right, and PERSON for label 1, the rest
#: of the person (the arms). The network has three outputs and PERSON is background to it; it is
#: kept apart so that training can weigh the background most like a hand (``optim.person_weight``).
PERSON = 3
LABEL_TO_CLASS = np.zeros(256, dtype=np.int64)
LABEL_TO_CLASS[1], LABEL_TO_CLASS[2:18], LABEL_TO_CLASS[18:34] = PERSON, 1, 2


def area_classes(fractions: np.ndarray) -> np.ndarray:
    """(h, w) classes from (3, h, w) area fractions of left, right and person: the largest of
    left, right and the rest (so the hands' cells do not depend on the person's pixels), and a
    cell of the rest is PERSON where the person covers more of it than the background does."""
    hands = fractions[:2]
    rest = 1.0 - hands.sum(axis=0)
    classes = np.concatenate([rest[None], hands]).argmax(axis=0)
    return np.where((classes == 0) & (fractions[2] > rest - fractions[2]), PERSON, classes)


def _class_planes(labels: np.ndarray) -> np.ndarray:
    classes = LABEL_TO_CLASS[labels]
    return np.stack([classes == 1, classes == 2, classes == PERSON])


@dataclass
class FinderFrames:
    """N frames: ``images`` (N, 3, h, w) uint8, ``classes`` (N, h, w) int64, ``side`` (N,) 0 left / 1 right
    of the evaluated hand, ``box`` (N, 4) its pixel edges at full resolution, ``hand_pixels`` (N, H, W)
    bool (both hands, full resolution) or None, ``index`` (N,) frame positions in the split."""

    images: torch.Tensor
    classes: torch.Tensor
    side: torch.Tensor
    box: torch.Tensor
    hand_pixels: torch.Tensor | None
    index: torch.Tensor
    full_images: torch.Tensor | None = None  # (N, 3, H, W) uint8, with the hand pixels: the second look reads them
    windows: torch.Tensor | None = None  # (N, 3, n, n) uint8: a window around each hand (finder.zoom), n = input_size
    window_classes: torch.Tensor | None = None  # (N, n, n) int64, its classes

    def __len__(self) -> int:
        return len(self.images)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Pixel edges (u0, v0, u1, v1) of a non-empty boolean mask."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])


def shrink_frame(image: np.ndarray, labels: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, h, w) uint8 image and (h, w) classes (``LABEL_TO_CLASS``) at the working resolution."""
    size = working_size(image.shape[0], image.shape[1], input_size)
    small = np.clip(np.rint(area_resize_numpy(image.transpose(2, 0, 1), size)), 0, 255).astype(np.uint8)
    return small, area_classes(area_resize_numpy(_class_planes(labels), size))


#: How a training window strays from the hand's true box, as the one-look finder's boxes stray
#: (experiments/results/whole_image.md: centre shifts within +-0.17 box sides and sides 0.83-1.53
#: times the true one in 80% of frames): centre shift ~ N(0, WINDOW_SHIFT) box sides per axis,
#: side x exp(N(0, WINDOW_SCALE)).
WINDOW_SHIFT, WINDOW_SCALE = 0.15, 0.25


def training_window(image: np.ndarray, labels: np.ndarray, box: np.ndarray, zoom: float, cells: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(3, n, n) uint8 window and (n, n) classes around the hand box ``box`` (pixel edges), ``zoom``
    times its longer side, moved and scaled at random as a first look errs; cut by the second
    look's own sampling (``crossmodal.finder.zoom``), so training sees what inference sees."""
    from crossmodal.finder.zoom import sampling_matrix, window_of

    longer = float(np.max(box[2:] - box[:2]))
    centre = (box[:2] + box[2:]) / 2 + rng.normal(0.0, WINDOW_SHIFT, 2) * longer
    half = longer * float(np.exp(rng.normal(0.0, WINDOW_SCALE))) / 2
    moved = torch.tensor([[centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half]], dtype=torch.float64)
    u0, v0, side = window_of(moved, zoom)
    rows = sampling_matrix(v0, side, cells, image.shape[0])[0].numpy()
    cols = sampling_matrix(u0, side, cells, image.shape[1])[0].numpy()
    window = np.clip(np.rint(rows @ image.transpose(2, 0, 1).astype(np.float64) @ cols.T), 0, 255).astype(np.uint8)
    # What lies outside the image reads as black background, as the window's pixels do.
    return window, area_classes(rows @ _class_planes(labels).astype(np.float64) @ cols.T)


def _read(dataset: Any, i: int, input_size: int, keep_full: bool, zoom: float = 0.0, seed: int = 0) -> dict[str, Any]:
    paths = dataset.frame_paths(i)
    image = read_rgb_png(paths["color"], f"{dataset.NAME} colour")
    labels = read_label_png(paths["mask"], f"{dataset.NAME} mask")
    side = choose_hand(labels, dataset.raw_annotation(i)["uv_vis"][:, 2] == 1)
    evaluated = hand_mask(labels, side)
    small, classes = shrink_frame(image, labels, input_size)
    box = mask_box(evaluated) if evaluated.any() else None
    window = None
    if zoom > 0 and box is not None:
        window = training_window(image, labels, box, zoom, input_size, np.random.default_rng([seed, i]))
    return {
        "image": small, "classes": classes, "side": int(side == "right"), "box": box,
        "hand_pixels": np.isin(LABEL_TO_CLASS[labels], (1, 2)) if keep_full else None,
        "full_image": image.transpose(2, 0, 1) if keep_full else None, "window": window,
    }


_WORKER: dict[str, Any] = {}
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _init_worker(dataset_name: str, root: str, split: str) -> None:
    from crossmodal.registry import DATASETS

    _WORKER["dataset"] = DATASETS.get(dataset_name)(root, split)


def _read_in_worker(args: tuple[int, int, bool, float, int]) -> dict[str, Any]:
    return _read(_WORKER["dataset"], *args)


def load_frames(dataset_name: str, root: str | Path, split: str, input_size: int, limit: int = 0,
                keep_full: bool = False, workers: int | None = None, progress: bool = True, zoom: float = 0.0,
                seed: int = 0) -> FinderFrames:
    """The first ``limit`` frames (0: all) of a split whose evaluated hand has mask pixels; the reader's
    errors (missing folder, corrupt PNG) are its one-line DataErrors naming the file. ``keep_full``
    keeps the full-resolution images and hand pixels; ``zoom`` > 0 adds a training window around
    each hand (drawn from ``seed`` and the frame's index, so a run's windows are fixed)."""
    import multiprocessing as mp
    import os

    from tqdm.auto import tqdm

    from crossmodal.registry import DATASETS

    dataset = DATASETS.get(dataset_name, key="data.dataset")(root, split)
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    jobs = [(i, input_size, keep_full, zoom, seed) for i in range(count)]
    workers = min(workers or os.cpu_count() or 1, 4)
    bar = dict(total=count, desc=f"finder data: {split}", unit="frame", disable=not progress)
    if workers > 1 and count >= 64:
        # Spawned workers with one BLAS thread each: forked ones inherit a multi-threaded BLAS whose
        # threads spin against each other (measured: 10x the CPU time on 2 cores).
        saved = {k: os.environ.get(k) for k in SINGLE_THREAD}
        os.environ.update(SINGLE_THREAD)
        try:
            pool = mp.get_context("spawn").Pool(workers, _init_worker, (dataset_name, str(root), split))
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        with pool:
            rows = list(tqdm(pool.imap(_read_in_worker, jobs, chunksize=16), **bar))
    else:
        rows = [_read(dataset, *job) for job in tqdm(jobs, **bar)]
    kept = [i for i, row in enumerate(rows) if row["box"] is not None]
    return FinderFrames(
        images=torch.from_numpy(np.stack([rows[i]["image"] for i in kept])),
        classes=torch.from_numpy(np.stack([rows[i]["classes"] for i in kept])),
        side=torch.tensor([rows[i]["side"] for i in kept]),
        box=torch.from_numpy(np.stack([rows[i]["box"] for i in kept])).float(),
        hand_pixels=torch.from_numpy(np.stack([rows[i]["hand_pixels"] for i in kept])) if keep_full else None,
        index=torch.tensor(kept),
        full_images=torch.from_numpy(np.stack([rows[i]["full_image"] for i in kept])) if keep_full else None,
        windows=torch.from_numpy(np.stack([rows[i]["window"][0] for i in kept])) if zoom > 0 else None,
        window_classes=torch.from_numpy(np.stack([rows[i]["window"][1] for i in kept])) if zoom > 0 else None,
    )
