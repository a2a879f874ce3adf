"""Quantizer spec strings: a rule and modifiers, like the model specs (``MODEL+jpeg:75``).

A quantizer is a point of one product: rounding rule × cost map × gradient-spending walk ×
pruning × margin. A spec string names it::

    RULE[+cost:hill|mipod][+rival:fixed][+walk:KIND:STEPS ...][+prune:ROUNDS][+margin:KAPPA]

- RULE: ``round``, ``none``, ``smart`` (§7.2), ``scaled`` (x0 + round(s u)), ``jpeg`` (§7.3),
  ``jpeg-pixels`` (plain rounding, then a plain Pillow JPEG) or ``gina`` (Ch. 8);
- ``+cost:hill`` / ``+cost:mipod`` (``smart`` only): steganographic costs of the ±k changes
  (Ch. 8, eqs. 8.3-8.4, 8.13-8.14);
- ``+rival:fixed`` (``smart``, with or without a cost, and ``gina``; not with ``+prune``): the
  loss of eq. 8.10, l_{c0} − l_{ca} with c_a the class the attack reached, held fixed: the
  quantized image must make c_a beat c0 (eq. 8.11), not merely leave c0. Without it the rival is
  the best other class wherever the loss is evaluated (eqs. 4.15-4.16), the run's criterion;
- ``+walk:KIND:STEPS`` (``scaled`` only; repeatable, a chain): STEPS more gradient steps in the
  metric of the file's integer cost before the scaled rounding (KIND: ``irls``, ``prox``,
  ``int``; :mod:`.lattice`); the file is never costlier than ``scaled`` of the attack's floats;
- ``+prune:ROUNDS`` (``smart``, ``scaled``): greedy pruning of the ±k changes, one gradient each;
- ``+margin:KAPPA`` (any rule): the file must beat the criterion by κ logits, whatever the run's
  margin.

Today's names are aliases of :data:`ALIASES` (``lattice-int`` is ``scaled+walk:int:49+prune:1``):
a spec string equal to an alias's expansion gets the alias's name, so stores keep their keys.
Anything else in a spec is refused, with what is valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..criteria import Criterion
from .base import QUANTIZERS, QuantizedImages, QuantizerSpec, UnknownQuantizerError, options_of, registered

#: the grammar of a spec string, in one line (``advimage quantizers`` prints it)
SYNTAX = "RULE[+cost:hill|mipod][+rival:fixed][+walk:irls|prox|int:STEPS ...][+prune:ROUNDS][+margin:KAPPA]"

#: the built-in rules, each a base quantizer registered in :data:`~.base.QUANTIZERS` by :mod:`.spatial`,
#: :mod:`.scaled`, :mod:`.jpeg`, :mod:`.stego` (in the order listings show them); any other registered
#: quantizer is a rule too (it takes ``+margin``)
RULES = ("round", "none", "smart", "scaled", "jpeg", "jpeg-pixels", "gina")
COSTS = ("hill", "mipod")
#: ``+rival:`` values: the class of eq. 8.10 held fixed (the default, the best other class, has no modifier)
RIVAL_KINDS = ("fixed",)
WALK_KINDS = ("irls", "prox", "int")

#: today's names: (spec, description); one table, so that stored runs still resolve
ALIASES: dict[str, tuple[str, str]] = {
    "smart-prune": ("smart+prune:2", "§7.2 smart quantization, then greedy pruning of the ±k changes "
                                     "(re-linearized at x_q, bisection on how many to undo)"),
    "hill": ("smart+cost:hill", "Ch. 8 steganographic quantization with HILL costs ρ ℓ² (eqs. 8.3, 8.13-8.14; "
                                "conseal)"),
    "mipod": ("smart+cost:mipod", "Ch. 8 steganographic quantization with MiPOD costs ℓ²/σ² (eqs. 8.4, 8.14; "
                                  "conseal's σ²)"),
    "scaled-prune": ("scaled+prune:2", "scaled rounding, then two rounds of greedy pruning of the changes "
                                       "(re-linearized at x_q)"),
    "lattice": ("scaled+walk:irls:30+prune:1", "30 more BP steps in the metric of the files' integer cost "
                                               "(reweighted L1 near 0), then scaled rounding and one pruning round"),
    "lattice-prox": ("scaled+walk:irls:30+walk:prox:15+prune:1",
                     "lattice's walk, then 15 proximal steps on the same integer cost (about 1% smaller files for "
                     "15 more gradients), scaled rounding and one pruning round"),
    "lattice-int": ("scaled+walk:int:49+prune:1", "49 more BP steps with integer iterates (gradient and success at "
                                                  "the rounded iterate, DDN's idea), then scaled rounding and one "
                                                  "pruning round"),
}


class QuantizerSpecError(UnknownQuantizerError):
    """A quantizer spec string that does not parse, or combines what does not go together."""


@dataclass(frozen=True)
class Recipe:
    """A parsed spec string: rule, cost map, walk chain, pruning rounds, margin (None: the run's),
    rival class (None: the best other class; ``fixed``: eq. 8.10's c_a)."""

    rule: str
    cost: str | None = None
    walks: tuple[tuple[str, int], ...] = ()
    prune: int = 0
    margin: float | None = None
    rival: str | None = None

    def canonical(self) -> str:
        """The spec string, modifiers in the grammar's order."""
        parts = [self.rule]
        if self.cost:
            parts.append(f"cost:{self.cost}")
        if self.rival:
            parts.append(f"rival:{self.rival}")
        parts += [f"walk:{k}:{n}" for k, n in self.walks]
        if self.prune:
            parts.append(f"prune:{self.prune}")
        if self.margin is not None:
            parts.append(f"margin:{self.margin:g}")
        return "+".join(parts)


def _int(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise QuantizerSpecError(f"bad quantizer {spec!r}: {what} must be a whole number >= 1, got {text!r}")
    return int(text)


def parse(spec: str) -> Recipe:
    """Parse ``spec`` (an alias or ``RULE+MODIFIER...``); :class:`QuantizerSpecError` if invalid."""
    head, _, rest = spec.partition("+")
    if head in ALIASES:  # an alias, maybe with more modifiers (``lattice-int+margin:0.1``)
        return parse(ALIASES[head][0] + (f"+{rest}" if rest else ""))
    rule, *mods = spec.split("+")
    if rule not in QUANTIZERS:
        raise QuantizerSpecError(f"unknown quantizer {spec!r}; valid quantizers: {', '.join(names())}, "
                                 f"or a spec string {SYNTAX}")
    cost, walks, prune, margin, rival = None, [], 0, None, None
    for mod in mods:
        key, _, value = mod.partition(":")
        if key == "cost" and value in COSTS and cost is None:
            cost = value
        elif key == "rival" and value in RIVAL_KINDS and rival is None:
            rival = value
        elif key == "walk" and value.partition(":")[0] in WALK_KINDS:
            kind, _, steps = value.partition(":")
            walks.append((kind, _int(steps, "walk steps", spec)))
        elif key == "prune" and not prune:
            prune = _int(value, "prune rounds", spec)
        elif key == "margin" and margin is None:
            try:
                margin = float(value)
            except ValueError:
                margin = -1.0
            if not (margin >= 0 and math.isfinite(margin)):
                raise QuantizerSpecError(f"bad quantizer {spec!r}: margin must be a number >= 0, got {value!r}")
        else:
            raise QuantizerSpecError(
                f"bad quantizer {spec!r}: {mod!r} is not a modifier, or is repeated (valid: cost:{'|'.join(COSTS)}, "
                f"rival:{'|'.join(RIVAL_KINDS)}, walk:{'|'.join(WALK_KINDS)}:STEPS, prune:ROUNDS, margin:KAPPA)")
    if cost and rule != "smart":
        raise QuantizerSpecError(f"bad quantizer {spec!r}: +cost applies to the smart rule only")
    if walks and rule != "scaled":
        raise QuantizerSpecError(f"bad quantizer {spec!r}: +walk applies to the scaled rule only")
    if prune and rule not in ("smart", "scaled"):
        raise QuantizerSpecError(f"bad quantizer {spec!r}: +prune applies to the smart and scaled rules only")
    if rival and rule not in ("smart", "gina"):
        raise QuantizerSpecError(f"bad quantizer {spec!r}: +rival applies to the smart and gina rules only")
    if rival and prune:
        raise QuantizerSpecError(f"bad quantizer {spec!r}: +rival does not combine with +prune (pruning tests the "
                                 "run's criterion, not the fixed rival)")
    return Recipe(rule, cost, tuple(walks), prune, margin, rival)


def build(recipe: Recipe, rules: dict[str, QuantizerSpec], name: str | None = None,
          description: str | None = None) -> QuantizerSpec:
    """The quantizer of ``recipe`` over the registered ``rules``; named ``name`` (default: the
    alias whose expansion it is, else its canonical spec)."""
    base = rules[recipe.rule]
    canonical = recipe.canonical()
    if name is None:
        name = next((a for a, (s, _) in ALIASES.items() if parse(s) == recipe), canonical)
    if recipe == Recipe(recipe.rule):
        return base
    fn = base.fn
    if recipe.rule == "gina" and recipe.rival:
        fn = _gina_rival(recipe.rival)
    elif recipe.cost or recipe.rival:
        fn = _with_cost(recipe.cost, recipe.rival or "max")
    if recipe.walks:
        fn = _walked(recipe.walks, recipe.prune)
    elif recipe.prune:
        fn = _pruned(fn, recipe.prune)
    gradients = base.gradients + sum(n for _, n in recipe.walks) + recipe.prune
    forwards = base.forwards if not (recipe.walks or recipe.prune) else None
    what = description or f"{base.description}; " + ", ".join(canonical.split("+")[1:])
    return QuantizerSpec(name, fn, base.suffix, gradients, what, options_of(fn), forwards, canonical, recipe.margin)


def _with_cost(cost: str | None, rival: str = "max"):
    """``smart`` with the HILL or MiPOD cost map of x0 (Ch. 8; None: squared L2) and the rival
    class rule ``rival`` (``fixed``: eq. 8.10)."""
    from .spatial import quantize_spatial
    from .stego import _as_pixels, hill_cost, mipod_cost

    weight_fn = {"hill": hill_cost, "mipod": mipod_cost}[cost] if cost else None

    def run(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1,
            targeted: bool = False, steps: int = 10) -> QuantizedImages:
        weight = weight_fn(_as_pixels(x0, 1.0)) if weight_fn else None
        return quantize_spatial(model, x0, x_adv, y, df=df, targeted=targeted, steps=steps, cost=weight, rival=rival)
    return run


def _gina_rival(rival: str):
    """``gina`` with the rival class rule ``rival`` (``fixed``: eq. 8.10)."""
    from .stego import quantize_gina

    def run(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1,
            targeted: bool = False, steps: int = 8) -> QuantizedImages:
        return quantize_gina(model, x0, x_adv, y, df=df, targeted=targeted, steps=steps, rival=rival)
    return run


def _pruned(fn, rounds: int):
    """``fn``, then ``rounds`` rounds of greedy pruning (:func:`.prune.prune_rounds`), keeping fn's options."""
    from .prune import prune_rounds

    def run(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, **options: Any) -> QuantizedImages:
        q = fn(model, x0, x_adv, y, **options)
        return prune_rounds(model, x0, q, y, targeted=bool(options.get("targeted", False)), rounds=rounds)
    run.__signature__ = _signature_of(fn)  # type: ignore[attr-defined]  (its options are fn's)
    return run


def _walked(walks: tuple[tuple[str, int], ...], rounds: int):
    """:func:`.lattice.quantize_lattice` with the chain ``walks`` and ``rounds`` pruning rounds."""
    from .lattice import quantize_lattice

    def run(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
            steps: int = 10) -> QuantizedImages:
        return quantize_lattice(model, x0, x_adv, y, targeted=targeted, steps=steps, walks=walks,
                                prune_rounds_=rounds)
    return run


def _signature_of(fn):
    import inspect

    return inspect.signature(fn)


_BUILT: dict[str, QuantizerSpec] = {}


def rules() -> list[str]:
    """The registered quantizers: the built-in :data:`RULES` in their order, then any other."""
    return [r for r in RULES if r in QUANTIZERS] + [n for n in QUANTIZERS if n not in RULES]


def names() -> list[str]:
    """The registered rules (:func:`rules`) and the aliases (any spec string of the grammar is valid too)."""
    return rules() + [a for a in ALIASES if a not in QUANTIZERS]


def spec(name: str) -> QuantizerSpec:
    """The quantizer of a registered name, an alias or a spec string (``scaled+walk:int:49+prune:1``);
    :class:`QuantizerSpecError` (an :class:`UnknownQuantizerError`) saying what is valid."""
    rules = registered()
    if name in rules:
        return rules[name]
    if name not in _BUILT:
        _BUILT[name] = build(parse(name), rules, name=name if name in ALIASES else None,
                             description=ALIASES[name][1] if name in ALIASES else None)
    return _BUILT[name]
