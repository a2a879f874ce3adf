"""JPEG compression as a reformer front-end (thesis Sect. 7.4.7), with BPDA for attacking it.

The forward pass is always the real thing: the input is rounded and clipped to uint8 pixels,
JPEG-compressed at ``quality`` (4:4:4, libjpeg tables) and decoded, then classified. JPEG is
not differentiable, so the backward pass is a choice (Backward Pass Differentiable
Approximation, Athalye et al. 2018), used by the "PGD2 BPDA" row of Table 7.1:

* ``"identity"``: straight-through, ``d out / d x = I`` (BPDA's usual choice for JPEG);
* ``"cubic"``: through the differentiable transform ``J`` of :mod:`advimage.jpeg.transform`
  with rounding of the coefficients replaced by ``round(X) + (X - round(X))^3`` (Shin & Song,
  2017), i.e. ``J^-1 diag(3 (X - round X)^2) J``, which damps the frequencies JPEG erases;
* ``"none"``: no gradient at all (the output is detached).

:func:`jpeg_float` is a reformer that is *not* the real thing, kept to measure where rounding
matters (``studies/jpeg_reformer_why.py``): JPEG's coefficient quantization in float
arithmetic, without rounding the input or the output to 8 bits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..jpeg.io import clamp_coefficients, compress
from ..jpeg.transform import decode_like_libjpeg, from_dct, soft_roundtrip, to_dct
from ..models.protocol import WrappedClassifier
from .registry import register

BACKWARDS = ("identity", "cubic", "none")
ENGINES = ("pillow", "torch")


def jpeg_compress(x: Tensor, quality: int, engine: str = "pillow") -> Tensor:
    """Real JPEG compression of float pixels (N, 3, H, W): round, clip, encode, decode -> float.

    engine "pillow": Pillow/libjpeg encoder and decoder (the reference). "torch": batched on
    the input's device, ``round(J x)`` then the bit-exact libjpeg decoder emulation; it
    differs from libjpeg's encoder on about 1% of the coefficients (integer YCbCr and DCT).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    xi = x.detach().round().clamp(0, 255)
    if engine == "pillow":
        return compress(xi.to(torch.uint8), quality).to(x.dtype)
    coeffs = clamp_coefficients(to_dct(xi.double(), quality).round())
    return decode_like_libjpeg(coeffs, quality, tuple(x.shape[-2:])).to(x.dtype)


def jpeg_float(x: Tensor, quality: int, *, rounded: bool = False) -> Tensor:
    """A float JPEG reformer: quantize the DCT coefficients of float pixels (N, 3, H, W), nothing else.

    ``J^-1(round(J x))`` with the transform of :mod:`advimage.jpeg.transform` (JFIF YCbCr,
    orthonormal 8x8 DCT-II, libjpeg's tables at ``quality``, 4:4:4): the input is not rounded to
    8 bits, the YCbCr samples and the DCT stay in float, and the output is neither rounded nor
    clipped, so it may hold non-integers and values outside [0, 255]. ``rounded=True`` rounds and
    clips the output to [0, 255] (a float codec writing 8-bit pixels). Same dtype as ``x``.

    Against libjpeg (``tests/test_defense_jpeg.py``): decoding a file's own coefficients this way
    lands within one level of libjpeg's decoder on over 99% of the pixels; end to end it differs
    more, because libjpeg's encoder rounds YCbCr to integers and uses an integer DCT (at quality
    90 about 1% of the coefficients differ by one step).
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) pixels, got {tuple(x.shape)}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    xd = x.detach().double()
    out = from_dct(to_dct(xd, int(quality)).round(), int(quality), tuple(x.shape[-2:]))
    if rounded:
        out = out.round().clamp(0, 255)
    return out.to(x.dtype if x.is_floating_point() else torch.float32)


class JpegCompression(nn.Module):
    """The reformer alone: pixels (N, 3, H, W) in [0, 255] -> JPEG-compressed pixels, float.

    The value is that of :func:`jpeg_compress`; the gradient follows ``backward``.
    """

    def __init__(self, quality: int = 75, backward: str = "identity", engine: str = "pillow") -> None:
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        if backward not in BACKWARDS:
            raise ValueError(f"unknown backward {backward!r}; valid: {', '.join(BACKWARDS)}")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
        self.quality, self.backward, self.engine = int(quality), backward, engine

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) pixels, got {tuple(x.shape)}")
        out = jpeg_compress(x, self.quality, self.engine)
        if self.backward == "none" or not x.requires_grad:
            return out
        if self.backward == "identity":
            approx = x
        else:  # "cubic": J^-1 (round(X) + (X - round X)^3), round(X) treated as a constant (4:4:4)
            approx = soft_roundtrip(x, self.quality)
        return approx + (out - approx).detach()  # value: true JPEG; gradient: approx's

    def extra_repr(self) -> str:
        return f"quality={self.quality}, backward={self.backward!r}, engine={self.engine!r}"


class JpegDefense(WrappedClassifier):
    """A classifier behind a JPEG reformer: ``model(jpeg(round(x)))``, logits (N, C).

    model: float pixels (N, 3, H, W) in [0, 255] -> logits. quality: JPEG quality 1..100.
    backward: BPDA gradient ("identity", "cubic" or "none"), see the module docstring.
    Implements the classifier protocol (:mod:`advimage.models.protocol`) when ``model`` does;
    a bare ``nn.Module`` works too (config and class names then come from nowhere).
    """

    def __init__(self, model: nn.Module, quality: int = 75, backward: str = "identity",
                 engine: str = "pillow") -> None:
        nn.Module.__init__(self)
        self.base = model
        self.front = JpegCompression(quality, backward, engine)
        self.config = getattr(model, "config", None)
        self.class_names = list(getattr(model, "class_names", []))
        self.eval()

    @property
    def model(self) -> nn.Module:
        return self.base

    @property
    def reformer(self) -> JpegCompression:
        return self.front

    @property
    def device(self) -> torch.device:
        return next(iter(list(self.base.parameters()) + list(self.base.buffers()))).device

    @property
    def quality(self) -> int:
        return self.reformer.quality


@register("jpeg", "JPEG compression at quality Q, a reformer (MODEL+jpeg:Q, default 75; thesis §7.4.7), BPDA "
          "identity gradient")
def jpeg_defense(model: nn.Module, quality: int = 75, backward: str = "identity",
                 engine: str = "pillow") -> JpegDefense:
    """``MODEL+jpeg:Q``: JPEG compression at quality Q (a reformer, :class:`JpegDefense`), BPDA identity gradient."""
    return JpegDefense(model, quality=quality, backward=backward, engine=engine)
