"""Procedural synthetic hands written in RHD's exact on-disk format (docs/design.md section 3).

    from crossmodal.data.synthetic import generate, render_frame
    generate("data/synthetic", n_train=2000, n_test=400, seed=0)   # RHD-format folders
    frame = render_frame(seed=0, split="training", index=7)        # one frame in memory

Modules: ``skeleton`` (kinematic hand, joint limits, pose sampling), ``mesh``
(capsules, palm, forearm), ``render`` (Open3D ray casting, visibility, shading),
``backgrounds``, ``scene`` (one frame), ``writer`` (folders, PNGs, pickle, processes).
"""

from crossmodal.data.synthetic.scene import (
    SPLITS,
    Scene,
    SynthFrame,
    frame_rng,
    render_frame,
    render_scene,
    sample_scene,
)
from crossmodal.data.synthetic.writer import GenerationStats, generate, generate_with_stats

__all__ = [
    "SPLITS",
    "GenerationStats",
    "Scene",
    "SynthFrame",
    "frame_rng",
    "generate",
    "generate_with_stats",
    "render_frame",
    "render_scene",
    "sample_scene",
]
