"""Model files read without running code: Lightning checkpoints and shared safetensors files.

A Lightning ``.ckpt`` is a pickle, and a plain ``torch.load`` runs whatever a crafted one
names. It is read with ``weights_only=True``: torch's restricted unpickler, which admits
tensors, containers, numbers and strings, all a crossmodal checkpoint holds. The argument is
explicit although torch >= 2.6 defaults to it, because ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
in the environment turns the default (and only the default) off.

``export --format safetensors`` writes a file with no pickle at all: the module's state dict
as tensors and the resolved config as JSON in the header, the form to share a model in.
``read_checkpoint`` reads either into (stored config, checkpoint).
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from crossmodal.errors import ConfigError

#: safetensors metadata key holding the resolved config as JSON.
CONFIG_KEY = "crossmodal.config"
#: Tensor-name prefix of a hand finder's weights in a shared safetensors model (export --finder).
FINDER_PREFIX = "finder."


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint; a refused global or an unreadable file is
    a one-line ConfigError naming the file."""
    import torch

    try:
        with warnings.catch_warnings():
            # torch warns about a foreign pickle's protocol before refusing it: the error says enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        refused = re.search(r"GLOBAL (\S+)", message)
        if refused:
            raise ConfigError(
                f"{path}: refused: it holds {refused.group(1)}, which is not a tensor, container, number or "
                "string (loading it could run code); only weights-only checkpoints are read"
            ) from None
        # torch's message is paragraphs of advice around one line saying what it met.
        reason = next((line for line in message.split("WeightsUnpickler error:")[-1].splitlines() if line.strip()), "")
        raise ConfigError(f"{path}: not a readable checkpoint ({_one_line(reason) or 'unpickling failed'})") from None
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a foreign format, ...: "not a checkpoint"
        raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_one_line(str(exc))})") from None


def is_safetensors(path: str | Path) -> bool:
    """By name, or by content: a safetensors file starts with an 8-byte header length and '{'."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as f:
        return f.read(9)[8:9] == b"{"


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, state dict) of a file written by :func:`write_safetensors`; anything else is a
    one-line ConfigError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors' own error types vary by version
        raise ConfigError(f"{path}: not a readable safetensors file ({_one_line(str(exc)) or type(exc).__name__})") from None
    if CONFIG_KEY not in metadata:
        raise ConfigError(f"{path}: a safetensors file without {CONFIG_KEY!r} metadata; "
                          "expected one written by `python -m crossmodal export --format safetensors`")
    try:
        config = json.loads(metadata[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: its {CONFIG_KEY!r} metadata is not JSON ({_one_line(str(exc))})") from None
    return config, state


def write_safetensors(path: Path, config: dict[str, Any], state: dict[str, Any]) -> None:
    """The state dict and config in one pickle-free file, written atomically."""
    from safetensors.torch import save_file

    from crossmodal.io import atomic_path

    # clone(): safetensors refuses tensors that share storage or are not contiguous.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", CONFIG_KEY: json.dumps(config)})


def with_side_temperature(config: dict[str, Any], temperature: float) -> dict[str, Any]:
    """A shared model's config with its side temperature (``crossmodal.side_weight``) beside it, under
    the checkpoint's own key; :func:`read_checkpoint` moves it back out of the config."""
    from crossmodal.side_weight import CHECKPOINT_KEY

    return {**config, CHECKPOINT_KEY: float(temperature)} if temperature > 0 else config


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stored config, whole checkpoint) of a Lightning checkpoint or a shared safetensors file,
    read once and without running anything in it; a missing,
    foreign or refused file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        config, state = read_safetensors(path)
        ckpt: Any = {"state_dict": {k: v for k, v in state.items() if not k.startswith(FINDER_PREFIX)}}
        from crossmodal.side_weight import CHECKPOINT_KEY

        if CHECKPOINT_KEY in config:
            ckpt[CHECKPOINT_KEY] = float(config.pop(CHECKPOINT_KEY))
        if "finder" in config and "model" in config:  # a pose model shared with its hand finder
            finder_state = {k.removeprefix(FINDER_PREFIX): v for k, v in state.items() if k.startswith(FINDER_PREFIX)}
            ckpt["finder"] = {"config": config.pop("finder"), "state_dict": finder_state}
    else:
        ckpt = load_weights_only(path)
        try:
            config = ckpt["hyper_parameters"]["config"]
        except (KeyError, TypeError, IndexError):
            raise ConfigError(f"{path}: not a crossmodal checkpoint (no hyper_parameters.config)") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a crossmodal checkpoint (its config is of type {type(config).__name__}, expected a mapping)")
    return config, ckpt


def load_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The resolved config stored in a checkpoint; a missing or foreign file is a one-line error."""
    return read_checkpoint(path)[0]
