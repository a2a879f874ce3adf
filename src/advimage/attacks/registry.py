"""Attack registry: ``register``, ``get``, ``names``.

Every registered attack has the signature
``run(model, x, y, *, steps, targeted=False, **params) -> AttackResult``.
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import Tensor, nn

from .base import AttackResult


class Attack(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, steps: int, targeted: bool = False,
                 **params) -> AttackResult: ...


_ATTACKS: dict[str, Attack] = {}


class UnknownAttackError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str) -> Callable[[Attack], Attack]:
    def deco(fn: Attack) -> Attack:
        _ATTACKS[name] = fn
        return fn
    return deco


def names() -> list[str]:
    return sorted(_ATTACKS)


def get(name: str) -> Attack:
    try:
        return _ATTACKS[name]
    except KeyError:
        raise UnknownAttackError(f"unknown attack {name!r}; valid attacks: {', '.join(names())}") from None
