"""Shared encoder interface: a backbone giving features, and two linear heads giving q(z|x).

An encoder reads one batch key (``input_key``) and returns a ``DiagonalGaussian``
(``mu``, ``logvar``, each (B, latent_dim)). ``features`` exposes the backbone output
alone because the joint encoder of ``kl_align`` fuses the features of several
encoders under its own heads. Subclasses implement ``compute_features`` and set
``input_key``, ``input_shape`` and ``feature_dim``; the base class validates the
input shape and owns the heads.

Adding an encoder takes one file in this package::

    @ENCODERS.register("my_encoder")
    class MyEncoder(Encoder):
        input_key = "cloud"
        input_shape = ("B", "P", 3)
        ...

and one import line in ``encoders/__init__.py``.
"""

from __future__ import annotations

from typing import ClassVar, Mapping, Sequence

import torch
from torch import Tensor, nn

from crossmodal.gaussian import DiagonalGaussian
from crossmodal.errors import ConfigError, CrossmodalError

# A shape pattern: ints must match exactly, strings are free sizes (>= 1) named in messages.
ShapePattern = Sequence[int | str]


class ShapeError(CrossmodalError, ValueError):
    """A tensor given to a module has the wrong shape or dtype; the message names the module."""


def format_pattern(pattern: ShapePattern) -> str:
    """``("B", 3, "H", "W")`` -> ``"(B, 3, H, W)"``; ``(2,)`` -> ``"(2,)"``."""
    return "(" + ", ".join(str(d) for d in pattern) + ("," if len(pattern) == 1 else "") + ")"


def check_shape(x: object, pattern: ShapePattern, who: str, what: str) -> None:
    """Raise ``ShapeError`` unless ``x`` is a floating tensor matching ``pattern``.

    ``who`` names the module (e.g. ``"rgb_resnet18 encoder"``), ``what`` the tensor
    (e.g. ``"image"``); the message is one line, e.g.
    ``rgb_resnet18 encoder: expected image of shape (B, 3, H, W), got (2, 1, 64, 64)``.
    """
    expected = format_pattern(pattern)
    if not isinstance(x, Tensor):
        raise ShapeError(f"{who}: expected {what} as a tensor of shape {expected}, got {type(x).__name__}")
    got = tuple(x.shape)
    matches = len(got) == len(pattern) and all(
        (g == p) if isinstance(p, int) else (g >= 1) for g, p in zip(got, pattern)
    )
    if not matches:
        raise ShapeError(f"{who}: expected {what} of shape {expected}, got {format_pattern(got)}")
    if not x.is_floating_point():
        raise ShapeError(f"{who}: expected a floating-point {what} of shape {expected}, got dtype {x.dtype}")


def check_positive(value: int | float, option: str, who: str) -> None:
    """One-line ``ConfigError`` for a size option that must be > 0."""
    if not value > 0:
        raise ConfigError(f"{who}: option {option} must be > 0, got {value!r}")


class LatentModule(nn.Module):
    """What encoders and decoders share: a latent size and a name for messages."""

    registry_name: ClassVar[str] = "module"  # set by the registry's decorator
    role: ClassVar[str] = "module"  # "encoder" or "decoder", for messages

    def __init__(self, latent_dim: int = 64) -> None:
        super().__init__()
        check_positive(latent_dim, "latent_dim", self.who())
        self.latent_dim = latent_dim

    @classmethod
    def who(cls) -> str:
        """How messages name this module: its registry name and role."""
        return f"{cls.registry_name} {cls.role}"


class Encoder(LatentModule):
    """Base class of every registered encoder: ``x -> DiagonalGaussian(mu, logvar)``."""

    role = "encoder"
    input_key: ClassVar[str]  # the batch key read: "image", "cloud" or "pose"
    input_shape: ClassVar[tuple[int | str, ...]]  # e.g. ("B", "P", 3)
    feature_dim: int  # size of features(); set by the subclass before build_heads()

    def build_heads(self, feature_dim: int) -> None:
        """Create the mean and log-variance heads on ``feature_dim`` backbone features."""
        self.feature_dim = feature_dim
        self.mu_head = nn.Linear(feature_dim, self.latent_dim)
        self.logvar_head = nn.Linear(feature_dim, self.latent_dim)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ShapeError`` (one line naming this module) unless ``x`` has ``input_shape``."""
        check_shape(x, self.input_shape, self.who(), self.input_key)

    def compute_features(self, x: Tensor) -> Tensor:
        """Backbone on an already validated input: (B, feature_dim)."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Backbone features (B, feature_dim) of a batch read from ``input_key``."""
        self.check_input(x)
        return self.compute_features(x)

    def forward(self, x: Tensor) -> DiagonalGaussian:
        f = self.features(x)
        return DiagonalGaussian(self.mu_head(f), self.logvar_head(f))

    def encode(self, batch: Mapping[str, Tensor], labeled: Tensor) -> tuple[DiagonalGaussian, dict[str, Tensor]]:
        """Training-time encoding: q(z|x) of ``batch[input_key]`` and the encoder's own loss terms.

        An encoder with an auxiliary task (e.g. ``rgb_resnet18``'s 2D keypoints) returns its
        weighted terms by name, computed on the ``labeled`` (B,) samples only; by default none.
        """
        return self(batch[self.input_key]), {}

    @classmethod
    def example_input(cls, batch_size: int, generator: torch.Generator | None = None, **options: object) -> Tensor:
        """A random valid input batch, for tests and docs. Accepts (and ignores) constructor options."""
        raise NotImplementedError
