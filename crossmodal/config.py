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
    # One pass from raw frames to the HDF5 cache (docs/design.md section 3). Changing any
    # field changes the cache hash, so a stale cache is detected, never silently reused.
    crop_size: int = 64  # side of the square RGB crop fed to the encoder (256 in the paper)
    crop_margin: float = 1.4  # crop side = margin * longest side of the hand-mask box
    view_correction: bool = True  # rotate the virtual camera onto the hand (paper Fig. 5)
    # Then roll it about the view axis so the hand mask's long axis points up (not in the paper;
    # needs view_correction and the hand's pixels, which the mask, the finder or STB's skeleton
    # region give). A from-scratch encoder no longer has to learn every in-plane orientation.
    orient: bool = False
    # Left hands mirrored into right hands (docs/design.md: the protocol knows the side, and hand3d
    # works in one side's frame). predict then mirrors a left hand's image and its prediction back.
    mirror_left: bool = False
    pool_size: int = 1024  # farthest-point-sampled cloud points kept per frame
    root_joint: int = 0  # pose and cloud are expressed relative to this joint
    outlier_max_dist: float = 2.5  # drop cloud points beyond the depth range of the hand joints by more than this * bone scale
    heatmap_size: int = 64  # side of the 2D heatmaps made on the fly from 2D keypoints
    heatmap_sigma: float = 2.0  # Gaussian sigma of each heatmap, in heatmap pixels
    # Added by the preprocessing pipeline (crossmodal.data.preprocess): statistical outlier
    # removal on the hand cloud, and the hand region of mask-less datasets (STB).
    outlier_neighbors: int = 16  # k of the statistical filter: mean distance to the k nearest points
    outlier_std_ratio: float = 2.0  # drop points whose k-NN mean distance exceeds mean + this * std
    hand_radius: float = 0.6  # STB (no mask): hand = depth points within this * bone scale of a bone


