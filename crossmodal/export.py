"""Export the RGB-only inference graph: crop -> (3D pose, point cloud), for use without this package.

    python -m crossmodal export --ckpt PATH [--format onnx|torchscript|safetensors] [--out FILE] [--no-cloud]

The graph is what ``strategy.predict`` computes at test time: the RGB encoder's mean head
(z = mu of q(z|x)) followed by the pose decoder and, when the model has one, the cloud
decoder. Its input ``image`` is a float32 batch (B, 3, S, S) of RGB crops in [0, 1] (S = the
checkpoint's crop size, made as ``crossmodal.predict`` makes them); its outputs are ``pose``
(B, 21, 3) and ``cloud`` (B, P, 3), root-relative, divided by the bone 12 -> 11 and in the
crop's (view-corrected) camera frame. The batch axis is dynamic.

ONNX goes through ``torch.onnx.export`` (the torch.export-based exporter, which needs
``onnxscript``); the file carries that description in its metadata, and the export is
checked against PyTorch with onnxruntime when it is installed. TorchScript is
``torch.jit.trace`` of the same module.

safetensors is the form to share a model in: no graph and no pickle, the whole module's
weights with the resolved config as JSON metadata (``crossmodal.checkpoints``). Every
command that takes ``--ckpt`` reads it; the check reloads it with ``load_trained_module``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from crossmodal.data.joints import JOINT_NAMES
from crossmodal.errors import ConfigError
from crossmodal.predict import InferenceModel, load_model

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
#: onnxruntime vs PyTorch: the largest difference the export check accepts.
TOLERANCE = 1e-4


class RGBInferenceGraph(nn.Module):
    """image (B, 3, S, S) in [0, 1] -> pose (B, 21, 3) [, cloud (B, P, 3)], with z = mu of q(z|x)."""

    def __init__(self, strategy: nn.Module, with_cloud: bool) -> None:
        super().__init__()
        self.encoder = strategy.encoders["image"]
        self.pose_decoder = strategy.decoders["pose"]
        self.cloud_decoder = strategy.decoders["cloud"] if with_cloud else None

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("pose", "cloud") if self.cloud_decoder is not None else ("pose",)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        # Only the mean head: the variance is not needed for inference (and not exported).
        z = self.encoder.mu_head(self.encoder.features(image))
        pose = self.pose_decoder.decode(z)
        if self.cloud_decoder is None:
            return (pose,)
        return pose, self.cloud_decoder.decode(z)


@dataclass
class ExportResult:
    path: Path
    crop_size: int  # the input is (B, 3, crop_size, crop_size)
    outputs: tuple[str, ...]
    max_difference: float | None  # |exported - PyTorch| on a check batch; None when not checked
    checked_with: str | None  # "onnxruntime", "torch.jit.load", "load_trained_module", or None

    @property
    def matches(self) -> bool:
        """Within :data:`TOLERANCE` of PyTorch (or not checked, when onnxruntime is missing)."""
        return self.max_difference is None or self.max_difference <= TOLERANCE


def inference_graph(model: InferenceModel, with_cloud: bool | None = None) -> RGBInferenceGraph:
    """The graph in eval mode; ``with_cloud`` None means "when the model has a cloud decoder"."""
    if with_cloud:
        model.require_cloud("export --cloud")
    graph = RGBInferenceGraph(model.strategy, model.has_cloud if with_cloud is None else with_cloud)
    return graph.eval()


def example_batch(crop_size: int, batch: int = 2, seed: int = 0) -> Tensor:
    """Random RGB crops in [0, 1]: the tracing input and a check input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, crop_size, crop_size, generator=generator)


def graph_metadata(model: InferenceModel, outputs: tuple[str, ...]) -> dict[str, str]:
    """What a user of the exported file must know, stored in the file itself (ONNX metadata)."""
    pre = model.preprocess
    shapes = {"pose": "(B, 21, 3)", "cloud": f"(B, {model.cloud_points}, 3)"}
    return {
        "crossmodal.input": f"image: float32 (B, 3, {pre.crop_size}, {pre.crop_size}) RGB crop in [0, 1]",
        "crossmodal.outputs": "; ".join(f"{name}: float32 {shapes[name]}" for name in outputs),
        "crossmodal.frame": ("root-relative (joint 0), divided by the length of bone 12->11, in the crop camera "
                             + ("(view-corrected: rotate back with R^T)" if pre.view_correction else "(image axes)")),
        "crossmodal.crop": json.dumps({"crop_size": pre.crop_size, "crop_margin": pre.crop_margin,
                                       "view_correction": pre.view_correction}),
        "crossmodal.joint_names": json.dumps(list(JOINT_NAMES)),
        "crossmodal.strategy": str(model.config.model.strategy),
        "crossmodal.trained_on": str(model.config.data.dataset),
        "crossmodal.checkpoint": str(model.checkpoint),
    }


def default_path(ckpt: str | Path, fmt: str) -> Path:
    """Next to the checkpoint: ``best.ckpt`` -> ``best.onnx`` / ``best.torchscript.pt`` / ``best.safetensors``."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.stem + FORMATS[fmt])


def _inputs(example: int | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Tracing inputs: random crops of a crop size, or given tensors (image [, K])."""
    return (example_batch(example),) if isinstance(example, int) else tuple(example)


