"""Model registry: ``register``, ``get`` (build), ``names``."""

from __future__ import annotations

from typing import Callable

from .classifier import PixelClassifier

_BUILDERS: dict[str, Callable[..., PixelClassifier]] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(name: str) -> Callable[[Callable[..., PixelClassifier]], Callable[..., PixelClassifier]]:
    def deco(fn: Callable[..., PixelClassifier]) -> Callable[..., PixelClassifier]:
        _BUILDERS[name] = fn
        return fn
    return deco


def names() -> list[str]:
    """Names of the registered models (more are reachable as ``timm:<name>`` / ``torchvision:<name>``)."""
    return sorted(_BUILDERS)


def get(name: str, **kwargs) -> PixelClassifier:
    """Build a registered model, or a timm/torchvision one as ``timm:NAME`` / ``torchvision:NAME``."""
    if name in _BUILDERS:
        return _BUILDERS[name](**kwargs)
    if ":" in name:
        from .hub import load_hub_model
        source, _, arch = name.partition(":")
        return load_hub_model(source, arch, **kwargs)
    raise UnknownModelError(
        f"unknown model {name!r}; registered models: {', '.join(names())}; "
        "or use timm:<name> / torchvision:<name> with locally available weights"
    )
