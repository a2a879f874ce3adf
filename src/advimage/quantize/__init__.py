"""Quantizers: float adversarial samples -> real files (8-bit PNG, JPEG coefficients, or floats).

A registry of quantizers sharing one contract (:mod:`.base`): ``names()``, ``spec(name)``,
``run(name, model, x0, x_adv, y, ...)``. The registered rules: ``smart`` (§7.2), ``round``, ``none``
(:mod:`.spatial`), ``jpeg`` (§7.3), ``jpeg-pixels`` (:mod:`.jpeg`), ``scaled`` (:mod:`.scaled`),
``gina`` (:mod:`.stego`); modifiers make the rest (:mod:`.grammar`: ``smart+cost:hill``,
``scaled+walk:int:49+prune:1``, ``+margin:0.1``), today's names (``lattice-int``, ``hill``,
``smart-prune``...) being aliases of :data:`~.grammar.ALIASES`.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import QUANTIZERS, QuantizedImages, QuantizerSpec, UnknownQuantizerError, critical_lambda, register
from .spatial import admissible_bounds, lambda_c, quantize_at, quantize_spatial, round_pixels
from .jpeg import quantize_jpeg  # noqa: E402  (registers "jpeg" after the spatial ones)
from .stego import quantize_gina  # noqa: E402,F401  (registers "gina")
from .scaled import quantize_scaled  # noqa: E402  (registers "scaled")
from .lattice import quantize_lattice  # noqa: E402
from .grammar import ALIASES, RULES, Recipe, names, parse, spec  # noqa: E402  (rules, aliases, spec strings)


#: the default quantizer name, resolved by :func:`default_quantizer` (engine settings, CLI)
AUTO = "auto"


def default_quantizer(black_box: bool, steps: int) -> str:
    """``auto``: for gradient attacks, the longest lattice walk that leaves the attack at least as
    many gradients as it takes: ``lattice-int`` (50) for steps >= 100, ``lattice`` (31) for
    steps >= 62; else ``scaled`` (no gradient; black-box outputs are integers already). At 100
    gradients on 100 images (docs/results.md), BP 50 + ``lattice-int`` files cost 0.146, BP 69 +
    ``lattice`` 0.148, BP 97 + ``scaled`` 0.159."""
    if black_box:
        return "scaled"
    for name in ("lattice-int", "lattice"):
        if steps >= 2 * spec(name).gradients:
            return name
    return "scaled"


def run(name: str, model: nn.Module, x0: Tensor, x_adv: Tensor, y, **options) -> QuantizedImages:
    """Run the registered quantizer ``name`` (options: df, quality, targeted, cost, steps)."""
    return spec(name).run(model, x0, x_adv, y, **options)


__all__ = ["ALIASES", "AUTO", "QUANTIZERS", "RULES", "Recipe", "parse", "QuantizedImages", "QuantizerSpec", "UnknownQuantizerError", "admissible_bounds", "critical_lambda", "default_quantizer",
           "lambda_c", "names", "quantize_at", "quantize_jpeg", "quantize_lattice", "quantize_scaled", "quantize_spatial", "register", "round_pixels", "run",
           "spec"]
