"""The defense registry: ``register``, ``get``, ``names``, ``create`` over :data:`DEFENSES`
(re-exported by :mod:`advimage.defenses`).

The defenses' modules register themselves here; this module imports none of them, so they never
import their package's ``__init__`` back.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry, UnknownNameError

DefenseFactory = Callable[..., nn.Module]


class UnknownDefenseError(UnknownNameError):
    """A defense name that is not registered."""


#: name -> factory ``(model, **params) -> nn.Module``; described by the factory's docstring
DEFENSES: Registry[DefenseFactory] = Registry("defense", UnknownDefenseError)


def register(name: str, description: str | None = None) -> Callable[[DefenseFactory], DefenseFactory]:
    """Register a defense factory under ``name`` (decorator); ``description`` defaults to its docstring."""
    return DEFENSES.decorator(name, description)


def names() -> list[str]:
    """Names of the registered defenses."""
    return DEFENSES.names()


def get(name: str) -> DefenseFactory:
    """The factory ``(model, **params) -> nn.Module`` of a registered defense."""
    return DEFENSES.get(name)


def create(name: str, model: nn.Module, **params) -> nn.Module:
    """Build the defense ``name`` around ``model``."""
    return get(name)(model, **params)
