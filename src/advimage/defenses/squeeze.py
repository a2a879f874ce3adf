"""Squeezing reformers (thesis §5.3.2; Xu et al. 2018, "Feature Squeezing"): bit-depth reduction
and median smoothing in front of a classifier, with BPDA for attacking them.

* bit depth b (``MODEL+bits:B``, B in 1..8): ``q(x) = round(x / 255 · (2^b − 1)) · 255 / (2^b − 1)``
  on pixels in [0, 255] (Xu et al.'s ``rint(x · (2^b − 1)) / (2^b − 1)`` on [0, 1]; Guo et al.'s
  3-bit setting loses about 8% top-1 on ImageNet, thesis §5.3.2);
* median smoothing k×k (``MODEL+median:K``, K ≥ 2) per channel, as ``scipy.ndimage.median_filter(x,
  size=(1, 1, k, k), mode="reflect")`` that Xu et al.'s code calls: reflect padding repeats the edge
  pixel (``d c b a | a b c d | d c b a``, torch has no such mode), the window of pixel i covers
  offsets ``[−⌊k/2⌋, k − 1 − ⌊k/2⌋]`` (2×2: the pixel, its upper and left neighbours), and for an even
  window the median is the upper one of the two middle values (rank ⌊k²/2⌋ of the k² sorted values).

Both are deterministic, so EOT adds nothing; an adaptive gradient attack uses BPDA (Athalye et al.
2018), as :mod:`advimage.defenses.jpeg` does. ``backward``:

* ``"identity"`` (default): straight-through, forward squeezed, ``d out / d x = I``;
* ``"exact"``: autograd through the squeezer itself (median: the gradient goes to the pixel each
  window selects; bit depth: zero almost everywhere, the obfuscated gradient BPDA works around);
* ``"none"``: no gradient at all (the output is detached).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.protocol import WrappedClassifier
from .registry import register

BACKWARDS = ("identity", "exact", "none")


def _int_param(value, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or a ValueError naming the parameter."""
    bad = isinstance(value, bool) or not isinstance(value, (int, str)) or (
        isinstance(value, str) and not value.strip().lstrip("-").isdigit())
    if bad or not low <= int(value) <= (high if high is not None else int(value)):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {span}, got {value!r}")
    return int(value)


def check_bits(bits) -> int:
    return _int_param(bits, "bit depth (+bits:B)", 1, 8)


def check_window(size) -> int:
    return _int_param(size, "median window (+median:K)", 2, 64)


def bit_depth(x: Tensor, bits: int) -> Tensor:
    """Pixels (any shape, [0, 255]) reduced to ``2^bits`` levels, back on the [0, 255] scale."""
    levels = 2 ** check_bits(bits) - 1
    return torch.round(x.clamp(0, 255) * levels / 255.0) * 255.0 / levels  # k·255/levels: 0 and 255 exact


def _pad_symmetric(x: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Pad ``dim`` by repeating the edge: scipy's ``mode="reflect"`` (numpy's "symmetric")."""
    n = x.shape[dim]
    if before > n or after > n:
        raise ValueError(f"median window too large for an image side of {n} pixels")
    parts = [x.narrow(dim, 0, before).flip(dim)] if before else []
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, n - after, after).flip(dim))
    return torch.cat(parts, dim)


def median_filter(x: Tensor, size: int) -> Tensor:
    """k×k median per channel of (N, C, H, W), equal to ``scipy.ndimage.median_filter(x, size=(1, 1,
    k, k), mode="reflect")`` (see the module docstring). Differentiable: the gradient of each output
    goes to the input pixel its window selects."""
    k = check_window(size)
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    before, after = k // 2, k - 1 - k // 2
    xp = _pad_symmetric(_pad_symmetric(x, before, after, 2), before, after, 3)
    patches = F.unfold(xp.reshape(n * c, 1, h + k - 1, w + k - 1), k)  # (N·C, k², H·W)
    med = patches.sort(dim=1).values[:, (k * k) // 2]
    return med.reshape(n, c, h, w)


class _StraightThrough(torch.autograd.Function):
    """Value ``out`` exactly, gradient passed to ``x`` unchanged (BPDA identity)."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor) -> Tensor:  # noqa: D102
        return out.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return grad, None


