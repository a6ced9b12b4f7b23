"""A fingerprint of a synthetic split, and a check that another render matches it.

The seed-0 evaluation split is the fixed benchmark every recorded result was measured on. A
byte digest of its frames cannot serve as the check: the same code and library versions render
a few bits differently on another processor, so a digest fails there while the benchmark is
unchanged. The fingerprint keeps what decides the benchmark, and compares it with tolerances:

- labels (``xyz``, ``uv_vis``, ``K``, side): the arrays themselves; joints within
  ``XYZ_TOL_M``, 2D keypoints within ``UV_TOL_PX``, camera within ``K_TOL``, side and
  visibility exact, except at most ``MAX_VISIBILITY_FLIPS`` flags over the split;
- images, per frame: the mask itself (it compresses to a few hundred bytes), the depth map's
  hit count and sum, and the colour's 4x4 block means. They may differ by ``PIXELS_TOL``
  pixels a frame, a few times what a last-bit change in the geometry moves, and no more.

The tolerances were measured, not guessed: re-rendering the whole split with every mesh vertex
moved by one float32 step (what another processor's rounding can do to the ray casting) moved at
at most 4 edge pixels a frame. The allowance is a few times that, and far below any planted change
(a moved joint, a shifted camera, a different mask or pose sampler), which
``tests/test_benchmark_split.py`` plants and sees fail. ``docs/benchmark.md`` has the figures.

Re-record the reference only when the benchmark is meant to change (every table then needs
re-running): ``python -m crossmodal.data.synthetic.fingerprint tests/data/benchmark_split.npz``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from crossmodal.data.synthetic.render import HandRaycaster
from crossmodal.data.synthetic.scene import SynthFrame, render_frame

GRID = 4  # colour block means on a GRID x GRID grid

#: Label tolerances: 1 micrometre and a thousandth of a pixel are a thousand times below the
#: millimetre EPE and pixel errors any result reports, and far above float32 rounding.
XYZ_TOL_M = 1e-6
UV_TOL_PX = 1e-3
K_TOL = 1e-4
MAX_VISIBILITY_FLIPS = 2
#: Image pixels that may differ in a frame: one float32 step on every vertex changed at most 1
#: mask pixel, 1 depth hit and 4 colour pixels a frame over the split (docs/benchmark.md).
PIXELS_TOL = 8


def frame_fingerprint(frame: SynthFrame) -> dict[str, np.ndarray]:
    """The per-frame values the check compares."""
    h, w = frame.mask.shape
    blocks = frame.color.astype(np.float64).reshape(GRID, h // GRID, GRID, w // GRID, 3).mean(axis=(1, 3))
    hit = frame.depth_m > 0
    return {
        "xyz": frame.xyz.astype(np.float32),
        "uv_vis": frame.uv_vis.astype(np.float32),
        "K": frame.K.astype(np.float32),
        "side": np.array(frame.hand_side),
        "mask": frame.mask.astype(np.uint8),
        "depth_count": np.array(int(hit.sum())),
        "depth_sum": np.array(float(frame.depth_m.astype(np.float64).sum())),
        "depth_max": np.array(float(frame.depth_m.max())),
        "color_block": blocks.astype(np.float32),
    }


class OneStepRaycaster(HandRaycaster):
    """The hand mesh with each float32 vertex coordinate moved one step up or down at random.

    What another processor's rounding can do to the ray casting (Embree computes each hit's
    distance and barycentrics with an approximate reciprocal whose last bits are the vendor's),
    used to measure the tolerances. Put it in place of ``scene.HandRaycaster`` to render with it.
    """

    def __init__(self, mesh) -> None:
        rng = np.random.default_rng(len(mesh.vertices))
        v = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
        up = rng.integers(0, 2, size=v.shape).astype(bool)
        moved = np.where(up, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf)))
        super().__init__(dataclasses.replace(mesh, vertices=moved.astype(np.float64)))


def split_fingerprint(
    count: int,
    seed: int = 0,
    split: str = "evaluation",
    render: Callable[[int, str, int], SynthFrame] = render_frame,
) -> dict[str, np.ndarray]:
    """Fingerprints of frames 0..count-1 of a split, stacked along a first axis."""
    frames = [frame_fingerprint(render(seed, split, i)) for i in range(count)]
    return {key: np.stack([f[key] for f in frames]) for key in frames[0]}


def compare(reference: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> list[str]:
    """One line per key that differs beyond its tolerance, naming the frames; [] when they match.

    ``current`` may hold fewer frames than ``reference`` (a quick check of the first ones).
    """
    n = len(current["xyz"])
    if n > len(reference["xyz"]):
        return [f"{n} frames given, the reference holds {len(reference['xyz'])}"]
    ref = {key: np.asarray(value)[:n] for key, value in reference.items()}
    problems: list[str] = []

    def report(key: str, per_frame: np.ndarray, tol, unit: str) -> None:
        tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), per_frame.shape)
        bad = np.flatnonzero(per_frame > tol)
        if len(bad):
            worst = int(bad[np.argmax(per_frame[bad] / tol[bad])])
            problems.append(f"{key}: {len(bad)} of {n} frames differ beyond the tolerance (largest "
                            f"{per_frame[worst]:.3g} {unit} at frame {worst}, tolerance {tol[worst]:.3g}; "
                            f"frames {_few(bad)})")

    def largest(key: str) -> np.ndarray:
        diff = np.abs(current[key].astype(np.float64) - ref[key].astype(np.float64))
        return diff.reshape(n, -1).max(axis=1)

    side = np.flatnonzero(current["side"] != ref["side"])
    if len(side):
        problems.append(f"side: {len(side)} of {n} frames have the other hand (frames {_few(side)})")
    report("xyz", largest("xyz"), XYZ_TOL_M, "m")
    uv = np.abs(current["uv_vis"][..., :2].astype(np.float64) - ref["uv_vis"][..., :2]).reshape(n, -1).max(axis=1)
    report("uv", uv, UV_TOL_PX, "px")
    report("K", largest("K"), K_TOL, "px")
    flips = (current["uv_vis"][..., 2] != ref["uv_vis"][..., 2]).sum(axis=1)
    if flips.sum() > MAX_VISIBILITY_FLIPS:
        problems.append(f"visibility: {int(flips.sum())} joint flags differ (at most {MAX_VISIBILITY_FLIPS} "
                        f"may), in frames {_few(np.flatnonzero(flips))}")
    mask = (current["mask"] != ref["mask"]).reshape(n, -1).sum(axis=1)
    report("mask", mask.astype(np.float64), PIXELS_TOL, "px")
    report("depth_count", largest("depth_count"), PIXELS_TOL, "px")
    # Each depth hit gained or lost moves the sum by at most the frame's largest depth; the rest of
    # the allowance is float32 rounding over the hand's ~10^4 hits.
    depth_tol = PIXELS_TOL * np.maximum(ref["depth_max"], current["depth_max"]) + 1e-2
    report("depth_sum", largest("depth_sum"), depth_tol, "m")
    # A block mean moves by at most 255 grey levels over the block's pixels per differing pixel.
    block_pixels = (current["mask"].shape[1] // GRID) * (current["mask"].shape[2] // GRID)
    report("color_block", largest("color_block"), PIXELS_TOL * 255.0 / block_pixels, "grey levels")
    return problems


def differences(reference: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> dict[str, float]:
    """The largest difference of each key over all frames (0 where identical; for the mask, pixels)."""
    n = len(current["xyz"])
    out = {}
    for key, value in current.items():
        if key == "side":
            out[key] = float((value != np.asarray(reference[key])[:n]).sum())
        elif key == "mask":  # pixels, in the frame with the most
            out[key] = float((value != np.asarray(reference[key])[:n]).reshape(n, -1).sum(axis=1).max())
        else:
            diff = np.abs(value.astype(np.float64) - np.asarray(reference[key])[:n].astype(np.float64))
            out[key] = float(diff.max()) if diff.size else 0.0
    return out


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _few(indices: Iterable[int], shown: int = 8) -> str:
    indices = [int(i) for i in indices]
    more = f", ... ({len(indices)} in all)" if len(indices) > shown else ""
    return ", ".join(map(str, indices[:shown])) + more


def main(argv: Optional[list[str]] = None) -> None:
    """Write the fingerprint of the seed-0 evaluation split (400 frames) to the path given."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m crossmodal.data.synthetic.fingerprint OUT.npz")
    out = Path(argv[0])
    fingerprint = split_fingerprint(400)
    tmp = out.with_name(out.name + ".part.npz")
    np.savez_compressed(tmp, **fingerprint)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
