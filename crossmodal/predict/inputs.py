"""predict's inputs: images (any Pillow mode, made upright 8-bit RGB), hand masks, --bbox, --K,
folders of images. Every unusable input is an :class:`InputError` whose one line names it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from crossmodal.errors import CrossmodalError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: RHD-style part masks: 0 background, 1 person, 2-17 left hand, 18-33 right hand.
RHD_MAX_LABEL = 33


class InputError(CrossmodalError, ValueError):
    """An image, mask, box or option given to predict is unusable; the message names it."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


T = TypeVar("T")


def _decode(path: Path, option: str, read: Callable[[Any], T]) -> T:
    """``read`` applied to the loaded Pillow image of ``path``; a missing, undecodable or
    decompression-bomb file is a one-line InputError naming ``option`` and the file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"{option} {path}: no such file")
    try:
        with Image.open(path) as opened:
            opened.load()
            return read(opened)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{option} {path}: too large to decode safely ({_one_line(exc)})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{option} {path}: not a readable image ({_one_line(exc)})") from None


def read_image(path: str | Path, option: str = "--image") -> tuple[np.ndarray, list[str]]:
    """(H, W, 3) uint8 RGB and the conversions made, stated; a file Pillow cannot decode is an InputError.

    Grayscale (8 or 16 bit), RGBA, palette and other colour modes are converted to RGB, and a
    photo carrying an EXIF orientation is turned upright, because the model only knows upright
    8-bit RGB crops.
    """
    from PIL import ImageOps

    path = Path(path)
    orientation, im = _decode(path, option, lambda opened: (opened.getexif().get(0x0112, 1), ImageOps.exif_transpose(opened)))
    notes = [f"{path} was rotated upright by its EXIF orientation ({orientation})"] if orientation not in (1, None) else []
    return _to_rgb(im, path, notes), notes


def _to_rgb(im: Any, path: Path, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8, appending what was converted to ``notes``."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(values.max()), 1e-12)
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"{path} is {mode} grayscale; scaled to 8 bits and converted to RGB")
        return np.repeat(grey[..., None], 3, axis=-1)
    what = {
        "L": "grayscale", "1": "a 1-bit (black and white) image", "LA": "grayscale with alpha",
        "RGBA": "RGBA", "RGBa": "RGBA", "P": "a palette image", "PA": "a palette image with alpha",
    }.get(mode, f"in colour mode {mode}")
    dropped = "; alpha dropped," if "A" in mode or (mode == "P" and "transparency" in im.info) else ";"
    notes.append(f"{path} is {what}{dropped} converted to RGB")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def read_hand_mask(path: str | Path, image_shape: tuple[int, ...], side: str | None) -> tuple[np.ndarray, str | None, list[str]]:
    """The hand's pixels from a mask file: ``(mask (H, W) bool, side it shows or None, notes)``.

    Two kinds of masks are understood. An RHD-style part mask (values 0-33 with some hand
    labels 2-33, as RHD and the synthetic data store them) gives the hand of ``side``, or the
    hand with more pixels, and says which side that is. Any other mask is binary: pixels
    above half its maximum are the hand.
    """
    from crossmodal.data.rhd import hand_mask, hand_pixel_counts

    path = Path(path)
    values = _decode(path, "--mask", lambda im: np.asarray(im.convert("RGB") if im.mode in ("P", "PA", "CMYK", "YCbCr") else im))
    if values.ndim == 3:
        values = values[..., :3].max(axis=-1)  # any colour channel marks the hand
    height, width = image_shape[:2]
    if values.shape != (height, width):
        raise InputError(
            f"--mask {path} is {values.shape[1]}x{values.shape[0]} but the image is {width}x{height}; "
            "the mask must have the image's size"
        )
    labels_2_33 = (values >= 2) & (values <= RHD_MAX_LABEL)
    if values.max() <= RHD_MAX_LABEL and labels_2_33.any():
        left, right = hand_pixel_counts(values.astype(np.uint8))
        chosen = side or ("left" if left > right else "right")
        mask = hand_mask(values.astype(np.uint8), chosen)
        how = "--hand" if side else "the hand with more pixels"
        notes = [f"--mask {path} holds RHD part labels; using the {chosen} hand's ({how})"]
        if not mask.any():
            raise InputError(f"--mask {path}: no pixels of the {chosen} hand (labels {'2-17' if chosen == 'left' else '18-33'})")
        return mask, chosen, notes
    mask = values.astype(np.float64) > float(values.max()) / 2.0 if values.max() > 0 else np.zeros(values.shape, bool)
    if not mask.any():
        raise InputError(f"--mask {path} is empty (no hand pixels); give a mask with the hand's pixels set, or --bbox")
    return mask, None, []


def _numbers(text: str, count: int, option: str, form: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option}: expected {count} comma-separated numbers {form}, got {text!r}")
    return values


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` (pixels: left column, top row, width, height) -> a tuple; w, h must be > 0."""
    x, y, w, h = _numbers(text, 4, "--bbox", "x,y,w,h")
    if w <= 0 or h <= 0:
        raise InputError(f"--bbox {text}: width and height must be > 0")
    return x, y, w, h


def parse_intrinsics(text: str) -> np.ndarray:
    """``"fx,fy,cx,cy"`` (pixels) -> the 3x3 K; focal lengths must be > 0."""
    fx, fy, cx, cy = _numbers(text, 4, "--K", "fx,fy,cx,cy")
    if fx <= 0 or fy <= 0:
        raise InputError(f"--K {text}: focal lengths must be > 0")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def assumed_intrinsics(width: int, height: int) -> np.ndarray:
    """The camera assumed without --K: focal length = image width, principal point at the centre."""
    return np.array([[float(width), 0.0, (width - 1) / 2.0], [0.0, float(width), (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def expand_images(paths: Sequence[str | Path], option: str) -> list[Path]:
    """Files as given, folders as their image files sorted by name; nothing found is an error."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise InputError(f"{option} {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif not path.is_file():
            raise InputError(f"{option} {path}: no such file or folder")
        else:
            found.append(path)
    return found
