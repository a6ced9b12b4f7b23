"""Name -> class registries: every pluggable piece is registered once and built from config.

    from crossmodal.registry import ENCODERS

    @ENCODERS.register("my_encoder")
    class MyEncoder(nn.Module):
        ...

    encoder = ENCODERS.build("my_encoder", latent_dim=64)

The registered names are what configuration errors and ``--help`` list.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, TypeVar

from crossmodal.errors import ConfigError

T = TypeVar("T")

# Packages whose modules register themselves on import. Imported lazily, on the first
# lookup, so that ``import crossmodal`` stays cheap and plug-ins may live anywhere.
_PLUGIN_PACKAGES = {
    "dataset": ("crossmodal.data.rhd", "crossmodal.data.stb"),
    "encoder": ("encoders",),
    "decoder": ("decoders",),
    "strategy": ("alignment",),
    "finder": ("finders",),
    "pose loss": ("losses",),
}


class Registry:
    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class or function decorator: ``@REGISTRY.register("name")``."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ConfigError(f"{self.kind} {name!r} is registered twice ({self._entries[name]!r} and {obj!r})")
            self._entries[name] = obj
            setattr(obj, "registry_name", name)
            return obj

        return decorator

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the imports below call register(), not this
        try:
            for package in _PLUGIN_PACKAGES.get(self.kind, ()):
                # A package registers its members by importing them in its __init__.
                importlib.import_module(package)
        except BaseException:
            self._loaded = False
            raise

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def get(self, name: str, key: str | None = None) -> Any:
        """Look ``name`` up; ``key`` is the config key that named it, for the error message."""
        self._load_plugins()
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; registered {self.plural}: {', '.join(self.names()) or '(none)'}"
            )
        return self._entries[name]

    def build(self, name: str, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        return self.get(name, key=key)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


DATASETS = Registry("dataset")
ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
STRATEGIES = Registry("strategy", "strategies")
FINDERS = Registry("finder")
POSE_LOSSES = Registry("pose loss", "pose losses")
