"""Defense registry: ``register``, ``get``, ``names``, ``create``.

A defense is an ``nn.Module`` on float pixels in [0, 255] that wraps a classifier:
``get(name)(model, **params)`` builds it, e.g. ``get("jpeg")(model, quality=75)``. Registered:
``jpeg``, ``random-resize``, ``bits`` and ``median`` (:mod:`.squeeze`). A factory may carry a
``check_arg(text)`` attribute that refuses a bad spec argument (``MODEL+bits:0``) before any model
is built (:func:`advimage.models.specs.check`). The feature-squeezing *detector* is
:class:`~.feature_squeezing.FeatureSqueezingDetector`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

DefenseFactory = Callable[..., nn.Module]

_DEFENSES: dict[str, DefenseFactory] = {}


class UnknownDefenseError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(name: str) -> Callable[[DefenseFactory], DefenseFactory]:
    def deco(factory: DefenseFactory) -> DefenseFactory:
        _DEFENSES[name] = factory
        return factory
    return deco


def names() -> list[str]:
    """Names of the registered defenses."""
    return sorted(_DEFENSES)


def get(name: str) -> DefenseFactory:
    """The factory ``(model, **params) -> nn.Module`` of a registered defense."""
    try:
        return _DEFENSES[name]
    except KeyError:
        raise UnknownDefenseError(f"unknown defense {name!r}; valid defenses: {', '.join(names())}") from None


def create(name: str, model: nn.Module, **params) -> nn.Module:
    """Build the defense ``name`` around ``model``."""
    return get(name)(model, **params)


from .jpeg import JpegCompression, JpegDefense  # noqa: E402  (registers "jpeg")
from .random_resize import RandomDownscale, RandomResizeDefense  # noqa: E402  (registers "random-resize")
from .squeeze import BitDepth, BitDepthDefense, MedianDefense, MedianSmoothing, SqueezeDefense  # noqa: E402
from .feature_squeezing import FeatureSqueezingDetector  # noqa: E402

__all__ = ["BitDepth", "BitDepthDefense", "FeatureSqueezingDetector", "JpegCompression", "JpegDefense", "MedianDefense", "MedianSmoothing",
           "RandomDownscale", "RandomResizeDefense", "SqueezeDefense", "UnknownDefenseError", "create", "get", "names",
           "register"]