@dataclass
class AugmentConfig:
    # Applied on batches (GPU-friendly), consistently to image, 2D keypoints, 3D pose, cloud.
    enabled: bool = True
    scale_min: float = 1.0  # zoom factor range
    scale_max: float = 1.2
    translate_px: float = 20.0  # max shift in pixels at a 256 px crop (scaled with crop size)
    rotate: float = math.pi  # max in-plane rotation about the view axis, radians
    hue: float = 0.1  # max hue shift, fraction of a full turn
    # A hand finder's crop errors to train with instead of the uniform zoom, shift and rotation: a
    # JSON written by experiments/finder_errors.py, whose measured (shift, scale, turn) rows are
    # drawn at random, one a sample, with probability crop_error_rate (else the crop is kept).
    crop_errors: str = ""
    crop_error_rate: float = 1.0
    # Rows turned by more than this many degrees keep their shift and scale but are not turned: an
    # upside-down crop is the upright rule's sign flipped, which a model learns only at the
    # canonical hand's expense (experiments/results/whole_image.md).
    crop_error_max_turn: float = 180.0


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a registered dataset: synthetic | rhd | stb
    root: str = "data/synthetic"  # folder holding the dataset (for rhd: RHD_published_v2)
    cache_dir: str = "data/cache"  # where the HDF5 caches are written
    val_fraction: float = 0.1  # last part of the training split held out for validation
    num_points: int = 256  # cloud points drawn from each frame's pool per step
    labeled_fraction: float = 1.0  # first m of the training set keeps 3D pose and 2D labels
    drop_unlabeled: bool = False  # labelled-only baseline: drop the unlabelled frames instead
    # With drop_unlabeled: cycle the kept frames so an epoch has as many batches as the full
    # training set, i.e. the baseline gets as many steps as the weakly supervised model.
    repeat_to_full: bool = False
    # Weak supervision: 0 draws batches uniformly (the paper's; a batch then holds
    # labeled_fraction * batch_size labelled frames on average). k > 0 makes every training batch
    # k labelled frames (cycled) and batch_size - k unlabelled ones: the pose gradient of a step
    # no longer shrinks with the labelled fraction.
    labeled_per_batch: int = 0
    # The unlabelled training frames keep their 2D keypoints (``uv_only``): they train the keypoint
    # stage, the heatmap decoder and the projection2d pose loss; their 3D pose stays hidden.
    unlabeled_2d: bool = False
    batch_size: int = 32
    num_workers: int = 2  # DataLoader workers; each opens the HDF5 file lazily
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    # Which modules are built (by registry name) and how the strategy weighs their losses.
    strategy: str = "poe"  # crossmodal (S1) | extended (S2) | kl_align (S3) | poe (S4)
    latent_dim: int = 64  # size of z, shared by every encoder and decoder
    # Registered module names; empty means the strategy's own default (see alignment/<strategy>.py).
    # The encoder reading "image" is the one used at inference.
    encoders: list[str] = field(default_factory=list)
    decoders: list[str] = field(default_factory=list)
    # Constructor options per registered module name, e.g. {cloud_respel: {widths: [32, 64]}}.
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    joint_hidden: int = 512  # kl_align: width of the layer fusing RGB and cloud features
    lambda_heat: float = 0.01  # weight of the heatmap term in L_recon (paper Eq. 11)
    lambda_cloud: float = 1.0  # weight of Chamfer + EMD in L_recon
    beta_start: float = 1e-5  # KL weight at step 0 ...
    beta_end: float = 1e-3  # ... annealed log-linearly to this value
    beta_anneal_fraction: float = 0.5  # fraction of the training steps over which beta ramps
    beta_prime: float = 1.0  # kl_align: weight of KL(q(z|x,c) || q(z|x))
    # Registered pose losses (losses/) added to any strategy's loss, on the pose decoded from the
    # RGB posterior's mean of every training frame, e.g. [biomech, projection2d]; their options
    # per name, e.g. {biomech: {joint_angles: 0.1}}.
    pose_losses: list[str] = field(default_factory=list)
    pose_loss_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 1e-4  # Adam learning rate (paper)
    weight_decay: float = 0.0
    lr_factor: float = 0.1  # on a validation plateau the lr is multiplied by this ...
    lr_drops: int = 2  # ... at most this many times (paper: divided by 10 twice)
    lr_patience: int = 3  # validation checks without improvement before a drop
    grad_clip: float = 10.0  # gradient norm clipping; 0 disables
    # "plateau": the paper's schedule (lr_factor on a validation plateau, lr_drops times).
    # "cosine": linear warm-up then cosine decay to 0 over the run's steps, made for a fixed
    # budget (a plateau rarely fires within a few thousand steps).
    schedule: str = "plateau"
    warmup_fraction: float = 0.05  # cosine: fraction of the steps spent warming up from 0


@dataclass
class TrainerConfig:
    # Passed to lightning.Trainer. "auto" picks the GPU(s) when present, else the CPU.
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", a count ("2") or a list ("[0,1]")
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for multi-GPU / multi-node
    precision: str = "auto"  # "auto": bf16/16-mixed on GPU, 32 on CPU; or any Lightning value
    max_epochs: int = 30
    max_steps: int = -1  # > 0 overrides max_epochs
    val_check_interval: float = 1.0  # fraction of an epoch between validations
    log_every_n_steps: int = 10
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    limit_test_batches: float = 1.0
    deterministic: bool = False
    progress: bool = True  # rich progress bar


