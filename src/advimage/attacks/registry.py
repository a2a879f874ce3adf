"""Attack registry: ``register``, ``get``, ``spec``, ``names`` over :data:`ATTACKS`.

Every registered attack has the signature
``run(model, x, y, *, steps, targeted=False, **params) -> AttackResult`` (``y``: labels or a
criterion). Its registry entry (:class:`AttackSpec`) says whether it is white or black box, what
``steps`` counts, whether it takes a ``seed``, and its default hyperparameters; the effective
hyperparameters (:meth:`AttackSpec.settings`) identify stored results, so that a resumed run
never reuses rows made with other settings.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..registry import Registry, UnknownNameError
from .base import AttackResult

BUDGET_UNITS = ("gradients", "queries", "forwards")


#: ``attack(model, x, y, *, steps, targeted=False, **its own keyword hyperparameters) -> AttackResult``,
#: ``y`` labels or a criterion. A plain alias, not a Protocol: each attack has its own keywords.
Attack = Callable[..., AttackResult]


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack.

    black_box: only label queries (the result is integer-valued). budget: what ``steps``
    counts per image ("gradients", "queries", or "forwards" for FGSM's ε trials after its one
    gradient). seeded: takes a ``seed``. defaults: its keyword hyperparameters and defaults.
    reference: the paper it implements. labels_only: needs class labels and one output per
    image (DDN's cross-entropy, decision-based attacks), not any criterion.
    """

    name: str
    run: Attack
    black_box: bool = False
    budget: str = "gradients"
    seeded: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    labels_only: bool = False

    def settings(self, **params: Any) -> dict[str, Any]:
        """Effective hyperparameters: the defaults overridden by ``params`` (unknown names refused)."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise TypeError(f"attack {self.name!r} has no parameter {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(self.defaults)) or 'none'}")
        out = {**self.defaults, **params}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(out.items())}


class UnknownAttackError(UnknownNameError):
    """An attack name that is not registered."""


#: name -> :class:`AttackSpec`; the description is the spec's ``reference``
ATTACKS: Registry[AttackSpec] = Registry("attack", UnknownAttackError)


def _defaults(fn: Callable) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    return {k: p.default for k, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in ("steps", "targeted", "seed")
            and p.default is not inspect.Parameter.empty}


def register(name: str, *, black_box: bool = False, budget: str = "gradients", reference: str = "",
             labels_only: bool = False) -> Callable[[Attack], Attack]:
    """Register ``fn`` under ``name`` (decorator); see :class:`AttackSpec` for the options."""
    if budget not in BUDGET_UNITS:
        raise ValueError(f"budget must be one of {BUDGET_UNITS}, got {budget!r}")

    def deco(fn: Attack) -> Attack:
        seeded = "seed" in inspect.signature(fn).parameters
        doc = (inspect.getmodule(fn).__doc__ or "").strip().split("\n\n")[0]
        first = " ".join(doc.split())  # the module docstring's first paragraph: what it implements
        entry = AttackSpec(name, fn, black_box, budget, seeded, _defaults(fn), reference or first,
                           labels_only or black_box)
        ATTACKS.register(name, entry, entry.reference)
        return fn
    return deco


def names() -> list[str]:
    """Names of the registered attacks, sorted."""
    return ATTACKS.names()


def spec(name: str) -> AttackSpec:
    """The registry entry of ``name``; unknown names raise :class:`UnknownAttackError` with the valid ones."""
    return ATTACKS.get(name)


def get(name: str) -> Attack:
    """The attack function registered as ``name``."""
    return spec(name).run
