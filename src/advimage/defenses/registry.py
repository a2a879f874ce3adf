"""The defense registry: ``register``, ``get``, ``names``, ``create`` (re-exported by :mod:`advimage.defenses`).

The defenses' modules register themselves here; this module imports none of them, so they never
import their package's ``__init__`` back.
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