@dataclass
class Config:
    name: str = ""  # run folder name under out_dir; "" -> <strategy>-<timestamp>
    out_dir: str = "runs"
    seed: int = 0
    profile: str = "auto"  # cpu | cpu-long | gpu | auto (gpu when CUDA is available): presets merged under your YAML
    resume: str = ""  # "" (fresh run), "true" (last checkpoint of runs/<name>) or a checkpoint path
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class FinderNetConfig:
    # The hand finder (python -m crossmodal finder): a registered segmenter over the whole image.
    name: str = "fcn_small"  # a registered finder (finders/)
    options: dict[str, Any] = field(default_factory=dict)  # its constructor options, e.g. {widths: [16, 32, 48]}
    input_size: int = 96  # the image's longer side is resized (area average) to this many pixels
    min_score: float = 0.5  # a hand is found when some pixel's hand probability reaches this
    min_pixels: int = 4  # ... and the hand region holds at least this many working-resolution pixels
    # The second look (crossmodal/finder/zoom.py): a window this many times the first box's longer
    # side, cut from the full-resolution image at input_size and located again; 0: one look. It also
    # trains the network on a window around every training frame's hand (moved and scaled at random).
    # 2: box IoU >= 0.5 in 90% of the evaluation frames against 78%, end to end 34.52 against 40.40 mm
    # on validation, for about twice the training time (docs/predict.md, "Finding the hand").
    zoom: float = 2.0
    # At inference, average the finder's class probabilities with those of the mirrored image (left
    # and right swapped; crossmodal/finder/flip.py): end to end 0.5-0.7 mm lower on validation in two
    # seeds, for one more finder pass a look: the exported graph takes a tenth longer (19.3 against
    # 17.5 ms side by side, MediaPipe 20.3), eating most of a margin over MediaPipe that comes and
    # goes with the machine's speed (docs/predict.md, "Latency"), so it is off unless asked for.
    flip_average: bool = False


@dataclass
class FinderDataConfig:
    # Frames with RHD part masks (rhd, synthetic); STB has no masks and cannot train a finder.
    dataset: str = "synthetic"
    root: str = "data/synthetic"
    # Generated when root holds none: the CPU profile's 8000 + 400 frames, the same as `make data`
    # (frames already there are used as they are, so `make finder` first must not leave fewer).
    synthetic: SynthConfig = field(default_factory=lambda: SynthConfig(train=8000, test=400))
    # first N training frames (0: all). 4000 keeps `make finder` inside its 5-minute budget (3 min
    # 24 s measured on 3600 training frames) now that the pose profile generates 8000.
    train_frames: int = 4000
    eval_frames: int = 0  # first N evaluation frames (0: all)
    val_fraction: float = 0.1  # last part of the training frames, for the best checkpoint
    batch_size: int = 32
    flip: bool = True  # mirror left-right and swap the left/right labels (a mirrored left hand is a right hand)
    jitter: float = 0.2  # brightness/contrast jitter, fraction


@dataclass
class FinderOptimConfig:
    lr: float = 3e-3  # Adam; one-cycle (warm-up then cosine decay) over the run
    weight_decay: float = 1e-4
    max_epochs: int = 8
    dice_weight: float = 1.0  # soft Dice on the hand classes beside the cross-entropy (hands are few pixels)
    # Cross-entropy weight of the rest of the person's pixels (RHD label 1: the forearm), the
    # background most like a hand: a finder that takes the forearm for the hand draws its box too
    # long. 2, chosen on validation (seeds 0 and 1): predict's end-to-end error 33.57 and 33.02 mm
    # against 34.49 and 34.63 with 1; 4 cut too many hands short (experiments/results/whole_image.md).
    person_weight: float = 2.0


@dataclass
class FinderRunConfig:
    name: str = ""  # run folder name under out_dir; "" -> finder-<timestamp>
    out_dir: str = "runs"  # runs/<name>/; runs/latest-finder points at the newest finder run
    seed: int = 0
    progress: bool = True
    finder: FinderNetConfig = field(default_factory=FinderNetConfig)
    data: FinderDataConfig = field(default_factory=FinderDataConfig)
    optim: FinderOptimConfig = field(default_factory=FinderOptimConfig)


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


def with_overrides(cfg: Any, overrides: list[str]) -> Any:
    """``cfg`` with ``key=value`` overrides merged in and validated (e.g. a checkpoint's config)."""
    if overrides:
        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    validate(cfg)
    return cfg


def validate_finder(cfg: Any) -> None:
    """The finder run's checks: registry names, datasets with masks, value ranges."""
    from crossmodal.registry import DATASETS, FINDERS

    FINDERS.get(cfg.finder.name, key="finder.name")
    DATASETS.get(cfg.data.dataset, key="data.dataset")
    if cfg.data.dataset not in ("rhd", "synthetic"):
        raise ConfigError(f"data.dataset: a finder trains on part masks, which {cfg.data.dataset!r} does not have; "
                          "use rhd or synthetic (the finder then crops any image, STB's included)")
    for key in ("finder.input_size", "data.batch_size", "optim.max_epochs", "optim.person_weight"):
        from omegaconf import OmegaConf

        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {OmegaConf.select(cfg, key)}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if not 0.0 < cfg.finder.min_score < 1.0:
        raise ConfigError(f"finder.min_score must be in (0, 1), got {cfg.finder.min_score}")