class Squeezer(nn.Module):
    """A squeezer as a front-end layer: (N, 3, H, W) pixels -> squeezed pixels, float.

    The value is the squeezer's; the gradient follows ``backward`` (module docstring).
    Subclasses implement :meth:`squeeze` and :attr:`name`.
    """

    name = "squeezer"

    def __init__(self, backward: str = "identity") -> None:
        super().__init__()
        if backward not in BACKWARDS:
            raise ValueError(f"unknown backward {backward!r}; valid: {', '.join(BACKWARDS)}")
        self.backward = backward

    def squeeze(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) pixels, got {tuple(x.shape)}")
        if self.backward == "exact":
            return self.squeeze(x)
        out = self.squeeze(x.detach())
        if self.backward == "none" or not x.requires_grad:
            return out
        return _StraightThrough.apply(x, out)  # value: squeezed, exactly; gradient: identity (BPDA)


class BitDepth(Squeezer):
    """Bit-depth reduction to ``bits`` bits (1..8)."""

    def __init__(self, bits: int = 3, backward: str = "identity") -> None:
        super().__init__(backward)
        self.bits = check_bits(bits)

    @property
    def name(self) -> str:
        return f"bits:{self.bits}"

    def squeeze(self, x: Tensor) -> Tensor:
        return bit_depth(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, backward={self.backward!r}"


class MedianSmoothing(Squeezer):
    """k×k median smoothing (k ≥ 2), scipy's reflect padding."""

    def __init__(self, size: int = 2, backward: str = "identity") -> None:
        super().__init__(backward)
        self.size = check_window(size)

    @property
    def name(self) -> str:
        return f"median:{self.size}"

    def squeeze(self, x: Tensor) -> Tensor:
        return median_filter(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, backward={self.backward!r}"


class SqueezeDefense(WrappedClassifier):
    """A classifier behind a squeezer: ``model(squeeze(x))``, logits (N, C); ``self.squeezer`` is
    the front-end. Classifier protocol as :class:`~advimage.defenses.jpeg.JpegDefense`."""

    def __init__(self, model: nn.Module, squeezer: Squeezer) -> None:
        nn.Module.__init__(self)  # a bare nn.Module works too (no config, no class names)
        self.base = model
        self.front = squeezer
        self.config = getattr(model, "config", None)
        self.class_names = list(getattr(model, "class_names", []))
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(iter(list(self.base.parameters()) + list(self.base.buffers()))).device

    def class_name(self, index: int) -> str:
        return self.base.class_name(index) if hasattr(self.base, "class_name") else str(index)

    @property
    def squeezer(self) -> Squeezer:
        return self.front

    @property
    def model(self) -> nn.Module:
        return self.base


class BitDepthDefense(SqueezeDefense):
    """``model(bit_depth(x, bits))``; backward: BPDA choice (module docstring)."""

    def __init__(self, model: nn.Module, bits: int = 3, backward: str = "identity") -> None:
        super().__init__(model, BitDepth(bits, backward))


class MedianDefense(SqueezeDefense):
    """``model(median_filter(x, size))``; backward: BPDA choice (module docstring)."""

    def __init__(self, model: nn.Module, size: int = 2, backward: str = "identity") -> None:
        super().__init__(model, MedianSmoothing(size, backward))


@register("bits", "bit-depth reduction to B bits (MODEL+bits:B, 1..8; Xu et al. 2018), BPDA identity gradient")
def bits_defense(model: nn.Module, bits: int = 3, backward: str = "identity") -> BitDepthDefense:
    """``MODEL+bits:B``: bit-depth reduction to B bits (1..8), BPDA identity gradient."""
    return BitDepthDefense(model, bits=check_bits(bits), backward=backward)


@register("median", "K×K median smoothing (MODEL+median:K, K >= 2; Xu et al. 2018), BPDA identity gradient")
def median_defense(model: nn.Module, size: int = 2, backward: str = "identity") -> MedianDefense:
    """``MODEL+median:K``: K×K median smoothing (K >= 2), BPDA identity gradient."""
    return MedianDefense(model, size=check_window(size), backward=backward)


# the spec checks an argument before building (advimage.specs.check)
bits_defense.check_arg = check_bits  # type: ignore[attr-defined]
median_defense.check_arg = check_window  # type: ignore[attr-defined]
