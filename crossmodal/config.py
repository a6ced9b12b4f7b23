"""Typed configuration: dataclasses are the schema, OmegaConf merges YAML and overrides.

    cfg = load_config("experiments/table1/s4.yaml", ["data.batch_size=16", "seed=1"])

Every field documents itself with a comment. An unknown key, a wrong type or an
unknown registry name raises ``ConfigError`` with a single line that names the key
and the valid choices. ``save_config`` writes the resolved config beside every output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from crossmodal.errors import ConfigError


@dataclass
class SynthConfig:
    # Procedural hands written in RHD's format (python -m crossmodal synth).
    train: int = 2000  # frames in training/
    test: int = 400  # frames in evaluation/
    seed: int = 0  # frame i depends only on (seed, split, i)


@dataclass
class PreprocessConfig:
    # One pass from raw frames to the HDF5 cache (DESIGN.md section 3). Changing any
    # field changes the cache hash, so a stale cache is detected, never silently reused.
    crop_size: int = 64  # side of the square RGB crop fed to the encoder (256 in the paper)
    crop_margin: float = 1.4  # crop side = margin * longest side of the hand-mask box
    view_correction: bool = True  # rotate the virtual camera onto the hand (paper Fig. 5)
    pool_size: int = 1024  # farthest-point-sampled cloud points kept per frame
    root_joint: int = 0  # pose and cloud are expressed relative to this joint
    outlier_max_dist: float = 2.5  # drop cloud points farther than this * bone scale from the root joint's depth
    heatmap_size: int = 64  # side of the 2D heatmaps made on the fly from 2D keypoints
    heatmap_sigma: float = 2.0  # Gaussian sigma of each heatmap, in heatmap pixels


@dataclass
class AugmentConfig:
    # Applied on batches (GPU-friendly), consistently to image, 2D keypoints, 3D pose, cloud.
    enabled: bool = True
    scale_min: float = 1.0  # zoom factor range
    scale_max: float = 1.2
    translate_px: float = 20.0  # max shift in pixels at a 256 px crop (scaled with crop size)
    rotate: float = math.pi  # max in-plane rotation about the view axis, radians
    hue: float = 0.1  # max hue shift, fraction of a full turn


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a registered dataset: synthetic | rhd | stb
    root: str = "data/synthetic"  # folder holding the dataset (for rhd: RHD_published_v2)
    cache_dir: str = "data/cache"  # where the HDF5 caches are written
    val_fraction: float = 0.1  # last part of the training split held out for validation
    num_points: int = 256  # cloud points drawn from each frame's pool per step
    labeled_fraction: float = 1.0  # first m of the training set keeps 3D pose and 2D labels
    drop_unlabeled: bool = False  # labelled-only baseline: drop the unlabelled frames instead
    batch_size: int = 32
    num_workers: int = 2  # DataLoader workers; each opens the HDF5 file lazily
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class Config:
    name: str = "run"  # run folder name under out_dir
    out_dir: str = "runs"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)


# --------------------------------------------------------------------------- loading

def _node_keys(cfg: Any, dotted: str) -> list[str]:
    """Valid keys of the config node that holds ``dotted`` (for error messages)."""
    from omegaconf import OmegaConf

    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    try:
        return sorted(node.keys())
    except AttributeError:
        return []


def _one_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _merge(base: Any, other: Any, source: str) -> Any:
    """Merge ``other`` into the typed ``base``; translate OmegaConf errors to ConfigError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as exc:
        key = getattr(exc, "full_key", None) or "?"
        choices = ", ".join(_node_keys(base, key))
        raise ConfigError(f"{source}: unknown config key {key!r}; valid keys here: {choices}") from None
    except ValidationError as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: config key {key!r}: {_one_line(exc)}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: config key {key!r}: {_one_line(exc)}") from None


def parse_overrides(overrides: list[str]) -> Any:
    """``["a.b=1", "c=x"]`` -> an OmegaConf node; a malformed item is a one-line error."""
    from omegaconf import OmegaConf

    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command-line override {item!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except Exception as exc:  # grammar errors from OmegaConf's parser
        raise ConfigError(f"command-line overrides {overrides}: {_one_line(exc)}") from None


def validate(cfg: Any) -> None:
    """Checks that the type system cannot express: registry names and value ranges."""
    from crossmodal.registry import DATASETS

    DATASETS.get(cfg.data.dataset, key="data.dataset")
    if not 0.0 < cfg.data.labeled_fraction <= 1.0:
        raise ConfigError(f"data.labeled_fraction must be in (0, 1], got {cfg.data.labeled_fraction}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    for key in ("data.num_points", "data.batch_size", "data.preprocess.crop_size", "data.preprocess.pool_size"):
        from omegaconf import OmegaConf

        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {OmegaConf.select(cfg, key)}")
    if cfg.data.num_points > cfg.data.preprocess.pool_size:
        raise ConfigError(
            f"data.num_points ({cfg.data.num_points}) cannot exceed data.preprocess.pool_size ({cfg.data.preprocess.pool_size})"
        )


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None, schema: type = Config) -> Any:
    """Schema defaults <- YAML file(s) <- ``key=value`` overrides, validated.

    A YAML file may name others under ``defaults: [base.yaml, ...]`` (paths relative to it),
    merged in order before the file itself: the experiment configs share a base this way.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema)
    if path is not None:
        for layer_path, layer in _yaml_layers(path):
            cfg = _merge(cfg, layer, str(layer_path))
    if overrides:
        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    validate(cfg)
    return cfg


def _yaml_layers(path: str, _seen: tuple = ()) -> list:
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    if p.resolve() in _seen:
        raise ConfigError(f"{p}: 'defaults' includes itself")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({_one_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level, got {type(raw).__name__}")
    layers = []
    parents = raw.pop("defaults", []) or []
    if not isinstance(parents, list):
        raise ConfigError(f"{p}: 'defaults' must be a list of YAML paths")
    for parent in parents:
        layers += _yaml_layers(str(p.parent / parent), _seen + (p.resolve(),))
    layers.append((p, OmegaConf.create(raw)))
    return layers


def to_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def save_config(cfg: Any, path: Any) -> None:
    """Write the resolved config (atomically) so every output records how it was made."""
    from crossmodal.io import atomic_write_text

    atomic_write_text(path, to_yaml(cfg))


def config_hash(node: Any) -> str:
    """sha256 of a config node's canonical JSON: identical configs, identical hashes."""
    import hashlib
    import json
    from dataclasses import asdict, is_dataclass

    from omegaconf import OmegaConf

    if is_dataclass(node):
        data = asdict(node)
    else:
        data = OmegaConf.to_container(node, resolve=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
