"""What every training strategy shares: building modules from config, masks, L_recon, inference.

A strategy is a plain ``nn.Module`` holding the encoders (keyed by the batch key they
read: "image", "cloud", "pose") and decoders (keyed by their target: "pose",
"heatmaps", "cloud"). ``losses(batch, beta)`` returns the named, weighted loss
terms plus their sum under "loss"; ``predict(image)`` infers from RGB alone.

Masks (weak supervision, docs/design.md section 1): pose and heatmap targets exist only
for ``labeled`` samples, the cloud target only where ``has_cloud``; an encoder's
input exists on the same rule (the pose encoder needs a label, the cloud encoder a
cloud). A term whose target is missing for a sample costs nothing for that sample.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from crossmodal.errors import ConfigError
from crossmodal.gaussian import DiagonalGaussian, kl_standard_normal
from crossmodal.registry import DECODERS, ENCODERS, POSE_LOSSES

#: Which batch flag says that a key's data exists for a sample.
PRESENCE_FLAG = {"image": None, "pose": "labeled", "heatmaps": "labeled", "cloud": "has_cloud"}
#: A flag that adds samples: heatmaps are 2D labels, which the frames that keep only their 2D
#: keypoints (``uv_only``, with ``data.unlabeled_2d``) have too.
EXTRA_PRESENCE_FLAG = {"heatmaps": "uv_only"}


def _options(section: Any, name: str) -> dict[str, Any]:
    """Constructor options of module ``name`` from ``model.{encoder,decoder}_options`` as a plain dict."""
    from omegaconf import DictConfig, OmegaConf

    raw = section.get(name, {}) if section is not None else {}
    if isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    return dict(raw or {})


def build_module(registry: Any, name: str, latent_dim: int, options: dict[str, Any], key: str) -> nn.Module:
    """Build a registered module; an unknown option is a one-line error listing the valid ones."""
    cls = registry.get(name, key=key)
    parameters = inspect.signature(cls.__init__).parameters
    accepted = [p for p in parameters if p not in ("self", "latent_dim")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"{key}: {name} has no option {unknown[0]!r}; its options: {', '.join(accepted) or '(none)'}")
    return cls(**({"latent_dim": latent_dim} if "latent_dim" in parameters else {}), **options)


def presence(batch: Mapping[str, Tensor], key: str) -> Tensor:
    """(B,) bool: does ``batch[key]`` exist for each sample."""
    flag, extra = PRESENCE_FLAG.get(key), EXTRA_PRESENCE_FLAG.get(key)
    ref = batch["image"]
    if flag is None or flag not in batch:
        return torch.ones(ref.shape[0], dtype=torch.bool, device=ref.device)
    present = batch[flag].to(device=ref.device, dtype=torch.bool)
    if extra is not None and extra in batch:
        present = present | batch[extra].to(device=ref.device, dtype=torch.bool)
    return present


class Strategy(nn.Module):
    """Base class: subclasses implement ``losses`` and declare what they accept."""

    registry_name: ClassVar[str] = "strategy"
    #: Encoder input keys the strategy needs exactly (None: any set containing "image").
    required_encoder_keys: ClassVar[tuple[str, ...] | None] = None
    #: Decoder target keys the strategy may use (None: any).
    allowed_decoder_keys: ClassVar[tuple[str, ...] | None] = None
    #: Modules built when ``model.encoders`` / ``model.decoders`` are left empty.
    default_encoders: ClassVar[tuple[str, ...]] = ("rgb_resnet18", "cloud_respel")
    default_decoders: ClassVar[tuple[str, ...]] = ("pose_mlp", "heatmap_dcgan", "cloud_foldingnet")

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_dim = int(cfg.latent_dim)
        self.encoder_names = list(cfg.encoders) or list(self.default_encoders)
        self.decoder_names = list(cfg.decoders) or list(self.default_decoders)
        self.encoders = nn.ModuleDict()
        for name in self.encoder_names:
            enc = build_module(ENCODERS, name, self.latent_dim, _options(cfg.encoder_options, name), "model.encoders")
            if enc.input_key in self.encoders:
                raise ConfigError(f"model.encoders: two encoders read {enc.input_key!r} ({self.encoder_names})")
            self.encoders[enc.input_key] = enc
        self.decoders = nn.ModuleDict()
        for name in self.decoder_names:
            dec = build_module(DECODERS, name, self.latent_dim, _options(cfg.decoder_options, name), "model.decoders")
            if dec.target_key in self.decoders:
                raise ConfigError(f"model.decoders: two decoders predict {dec.target_key!r} ({self.decoder_names})")
            self.decoders[dec.target_key] = dec
        self.weights = {"pose": 1.0, "heatmaps": float(cfg.lambda_heat), "cloud": float(cfg.lambda_cloud)}
        self.pose_losses = nn.ModuleDict()
        for name in cfg.get("pose_losses", None) or []:
            options = _options(cfg.get("pose_loss_options", None), name)
            self.pose_losses[name] = build_module(POSE_LOSSES, name, self.latent_dim, options, "model.pose_losses")
        self._image_q: DiagonalGaussian | None = None
        self._check_modules()

    def _check_modules(self) -> None:
        name = self.registry_name
        if "image" not in self.encoders:
            raise ConfigError(f"model.encoders: strategy {name!r} needs an RGB encoder (input 'image'), got {self.encoder_names}")
        if self.required_encoder_keys is not None and set(self.encoders) != set(self.required_encoder_keys):
            wanted = " + ".join(self.required_encoder_keys)
            raise ConfigError(
                f"model.encoders: strategy {name!r} uses exactly the encoders for {wanted}, got {self.encoder_names}"
            )
        if "pose" not in self.decoders:
            raise ConfigError(f"model.decoders: strategy {name!r} needs a pose decoder, got {self.decoder_names}")
        if self.allowed_decoder_keys is not None:
            for target, dec in self.decoders.items():
                if target not in self.allowed_decoder_keys:
                    raise ConfigError(
                        f"model.decoders: strategy {name!r} cannot use decoder {dec.registry_name!r} "
                        f"(target {target!r}); it decodes only {', '.join(self.allowed_decoder_keys)}"
                    )

    # ------------------------------------------------------------------ shared pieces

    @property
    def posterior_keys(self) -> tuple[str, ...]:
        """The inputs whose own q(z|input) the loss trains: what can be encoded alone and decoded."""
        return tuple(self.encoders)

    def encode(self, key: str, batch: Mapping[str, Tensor]) -> tuple[DiagonalGaussian, dict[str, Tensor]]:
        """q(z|.) of encoder ``key`` and its auxiliary loss terms, named ``<key>/<term>``."""
        q, aux = self.encoders[key].encode(batch, presence(batch, "pose"))
        if key == "image":
            self._image_q = q  # the pose losses read it in total()
        return q, {f"{key}/{name}": value for name, value in aux.items()}

    def reconstruction(
        self, q: DiagonalGaussian, batch: Mapping[str, Tensor], source: str, source_mask: Tensor, deterministic: bool = False
    ) -> dict[str, Tensor]:
        """L_recon(z) (paper Eq. 11), one weighted term per decoder, z drawn from ``q``
        (``z = mu`` when ``deterministic``).

        ``source_mask`` (B,) marks the samples for which ``q`` exists at all.
        """
        return self.reconstructions([(source, q, source_mask)], batch, deterministic)

    def reconstructions(
        self, sources: list[tuple[str, DiagonalGaussian, Tensor]], batch: Mapping[str, Tensor], deterministic: bool = False
    ) -> dict[str, Tensor]:
        """``reconstruction`` of several latents (S3's two, S4's three) with one decode per decoder.

        Each source's samples that have a decoder's target are stacked and decoded in one call:
        one large matrix product instead of several small ones (S4's three FoldingNet decodes
        were half of its step). The terms are each source's own mean, as with separate calls;
        a decoder with batch norm normalises over the stacked latents.
        """
        zs = [(name, q.sample(self.training and not deterministic), mask) for name, q, mask in sources]
        terms = {}
        for target, decoder in self.decoders.items():
            has_target = presence(batch, target)
            # Decode only the samples that have this target. Decoding the whole batch would let
            # a decoder's batch norm mix the masked samples into its statistics, and pass them
            # gradient from a loss they have no target for: with 25% labels this made the
            # heatmap term's gradient on the RGB encoder ~40x larger (experiments/results/README.md).
            picks = [source_mask & has_target for _, _, source_mask in zs]
            chosen = [z if bool(pick.all()) else z[pick] for (_, z, _), pick in zip(zs, picks)]
            counts = [c.shape[0] for c in chosen]
            if sum(counts) == 0:
                for name, z, _ in zs:
                    terms[f"{name}/{target}"] = z.sum() * 0.0  # none has a target: 0 in the graph
                continue
            preds = decoder(torch.cat(chosen)).split(counts)
            for (name, z, _), pick, pred in zip(zs, picks, preds):
                if pred.shape[0] == 0:
                    loss = z.sum() * 0.0
                else:
                    loss = decoder.loss(pred, batch[target] if bool(pick.all()) else batch[target][pick])
                terms[f"{name}/{target}"] = self.weights[target] * loss
        return terms

    @staticmethod
    def kl_prior(q: DiagonalGaussian, mask: Tensor) -> Tensor:
        """Mean over the samples in ``mask`` of KL(q || N(0, I)); 0 (in the graph) if none."""
        kl = kl_standard_normal(q.mu, q.logvar)
        return (kl * mask).sum() / mask.sum().clamp_min(1)

    def fit_pose_losses(self, labelled_poses: Any) -> dict[str, Any]:
        """Give the pose losses that derive bounds from data the labelled training poses; their JSON."""
        return {name: loss.fit(labelled_poses) for name, loss in self.pose_losses.items() if loss.needs_labelled_poses}

    def total(self, terms: dict[str, Tensor], batch: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Adds the pose losses' terms (given the batch), then the sum of every term under "loss"."""
        if len(self.pose_losses) and batch is not None:
            if self._image_q is None:
                raise RuntimeError("pose losses need the image posterior: encode('image', batch) first")
            pose = self.decoders["pose"](self._image_q.mu)
            for name, loss in self.pose_losses.items():
                terms.update({f"pose_loss/{name}/{k}": v for k, v in loss(pose, batch).items()})
        self._image_q = None
        terms["loss"] = torch.stack([v.float() for v in terms.values()]).sum()
        return terms

    # ------------------------------------------------------------------ interface

    def losses(self, batch: Mapping[str, Tensor], beta: float) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, image: Tensor) -> dict[str, Tensor]:
        """Inference from RGB alone: z = mean of q(z|x), decoded by every decoder."""
        q = self.encoders["image"](image)
        out = {"z": q.mu, "logvar": q.logvar}
        for target, decoder in self.decoders.items():
            out[target] = decoder(q.mu)
        return out