def export_onnx(graph: nn.Module, path: Path, example: int | tuple[Tensor, ...], metadata: dict[str, str],
                dynamic_batch: bool = True) -> tuple[str, ...]:
    """Write the ONNX file (dynamic batch) atomically; returns the output names. ``example``: the
    crop size of an RGB graph, or the tracing inputs (image [, K])."""
    from crossmodal.io import atomic_path

    try:
        import onnx
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it
    except ImportError as exc:
        raise ConfigError(f"--format onnx needs the {exc.name} package: pip install onnx onnxscript "
                          "(or the package's extra: pip install -e '.[export]')") from None

    inputs = _inputs(example)
    batch = torch.export.Dim("batch", min=1)
    with atomic_path(path, suffix=".onnx") as tmp, _quiet_exporter():
        program = torch.onnx.export(
            graph, inputs, input_names=["image", "K"][: len(inputs)], output_names=list(graph.outputs),
            dynamic_shapes=tuple({0: batch} for _ in inputs) if dynamic_batch else None, dynamo=True, verbose=False,
            external_data=False,
        )
        proto = program.model_proto
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save_model(proto, str(tmp))
    return graph.outputs


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs that torchvision's detection ops are skipped and warns about its own
    internals: nothing about this graph, so both are silenced while it runs."""
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        registration_log.setLevel(level)


def export_torchscript(graph: nn.Module, path: Path, example: int | tuple[Tensor, ...]) -> tuple[str, ...]:
    """Write a traced TorchScript module atomically; returns the output names."""
    from crossmodal.io import atomic_path

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.trace(graph, _inputs(example), check_trace=False)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.jit.save(traced, str(tmp))
    return graph.outputs


def export_safetensors(model: InferenceModel, graph: RGBInferenceGraph, path: Path) -> tuple[str, ...]:
    """Write the whole module's weights and its config; returns the outputs the check compares."""
    from omegaconf import OmegaConf

    from crossmodal.checkpoints import with_side_temperature, write_safetensors

    # module.cfg, not the checkpoint's config: load_trained_module cleared the ImageNet
    # pretrained_path in it, a file on the trainer's machine that the shared model does not need.
    config = OmegaConf.to_container(model.module.cfg, resolve=True)
    write_safetensors(path, with_side_temperature(config, model.side_temperature), model.module.state_dict())
    return graph.outputs


def reloaded_graph(path: Path, graph: RGBInferenceGraph) -> RGBInferenceGraph:
    """The same graph built from a safetensors file by ``load_trained_module``, as a user would load it."""
    from crossmodal.trained import load_trained_module

    return RGBInferenceGraph(load_trained_module(path).strategy, graph.cloud_decoder is not None).eval()


def run_onnx(path: str | Path, images: np.ndarray, K: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run an exported file with onnxruntime on the CPU: output name -> array (``K`` for image -> joints graphs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = {"image": np.asarray(images, dtype=np.float32)}
    if K is not None:
        feeds["K"] = np.asarray(K, dtype=np.float32)
    return dict(zip(names, session.run(names, feeds)))


def _max_difference(reference: tuple[Tensor, ...], exported: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(r.numpy() - e))) for r, e in zip(reference, exported))


def check_export(graph: nn.Module, path: Path, fmt: str, images: int | Tensor,
                 K: Tensor | None = None) -> tuple[float | None, str | None]:
    """The largest |exported - PyTorch| on a batch of another size than the tracing one (``images``:
    a crop size for random crops, or the images themselves; ``K`` for image -> joints graphs)."""
    if isinstance(images, int):
        images = example_batch(images, batch=3, seed=1)
    inputs = (images,) if K is None else (images, K)
    with torch.no_grad():
        reference = graph(*inputs)
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return None, None
        if K is None:
            out = run_onnx(path, images.numpy())
            return _max_difference(reference, [out[name] for name in graph.outputs]), "onnxruntime"
        # The image -> joints graph takes one image at a time (a fixed batch of 1).
        outs = [run_onnx(path, images[i : i + 1].numpy(), K[i : i + 1].numpy()) for i in range(len(images))]
        return _max_difference(reference, [np.concatenate([o[name] for o in outs]) for name in graph.outputs]), "onnxruntime"
    if fmt == "torchscript":
        loaded, checker = torch.jit.load(str(path)), "torch.jit.load"
    else:
        loaded, checker = reloaded_graph(path, graph), "load_trained_module"
    with torch.no_grad():
        return _max_difference(reference, [t.numpy() for t in loaded(*inputs)]), checker


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def export_checkpoint(ckpt: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                      cloud: bool | None = None) -> ExportResult:
    """``python -m crossmodal export``: write the crop -> pose graph and check it against PyTorch
    (with ``--finder``: ``crossmodal.pipeline.export.export_checkpoint_with_finder``)."""
    check_format(fmt)
    model = load_model(ckpt)
    graph = inference_graph(model, cloud)
    path = Path(out) if out else default_path(ckpt, fmt)
    size = model.crop_size
    if fmt == "onnx":
        outputs = export_onnx(graph, path, size, graph_metadata(model, graph.outputs))
    elif fmt == "torchscript":
        outputs = export_torchscript(graph, path, size)
    else:
        outputs = export_safetensors(model, graph, path)
    difference, checker = check_export(graph, path, fmt, size)
    return ExportResult(path, size, outputs, difference, checker)
