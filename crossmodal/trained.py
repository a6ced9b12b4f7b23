"""Trained models from their files: the module a checkpoint or shared safetensors model holds,
built from its stored config (read by ``crossmodal.checkpoints``) and checked against a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from crossmodal.checkpoints import read_checkpoint
from crossmodal.errors import ConfigError

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
