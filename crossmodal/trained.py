"""Trained models from their files: a run's Lightning checkpoint or a shared safetensors model,
read without running anything in them (``crossmodal.checkpoints``), checked against a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from crossmodal.errors import ConfigError

#: Tensor-name prefix of a hand finder's weights in a shared safetensors model (export --finder).
FINDER_PREFIX = "finder."


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stored config, whole checkpoint) of a Lightning checkpoint or a shared safetensors file,
    read once and without running anything in it (``crossmodal.checkpoints``); a missing,
    foreign or refused file is a one-line error."""
    from crossmodal.checkpoints import is_safetensors, load_weights_only, read_safetensors

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    if is_safetensors(path):
        config, state = read_safetensors(path)
        ckpt: Any = {"state_dict": {k: v for k, v in state.items() if not k.startswith(FINDER_PREFIX)}}
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


def without_pretrained_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with every encoder's ``pretrained_path`` cleared: a trained model's weights
    come from its checkpoint, so the ImageNet file that initialised training need not exist."""
    import copy

    config = copy.deepcopy(config)
    for options in (config.get("model", {}).get("encoder_options") or {}).values():
        if isinstance(options, dict) and options.get("pretrained_path"):
            options["pretrained_path"] = None
    return config


def load_trained_module(path: str | Path) -> Any:
    """The CrossmodalModule of a checkpoint with its trained weights; a missing, corrupt or
    foreign file, or weights that do not fit the stored config, is a one-line ConfigError."""
    return load_trained(path)[0]


def load_trained(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(module, the whole checkpoint) read once: :func:`load_trained_module` and what else the file holds."""
    from crossmodal.module import CrossmodalModule

    path = Path(path)
    config, ckpt = read_checkpoint(path)
    if "finder" in config and "model" not in config:
        raise ConfigError(f"{path} is a hand finder, not a pose model; give it with --finder and a pose model with --ckpt")
    stored = without_pretrained_paths(config)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a crossmodal checkpoint (no state_dict)")
    module = CrossmodalModule(stored)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: its weights do not fit the model its config describes ({' '.join(str(exc).split())[:200]})") from None
    return module, ckpt


def check_compatible(ckpt_config: dict[str, Any], cfg: DictConfig, path: str | Path) -> None:
    """A checkpoint from another strategy or model config cannot be loaded: say which key differs."""
    theirs = OmegaConf.create(ckpt_config).model
    ours = cfg.model
    if theirs.strategy != ours.strategy:
        raise ConfigError(f"{path} was trained with strategy {theirs.strategy!r}, not {ours.strategy!r}")
    for key in ("latent_dim", "encoders", "decoders", "encoder_options", "decoder_options", "joint_hidden"):
        a, b = OmegaConf.to_container(theirs)[key], OmegaConf.to_container(ours)[key]
        if a != b:
            raise ConfigError(f"{path} was trained with model.{key}={a}, this config has model.{key}={b}")
    if ckpt_config["data"]["preprocess"]["crop_size"] != cfg.data.preprocess.crop_size:
        raise ConfigError(
            f"{path} was trained with data.preprocess.crop_size={ckpt_config['data']['preprocess']['crop_size']}, "
            f"this config has {cfg.data.preprocess.crop_size}"
        )
