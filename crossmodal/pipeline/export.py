"""``export --finder``: the finder goes with the pose model.

* safetensors: one pickle-free file holding both (tensors ``finder.*`` and the finder's config
  under the key ``finder``); ``predict --ckpt FILE`` then finds the hand on its own.
* ONNX / TorchScript: the image -> joints graph of ``crossmodal.pipeline.graph`` for images of a
  fixed size, checked against PyTorch like every export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.export import (ExportResult, check_export, check_format, default_path, example_batch, export_onnx,
                               export_torchscript, graph_metadata, inference_graph, reloaded_graph)
from crossmodal.finder.model import load_finder, with_flip_average
from crossmodal.pipeline.graph import ImageToJoints
from crossmodal.predict import load_model


def example_inputs(image_size: tuple[int, int], count: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and predict's default camera (focal = width, principal point at the centre)."""
    height, width = image_size
    images = torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return images, default_K(image_size, count)


def default_K(image_size: tuple[int, int], count: int) -> torch.Tensor:
    height, width = image_size
    K = torch.tensor([[float(width), 0.0, (width - 1) / 2], [0.0, float(width), (height - 1) / 2], [0.0, 0.0, 1.0]])
    return K.expand(count, 3, 3).contiguous()


def _bundle(model: Any, finder: Any, path: Path) -> tuple[float, str]:
    """Write model + finder as safetensors; reload both as a user would and compare."""
    from omegaconf import OmegaConf

    from crossmodal.checkpoints import FINDER_PREFIX, with_side_temperature, write_safetensors

    config = with_side_temperature({**OmegaConf.to_container(model.module.cfg, resolve=True), "finder": finder.config},
                                   model.side_temperature)
    state = {**model.module.state_dict(), **{FINDER_PREFIX + k: v for k, v in finder.net.state_dict().items()}}
    write_safetensors(path, config, state)
    graph, images = inference_graph(model), example_batch(model.crop_size, batch=3, seed=1)
    reloaded, bundled = reloaded_graph(path, graph), load_finder(path)
    whole = torch.rand(2, 3, 96, 120, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pairs = [*zip(graph(images), reloaded(images)), (finder.net(whole), bundled.net(whole))]
    return max(float((a - b).abs().max()) for a, b in pairs), "load_trained_module + load_finder"


def export_with_finder(model: Any, finder_path: str | Path, fmt: str, path: Path, cloud: bool | None,
                       image_size: tuple[int, int], check_images: np.ndarray | None, flip_average: bool | None = None) -> Any:
    finder = load_finder(finder_path)
    if flip_average is not None:
        finder = with_flip_average(finder, flip_average)
    if fmt == "safetensors":
        difference, checker = _bundle(model, finder, path)
        return ExportResult(path, model.crop_size, ("pose",), difference, checker)
    if cloud:
        model.require_cloud("export --cloud")
    graph = ImageToJoints(finder, model, image_size, model.has_cloud if cloud is None else cloud).eval()
    inputs = example_inputs(image_size, count=1)
    if fmt == "onnx":
        metadata = {**graph_metadata(model, ("pose",)), **_metadata(graph, finder)}
        export_onnx(graph, path, inputs, metadata, dynamic_batch=False)
    else:
        export_torchscript(graph, path, inputs)
    images = torch.from_numpy(np.asarray(check_images)).permute(0, 3, 1, 2).float() / 255 if check_images is not None else None
    difference, checker = check_export(graph, path, fmt, images if images is not None else example_inputs(image_size, 3, 1)[0],
                                       default_K(image_size, len(images) if images is not None else 3))
    return ExportResult(path, model.crop_size, graph.outputs, difference, checker)


def _metadata(graph: ImageToJoints, finder: Any) -> dict[str, str]:
    height, width = graph.image_size
    return {
        "crossmodal.input": f"image: float32 (1, 3, {height}, {width}) RGB in [0, 1]; K: float32 (1, 3, 3) intrinsics",
        "crossmodal.outputs": "; ".join(graph.outputs),
        "crossmodal.frame": "pose/cloud: root-relative, divided by bone 12->11, in the image's camera; box: pixel edges",
        "crossmodal.finder": json.dumps({"source": finder.source, **finder.config["finder"]}),
    }


def export_checkpoint_with_finder(ckpt: str | Path, finder: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                                  cloud: bool | None = None, image_size: tuple[int, int] = (320, 320),
                                  check_images: np.ndarray | None = None, flip_average: bool | None = None) -> ExportResult:
    """``python -m crossmodal export --finder``: safetensors bundles the finder with the model (predict
    then needs nothing else); ONNX and TorchScript export the whole image -> joints graph for images
    of ``image_size`` (H, W), checked on ``check_images`` (N, H, W, 3) uint8 when given.
    ``flip_average`` overrides the finder's ``finder.flip_average`` in the graph."""
    check_format(fmt)
    return export_with_finder(load_model(ckpt), finder, fmt, Path(out) if out else default_path(ckpt, fmt), cloud,
                              image_size, check_images, flip_average)
