"""A trained finder for inference, and where ``predict`` looks for one.

Order: ``--finder PATH``; else a finder bundled in the pose model's file (``export --format
safetensors --finder``); else the latest finder run (``runs/latest-finder``, beside the pose
run's folder or under ./runs). None of them: a one-line error naming ``make finder``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.errors import ConfigError
from crossmodal.finder.locate import Located, locate_hand
from crossmodal.finder.resize import finder_input
from crossmodal.finder.zoom import look_twice

LATEST = "latest-finder"
MAKE_ONE = "train one with `make finder` (python -m crossmodal finder)"


@dataclass
class FoundHand:
    """One hand in an image: pixel-edge box (u0, v0, u1, v1), side, and the evidence."""

    box: np.ndarray
    side: str
    right_probability: float  # share of the region's hand probability that says "right"
    score: float  # hand probability at the seed
    pixels: np.ndarray  # (H, W) bool: the hand's pixels
    regions: int  # separate hand regions seen in the image (a second hand is left out)


class HandFinder:
    """A finder network in eval mode with its run config (a plain dict) and where it came from."""

    def __init__(self, net: torch.nn.Module, config: dict[str, Any], source: str) -> None:
        from crossmodal.finder.flip import FlipAveraged

        self.net = net.eval()
        self.config = config
        self.source = source
        # What locates the hand: the network, or with finder.flip_average its average with the mirror image.
        self.logits_of = FlipAveraged(self.net).eval() if self.flip_average else self.net

    @property
    def flip_average(self) -> bool:
        """Whether the finder's probabilities are averaged with the mirror image's (a finder's config
        without the key, from before the option, does not)."""
        return bool(self.config["finder"].get("flip_average", False))

    @property
    def input_size(self) -> int:
        return int(self.config["finder"]["input_size"])

    @property
    def zoom(self) -> float:
        """The second look's window over the first box's longer side; 0: one look (finders trained before it)."""
        return float(self.config["finder"].get("zoom") or 0.0)

    def locate(self, images: torch.Tensor, small: torch.Tensor) -> Located:
        """``locate_hand`` on (B, 3, h, w) working-size images ``small`` and, with ``zoom``, the
        second look at the full-resolution ``images`` (B, 3, H, W), both in [0, 1]."""
        finder = self.config["finder"]
        with torch.no_grad():
            located = locate_hand(self.logits_of(small), tuple(images.shape[-2:]))
            if self.zoom > 0:
                located = look_twice(self.logits_of, images, located, self.zoom, self.input_size, finder["min_score"],
                                     finder["min_pixels"])
        return located

    def find(self, image: np.ndarray) -> FoundHand | None:
        """The hand in an (H, W, 3) uint8 image, or None when no pixel is confidently a hand."""
        from scipy import ndimage

        full = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255.0)
        located = self.locate(full, finder_input(image, self.input_size))
        finder = self.config["finder"]
        if not bool(located.found(finder["min_score"], finder["min_pixels"])[0]) or not located.hand[0].any():
            return None
        right = float(located.right[0])
        _, regions = ndimage.label(located.any_hand[0].numpy(), structure=np.ones((3, 3)))
        return FoundHand(located.box[0].double().numpy(), "right" if right > 0.5 else "left", right,
                         float(located.score[0]), located.hand[0].numpy(), int(regions))


def with_flip_average(finder: HandFinder, on: bool) -> HandFinder:
    """``finder`` locating with (``on``) or without its average with the mirror image, whatever its
    config said: the evaluation tools' switch for ``finder.flip_average``."""
    config = {**finder.config, "finder": {**finder.config["finder"], "flip_average": bool(on)}}
    return HandFinder(finder.net, config, finder.source)


def finder_from_state(config: dict[str, Any], state: dict[str, Any], source: str) -> HandFinder:
    from crossmodal.registry import FINDERS

    finder = config["finder"]
    net = FINDERS.build(finder["name"], key="finder.name", **dict(finder.get("options") or {}))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{source}: its weights do not fit the finder its config describes "
                          f"({' '.join(str(exc).split())[:200]})") from None
    return HandFinder(net, config, source)


def load_finder(path: str | Path, option: str = "--finder") -> HandFinder:
    """A finder run's checkpoint (Lightning .ckpt or safetensors); a pose model is a one-line error."""
    from crossmodal.checkpoints import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option} {path}: no such file; {MAKE_ONE}")
    config, ckpt = read_checkpoint(path)
    if "finder" in ckpt:  # a pose model with a bundled finder
        bundle = ckpt["finder"]
        return finder_from_state(bundle["config"], bundle["state_dict"], f"{path} (bundled finder)")
    if "finder" not in config:
        raise ConfigError(f"{option} {path} is a pose model, not a hand finder; {MAKE_ONE}")
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return finder_from_state(config, state, str(path))


def latest_finder_checkpoint(pose_checkpoint: str | Path | None) -> Path | None:
    """``<runs>/latest-finder/checkpoints/best.ckpt`` beside the pose run, else under ./runs."""
    folders = []
    if pose_checkpoint is not None and Path(pose_checkpoint).resolve().parent.name == "checkpoints":
        folders.append(Path(pose_checkpoint).resolve().parent.parent.parent)
    folders.append(Path("runs"))
    for folder in folders:
        candidate = folder / LATEST / "checkpoints" / "best.ckpt"
        if candidate.is_file():
            return candidate
    return None


def resolve_finder(finder_path: str | Path | None, bundled: dict[str, Any] | None, pose_checkpoint: str | Path) -> HandFinder:
    """The finder predict uses when no --mask or --bbox is given (order in the module docstring)."""
    if finder_path is not None:
        return load_finder(finder_path)
    if bundled is not None:
        return finder_from_state(bundled["config"], bundled["state_dict"], f"{pose_checkpoint} (bundled finder)")
    latest = latest_finder_checkpoint(pose_checkpoint)
    if latest is None:
        raise ConfigError(f"no hand finder: {pose_checkpoint} holds none, --finder was not given and there is no "
                          f"runs/{LATEST}; {MAKE_ONE}, or give --mask or --bbox")
    return load_finder(latest, "latest finder run")
