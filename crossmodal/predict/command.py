"""``python -m crossmodal predict``: every image through the model, outputs in ``<out>/<stem>/``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from crossmodal.data.joints import NUM_JOINTS
from crossmodal.finder.model import resolve_finder
from crossmodal.predict.finding import NoHandFound
from crossmodal.predict.image import NORMALISED_UNITS, predict_image
from crossmodal.predict.inputs import InputError, expand_images, parse_bbox, parse_intrinsics
from crossmodal.predict.model import load_model
from crossmodal.predict.outputs import write_prediction


def _output_folders(images: Sequence[Path], out: Path) -> list[Path]:
    """``<out>/<stem>``, with ``_2``, ``_3`` ... for images of the same stem from different folders."""
    taken: dict[str, int] = {}
    folders = []
    for image in images:
        n = taken[image.stem] = taken.get(image.stem, 0) + 1
        folders.append(out / (image.stem if n == 1 else f"{image.stem}_{n}"))
    return folders


def _side_origin(pred) -> str:
    """Where a side predict chose itself came from, for the image's summary line."""
    if pred.side_fit is not None:
        return " (the model's keypoint fit)"
    return " (finder)" if pred.finder is not None and pred.hand.side_source != "--hand" else ""


def predict_images(
    ckpt: str | Path,
    images: Sequence[str | Path],
    masks: Sequence[str | Path] | None = None,
    bbox: str | None = None,
    intrinsics: str | None = None,
    hand: str | None = None,
    bone_mm: float | None = None,
    cloud: bool | None = None,
    out: str | Path = "predictions",
    finder: str | Path | None = None,
    whole_image: bool = False,
) -> list[Path]:
    """``python -m crossmodal predict``: every image through the model, outputs in ``<out>/<stem>/``.

    ``cloud``: None writes the cloud when the model has a cloud decoder (and says when it has
    not), True requires one, False skips it. Without masks or a box the hand finder locates the
    hand (``finder``, else the one bundled with the model, else the latest finder run), unless
    ``whole_image``. Conversions, assumptions and images without a hand are printed as ``note:``
    lines; returns the output folders written. In a batch, an image that cannot be read (or its
    mask) is reported as an ``error:`` line and skipped, and after the others are written an
    InputError names every one skipped.
    """
    from tqdm.auto import tqdm

    if hand not in (None, "left", "right"):
        raise InputError(f"--hand must be left or right, got {hand!r}")
    files = expand_images(images, "--image")
    mask_files = expand_images(masks, "--mask") if masks else None
    if mask_files is not None and len(mask_files) != len(files):
        raise InputError(f"--mask: {len(mask_files)} masks for {len(files)} images; give one mask per image (same order)")
    box = parse_bbox(bbox) if bbox else None
    K = parse_intrinsics(intrinsics) if intrinsics else None
    if sum(x is not None and x is not False for x in (box, mask_files, whole_image or None)) > 1 or \
            (finder is not None and (mask_files is not None or whole_image)):
        raise InputError("--mask, --bbox and --whole-image each locate the hand, and --finder goes without a mask or "
                         "with --bbox; give one of them")
    model = load_model(ckpt)
    hand_finder = None
    if box is None and mask_files is None and not whole_image:
        hand_finder = resolve_finder(finder, model.finder_bundle, model.checkpoint)
        print(f"note: no --mask or --bbox: the hand finder {hand_finder.source} gives the hand box and side")
    elif box is not None and model.preprocess.orient:
        # A box has no hand pixels to turn the crop by: the finder looks inside it for them.
        hand_finder = resolve_finder(finder, model.finder_bundle, model.checkpoint)
        print(f"note: this model turns its crop by the hand's pixels; the hand finder {hand_finder.source} finds them "
              "(and the side, unless --hand) inside --bbox")
    if cloud:
        model.require_cloud("--cloud")
    elif cloud is None and not model.has_cloud:
        print(f"note: {model.checkpoint} (strategy {model.config.model.strategy!r}) has no cloud decoder; no cloud.ply is written")
    if K is None:
        print("note: no --K given: assuming a pinhole camera with focal length = image width and the principal "
              "point at the image centre (stated in each joints.json)")
    if bone_mm is None:
        print(f"note: joints are {NORMALISED_UNITS}; pass --bone-mm (the hand's middle MCP->PIP bone) for millimetres")
    folders = _output_folders(files, Path(out))
    with_cloud = cloud is not False and model.has_cloud
    progress = tqdm(list(zip(files, folders)), desc="predict", unit="image", disable=len(files) < 2)
    written_folders, failed = [], []
    for i, (image, folder) in enumerate(progress):
        mask = mask_files[i] if mask_files else None
        try:
            pred = predict_image(model, image, mask, box, K, hand, bone_mm, with_cloud, hand_finder)
        except NoHandFound as exc:
            tqdm.write(f"note: {exc}")
            continue
        except InputError as exc:
            if len(files) == 1:
                raise
            # one unreadable image or mismatched mask must not cost the rest of the batch
            tqdm.write(f"error: {exc} (skipped)")
            failed.append(image)
            continue
        for note in pred.notes:
            tqdm.write(f"note: {note}")
        written = write_prediction(pred, model, folder, bone_mm)
        side = pred.hand.side or "side not given"
        tqdm.write(f"{image} -> {folder}/ ({', '.join(written.values())}); {NUM_JOINTS} joints in "
                   f"{pred.units}; {side} hand{', mirrored for the model' if pred.hand.mirror else ''}"
                   f"{_side_origin(pred)}")
        written_folders.append(folder)
    if failed:
        raise InputError(f"{len(failed)} of {len(files)} images skipped (errors above: {', '.join(str(f) for f in failed)}); "
                         f"the other {len(written_folders)} prediction folders are written under {out}")
    return written_folders
