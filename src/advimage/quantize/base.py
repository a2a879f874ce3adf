"""The quantizer contract: one result type, a registry, and eq. 7.16.

A quantizer turns float adversarial samples into a real file format and says whether the
*quantized* images still satisfy the criterion::

    fn(model, x0, x_adv, criterion, *, df, quality, cost, steps) -> QuantizedImages

x0: (N, 3, H, W) original integral pixels; x_adv: (N, 3, H, W) float pixels in [0, 255];
criterion: labels are wrapped by :func:`advimage.criteria.as_criterion`. ``cost``: per-element
weights w > 0 of a quadratic cost Σ w k² on the integer perturbation k (pixels for spatial
quantizers, DCT coefficients for JPEG); None = ones = squared L2 (Ch. 7). Steganographic costs
(Ch. 8) plug in through it. ``steps``: the quantizer's forward-pass budget.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..registry import Registry, UnknownNameError


@dataclass
class QuantizedImages:
    """What every quantizer returns (tensors on the input's device, per image (N,) unless said).

    pixels: (N, 3, H, W) the image a victim decodes: uint8 for image formats (for JPEG, the
        decoded file), float32 for ``none``. coefficients: (N, 3, Hb, Wb, 8, 8) int32 JPEG
        coefficients, or None. success: the quantized image satisfies the criterion (model
        evaluated on ``pixels``). distortion: eq. 6.2 of ``pixels`` against x0. lam: the
        Lagrange multiplier kept (0 where not used, nan where the search failed).
    gradients, forwards: passes spent. suffix: file suffix. quality: JPEG quality or None.
    """

    pixels: Tensor
    success: Tensor
    distortion: Tensor
    lam: Tensor
    gradients: Tensor
    forwards: Tensor
    suffix: str
    coefficients: Tensor | None = None
    quality: int | None = None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def encode(self, i: int) -> bytes:
        """The file bytes of image ``i`` (PNG, JPEG or .npy by ``suffix``)."""
        from .. import codec
        from ..jpeg.io import encode_coefficients

        if self.suffix == ".npy":
            return codec.encode_npy(self.pixels[i])
        if self.suffix == ".jpg":
            if self.coefficients is None or self.quality is None:
                return codec.encode_jpeg(self.pixels[i].cpu(), self.quality or 90)
            return encode_coefficients(self.coefficients[i].cpu(), self.quality, tuple(self.pixels.shape[-2:]))
        return codec.encode_png(self.pixels[i].cpu())


QuantizerFn = Callable[..., QuantizedImages]


#: the options the engine may pass a quantizer; each quantizer's signature says which it takes
OPTIONS = ("targeted", "steps", "df", "quality", "cost")


class QuantizerOptionError(ValueError):
    """A quantizer was given an option it does not take (it would have been silently ignored)."""


@dataclass(frozen=True)
class QuantizerSpec:
    """A registered quantizer: its function, file suffix, the most gradients it uses per image
    (the engine keeps them inside the user's budget), and what it is.

    options: the keyword options its function takes (from its signature; anything else is refused
    by :meth:`run`). forwards: the most forward passes per image of a gradient-free quantizer, or
    None where it is the ``steps`` option (the λ or scale search); black-box rows count them as
    queries (:meth:`max_forwards`). canonical: its spec string (:mod:`.grammar`); margin: its own
    ``+margin:κ`` (None: the run's).
    """

    name: str
    fn: QuantizerFn
    suffix: str
    gradients: int
    description: str
    options: frozenset[str] = frozenset()
    forwards: int | None = None
    canonical: str = ""
    margin: float | None = None

    def __post_init__(self) -> None:
        if not self.canonical:
            object.__setattr__(self, "canonical", self.name)

    @property
    def uses_df(self) -> bool:
        return "df" in self.options

    @property
    def uses_quality(self) -> bool:
        return "quality" in self.options

    @property
    def uses_cost(self) -> bool:
        return "cost" in self.options

    def max_forwards(self, steps: int) -> int:
        """The most forward passes per image (gradient-free quantizers: what a black-box row pays)."""
        return self.forwards if self.forwards is not None else steps

    def run(self, model: Any, x0: Tensor, x_adv: Tensor, y: Any, **options: Any) -> QuantizedImages:
        """Run the quantizer; an option it does not take raises :class:`QuantizerOptionError`."""
        unknown = sorted(set(options) - self.options)
        if unknown:
            raise QuantizerOptionError(
                f"quantizer {self.name!r} takes no option {', '.join(unknown)} (its options: "
                f"{', '.join(sorted(self.options)) or 'none'})")
        return self.fn(model, x0, x_adv, y, **options)

    def settings(self, df: float, quality: int, cost: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"quantizer": self.name}
        if self.uses_df:
            out["df"] = df
        if self.uses_quality:
            out["quality"] = quality
        if cost:
            out["cost"] = cost
        return out


class UnknownQuantizerError(UnknownNameError):
    """A quantizer name (or spec string, :mod:`.grammar`) that does not resolve."""


#: the registered quantizers (the rules of :mod:`.grammar`), in registration order
QUANTIZERS: Registry[QuantizerSpec] = Registry("quantizer", UnknownQuantizerError)


def options_of(fn: QuantizerFn) -> frozenset[str]:
    """The keyword options ``fn`` takes; a catch-all ``**kwargs`` is refused (options would vanish)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(f"quantizer {fn.__name__!r}: name the options it takes instead of **kwargs "
                        f"(choose among {', '.join(OPTIONS)})")
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def register(name: str, *, suffix: str, gradients: int, description: str,
             forwards: int | None = None) -> Callable[[QuantizerFn], QuantizerFn]:
    """Register a quantizer function under ``name`` (decorator). Its keyword-only parameters, among
    :data:`OPTIONS`, are the options it takes; ``forwards``: see :class:`QuantizerSpec`."""
    def deco(fn: QuantizerFn) -> QuantizerFn:
        QUANTIZERS.register(name, QuantizerSpec(name, fn, suffix, gradients, description, options_of(fn), forwards),
                            description)
        return fn
    return deco


def registered() -> dict[str, QuantizerSpec]:
    """The registered quantizers (the rules); :func:`advimage.quantize.spec` also resolves the
    aliases and spec strings of :mod:`.grammar`."""
    return QUANTIZERS.entries()


def critical_lambda(loss: Tensor, u: Tensor, g: Tensor, cost: Tensor | None = None) -> Tensor:
    """Eq. 7.16: ``λ_c = 2 (L_adv(x_a) − uᵀg) / Σ g²/w`` per image (N,) (w = cost, ones by default).

    λ_c cancels the linearized loss for the unclipped minimizer k = −λ g / (2w). Where it is not
    a positive finite number (a zero gradient, or an ``x_a`` on the wrong side of its
    linearization), the scale ``2 ||u|| / ||g||`` (the step as long as the perturbation) is used,
    or 1 if that is not positive either.
    """
    g2 = (g.pow(2) if cost is None else g.pow(2) / cost).flatten(1).sum(1)
    lam = 2 * (loss - (u * g).flatten(1).sum(1)) / g2
    fallback = 2 * u.flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)
    fallback = torch.where(torch.isfinite(fallback) & (fallback > 0), fallback, torch.ones_like(fallback))
    return torch.where(torch.isfinite(lam) & (lam > 0), lam, fallback)


def check_cost(cost: Tensor | None, like: Tensor) -> Tensor | None:
    """Validate a cost map: the shape of ``like`` (or broadcastable), finite and > 0."""
    if cost is None:
        return None
    cost = cost.to(like.device, like.dtype)
    try:
        torch.broadcast_shapes(cost.shape, like.shape)
    except RuntimeError:
        raise ValueError(f"cost map of shape {tuple(cost.shape)} does not fit {tuple(like.shape)}") from None
    if not bool(torch.isfinite(cost).all()) or bool((cost <= 0).any()):
        raise ValueError("cost map must be finite and > 0 everywhere")
    return cost
