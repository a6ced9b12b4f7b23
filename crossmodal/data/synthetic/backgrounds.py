"""Random backgrounds: gradients, smooth noise textures, stripes, and clutter shapes.

Backgrounds only need to stop a network from finding the hand by colour or
contrast alone, so they mix smooth and busy content, skin-like and unrelated
colours, and shapes with hard edges at every scale. Everything is drawn as 8-bit
images with Pillow's C routines: a background costs about a millisecond.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from crossmodal.data.synthetic.render import IMAGE_SIZE


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _two_colours(rng: np.random.Generator, level: np.ndarray) -> Image.Image:
    """Map a (size, size) float map in [0, 1] onto a ramp between two random colours."""
    grey = Image.fromarray(np.clip(level * 255.0, 0, 255).astype(np.uint8), "L")
    return ImageOps.colorize(grey, _colour(rng), _colour(rng))


def _gradient(rng: np.random.Generator, size: int) -> Image.Image:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    axis = np.arange(size, dtype=np.float32) / (size - 1) - 0.5
    return _two_colours(rng, np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None] + 0.5)


def _noise_texture(rng: np.random.Generator, size: int) -> Image.Image:
    """Value noise: a coarse random grid upsampled smoothly, at a random feature size."""
    cells = int(rng.integers(3, 40))
    grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    if rng.uniform() < 0.5:  # low saturation, like walls and furniture
        grey = grid.mean(axis=2, keepdims=True) * rng.uniform(0.6, 1.2, size=3)
        grid = np.clip(grey, 0, 255).astype(np.uint8)
    return Image.fromarray(grid, "RGB").resize((size, size), Image.BICUBIC)


def _stripes(rng: np.random.Generator, size: int) -> Image.Image:
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(6.0, 80.0)
    x = np.arange(size, dtype=np.float32) * np.float32(2.0 * np.pi / period)
    wave = 0.5 + 0.5 * np.sin(np.cos(angle) * x[None, :] + np.sin(angle) * x[:, None])
    if rng.uniform() < 0.5:
        wave = (wave > 0.5).astype(np.float32)  # hard-edged stripes
    return _two_colours(rng, wave)


def _clutter(rng: np.random.Generator, img: Image.Image, count: int) -> None:
    draw = ImageDraw.Draw(img)
    size = img.size[0]
    for _ in range(count):
        kind = rng.integers(0, 4)
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.03, 0.45, size=2) * size
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        fill = _colour(rng)
        if kind == 0:
            draw.rectangle(box, fill=fill)
        elif kind == 1:
            draw.ellipse(box, fill=fill)
        elif kind == 2:  # a star-shaped polygon around the box centre
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, size=n))
            radius = rng.uniform(0.3, 1.0, size=n)[:, None] * np.array([w, h]) / 2
            pts = np.array([x0 + w / 2, y0 + h / 2]) + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
            draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
        else:
            draw.line(box, fill=fill, width=int(rng.integers(1, 12)))


_LAYERS = (_gradient, _noise_texture, _stripes)


def random_background(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 RGB background drawn entirely from ``rng``."""
    img = _LAYERS[int(rng.integers(0, 3))](rng, size)
    if rng.uniform() < 0.4:  # blend a second layer for richer textures
        img = Image.blend(img, _LAYERS[int(rng.integers(0, 3))](rng, size), float(rng.uniform(0.2, 0.6)))
    _clutter(rng, img, int(rng.integers(0, 10)))
    return np.array(img)