def validate(cfg: Any) -> None:
    """Checks that the type system cannot express: registry names and value ranges."""
    if "finder" in cfg:
        return validate_finder(cfg)
    from crossmodal.registry import DATASETS, DECODERS, ENCODERS, STRATEGIES

    DATASETS.get(cfg.data.dataset, key="data.dataset")
    if "model" in cfg:
        STRATEGIES.get(cfg.model.strategy, key="model.strategy")
        for name in cfg.model.encoders:
            ENCODERS.get(name, key="model.encoders")
        for name in cfg.model.decoders:
            DECODERS.get(name, key="model.decoders")
    if not 0.0 < cfg.data.labeled_fraction <= 1.0:
        raise ConfigError(f"data.labeled_fraction must be in (0, 1], got {cfg.data.labeled_fraction}")
    if "optim" in cfg and cfg.optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule: unknown schedule {cfg.optim.schedule!r}; choices: {', '.join(SCHEDULES)}")
    if "optim" in cfg and not 0.0 <= cfg.optim.warmup_fraction < 1.0:
        raise ConfigError(f"optim.warmup_fraction must be in [0, 1), got {cfg.optim.warmup_fraction}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    from omegaconf import OmegaConf

    for key in ("data.num_points", "data.batch_size", "data.preprocess.crop_size", "data.preprocess.pool_size"):
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {OmegaConf.select(cfg, key)}")
    if cfg.data.preprocess.orient and not cfg.data.preprocess.view_correction:
        raise ConfigError("data.preprocess.orient (on in the CPU profile) rolls the view-corrected camera, so it needs "
                          "data.preprocess.view_correction: true; to crop without the correction add data.preprocess.orient=false")
    if cfg.data.num_points > cfg.data.preprocess.pool_size:
        raise ConfigError(
            f"data.num_points ({cfg.data.num_points}) cannot exceed data.preprocess.pool_size ({cfg.data.preprocess.pool_size})"
        )


PROFILES = ("cpu", "cpu-long", "gpu", "none")
SCHEDULES = ("plateau", "cosine")


def resolve_profile(name: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is available, else ``cpu``; other names are checked."""
    if name == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ConfigError(f"profile: unknown profile {name!r}; choices: auto, {', '.join(PROFILES)}")
    return name


def profile_layer(name: str) -> Any:
    """A profile's preset; it may build on another with ``defaults: [cpu.yaml]``."""
    from pathlib import Path

    from omegaconf import OmegaConf

    return OmegaConf.merge(*(node for _, node in _yaml_layers(str(Path(__file__).parent / "profiles" / f"{name}.yaml"))))


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None, schema: type = Config) -> Any:
    """Schema defaults <- profile preset <- YAML file(s) <- ``key=value`` overrides, validated.

    A YAML file may name others under ``defaults: [base.yaml, ...]`` (paths relative to it),
    merged in order before the file itself: the experiment configs share a base this way.
    The ``profile`` (cpu / gpu / none / auto) is read from the merged result, then its preset
    is put underneath your files, so anything you set explicitly wins over the preset.
    """
    from omegaconf import OmegaConf

    base = OmegaConf.structured(schema)
    layers = [(str(p), node) for p, node in _yaml_layers(path)] if path is not None else []
    if overrides:
        layers.append(("command line", parse_overrides(overrides)))
    cfg = base
    for source, layer in layers:
        cfg = _merge(cfg, layer, source)
    if "profile" in cfg:
        profile = resolve_profile(cfg.profile)
        if profile != "none":
            cfg = _merge(base, profile_layer(profile), f"profile {profile}")
            for source, layer in layers:
                cfg = _merge(cfg, layer, source)
        cfg.profile = profile
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
