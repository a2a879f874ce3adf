"""Model registry: ``register``, ``get`` (build), ``names`` over :data:`MODELS`.

The registry holds the registered builders (``efficientnet_lite0``...); :func:`get` also builds
``timm:NAME`` / ``torchvision:NAME`` models, which are not registered.
"""

from __future__ import annotations

from typing import Callable

from ..registry import Registry, UnknownNameError
from .classifier import PixelClassifier

ModelBuilder = Callable[..., PixelClassifier]

#: hint of the unknown-model error: what else :func:`get` builds
HUB_HINT = "; or use timm:<name> / torchvision:<name> with locally available weights"


class UnknownModelError(UnknownNameError):
    """A model name that is neither registered nor ``timm:`` / ``torchvision:``."""


#: name -> builder ``(**kwargs) -> PixelClassifier`` (``weights=`` a file among its kwargs)
MODELS: Registry[ModelBuilder] = Registry("model", UnknownModelError, label="registered models")


def register(name: str, description: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under ``name`` (decorator); ``description``: one line for
    ``advimage models`` (default: the builder's docstring)."""
    return MODELS.decorator(name, description)


def names() -> list[str]:
    """Names of the registered models (more are reachable as ``timm:<name>`` / ``torchvision:<name>``)."""
    return MODELS.names()


def get(name: str, **kwargs) -> PixelClassifier:
    """Build a registered model, or a timm/torchvision one as ``timm:NAME`` / ``torchvision:NAME``."""
    if name in MODELS:
        return MODELS.get(name)(**kwargs)
    if ":" in name:
        from .hub import load_hub_model
        source, _, arch = name.partition(":")
        return load_hub_model(source, arch, **kwargs)
    raise MODELS.unknown(name, hint=HUB_HINT)
