"""Differentiable resizers: Pillow's 8-bit resampler, the six downscalers of thesis Ch. 9, eval resize.

Thesis Ch. 9 (B. Bonnet 2023) treats the downscaler as the model's first linear layer ``D``
(``x = D X``, Sect. 9.3); an attack on the large image ``X`` gets its gradient through ``D^T``
(eq. 9.5). Everything here is a linear map on float pixels in [0, 255] (except the optional
Pillow rounding, whose backward is straight-through), so autograd provides ``D^T g``.

Conventions: images are float tensors (N, C, H, W) in pixel units [0, 255]; every ``size``
argument is ``(height, width)`` (torch order; Pillow's own ``Image.resize`` takes (w, h)).

Contents:

* :func:`pillow_coefficients`, :func:`pillow_resize`, :class:`PillowResize`: Pillow's
  ``ImagingResample`` (libImaging/Resample.c) for a full-image box, bit-exact on integral inputs
  (checked against Pillow 13.0.0 for all five filters). Pillow >= 13 does not always run the
  horizontal pass first: see :func:`pillow_vertical_first`. Pillow's Hamming filter uses the
  float constants ``0.54f``/``0.46f``, reproduced here.
* :data:`DOWNSCALERS`, :func:`downscale`, :class:`Downscaler`, :func:`kernel_size`: the six
  downscalers of Sect. 9.3 (nearest, bilinear, bicubic, area, BilAg, BilG).
* :data:`RESIZE_METHODS`, :func:`resize`, :class:`Resize`: the model's eval resize
  ("torch-<f>", "pil-<f>" or a thesis downscaler).
* :func:`shorter_side_size`, :func:`center_crop_box`, :class:`EvalTransform`: timm's eval
  transform (resize shorter side to ``floor(input_size / crop_pct)``, centre crop) on tensors.

Choices (where the thesis is ambiguous):

1. Kernel size ``k = ceil(L / l)`` (the thesis prints ``ceil(l / L)``, a typo: 600 -> 224 gives
   k = 3), computed **per axis**: ``k_h = ceil(H / h)`` for the height, ``k_w = ceil(W / w)`` for
   the width.
2. BilAg/BilG prefilter only the axes that shrink (``L > l``). An axis that keeps its size (or
   grows) is not blurred, so a same-size "downscale" is the identity for all six methods (as
   Table 9.1's b7 at 600, "no resizing").
3. BilG: ``sigma = 1.6 k`` ("inspired by SIFT"), taps ``exp(-t^2 / (2 sigma^2))`` on
   ``t = -r..r`` with ``r = ceil(3 sigma)`` (support ``2 r + 1``; 31 taps for k = 3), normalized to
   sum 1. A literal k x k support would make BilG almost BilAg, contradicting Table 9.2.
4. BilAg: k-tap average; for even k the extra tap is on the right/bottom (``(k - 1) // 2`` taps
   before, ``k // 2`` after, PyTorch's ``padding="same"`` convention).
5. Both prefilters are separable and use **reflect** padding (mirror without repeating the edge,
   as ``F.pad(mode="reflect")``), extended periodically when the pad exceeds the image, so
   constants stay constant and the map stays linear.
6. nearest/bilinear/bicubic/area: ``F.interpolate`` with ``antialias=False`` and
   ``align_corners=False`` (bilinear, bicubic); "nearest" is PyTorch's legacy nearest
   (source index ``floor(i * L / l)``), bicubic is PyTorch's (a = -0.75), "area" is
   ``mode="area"`` (adaptive average pooling). The bilinear step of BilAg/BilG is the same
   bilinear.
7. Outputs are floats, neither clipped nor quantized (Ch. 9 does not quantize); bicubic can
   overshoot [0, 255].
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PILLOW_FILTERS",
    "PRECISION_BITS",
    "pillow_coefficients",
    "pillow_resize",
    "pillow_vertical_first",
    "PILLOW_VERTICAL_FIRST_RULE",
    "PillowResize",
    "DOWNSCALERS",
    "kernel_size",
    "downscale",
    "Downscaler",
    "RESIZE_METHODS",
    "resize",
    "Resize",
    "shorter_side_size",
    "center_crop_box",
    "EvalTransform",
]

# ---------------------------------------------------------------------------------------------
# Pillow (libImaging/Resample.c)
# ---------------------------------------------------------------------------------------------

#: Resample.c: ``#define PRECISION_BITS (32 - 8 - 2)``.
PRECISION_BITS = 22
_ONE = float(1 << PRECISION_BITS)
_HALF = float(1 << (PRECISION_BITS - 1))


# Resample.c writes the Hamming constants as C floats (0.54f, 0.46f), promoted to double.
_F054 = struct.unpack("f", struct.pack("f", 0.54))[0]
_F046 = struct.unpack("f", struct.pack("f", 0.46))[0]


# The filters below copy Resample.c's C expressions operation by operation (Python floats are
# IEEE doubles, ``math.sin``/``math.cos`` are the C library's), so the weights are bit-identical.
def _box_filter(x: float) -> float:  # Resample.c: box_filter
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear_filter(x: float) -> float:  # Resample.c: bilinear_filter
    if x < 0.0:
        x = -x
    if x < 1.0:
        return 1.0 - x
    return 0.0


def _hamming_filter(x: float) -> float:  # Resample.c: hamming_filter
    if x < 0.0:
        x = -x
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (_F054 + _F046 * math.cos(x))


def _bicubic_filter(x: float) -> float:  # Resample.c: bicubic_filter, a = -0.5
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc_filter(x: float) -> float:  # Resample.c: sinc_filter
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos_filter(x: float) -> float:  # Resample.c: lanczos_filter (truncated sinc, a = 3)
    if -3.0 <= x < 3.0:
        return _sinc_filter(x) * _sinc_filter(x / 3)
    return 0.0


#: name -> (filter function, support) as Resample.c's ``struct filter`` BOX ... LANCZOS.
PILLOW_FILTERS: dict[str, tuple[Callable[[float], float], float]] = {
    "box": (_box_filter, 0.5),
    "bilinear": (_bilinear_filter, 1.0),
    "hamming": (_hamming_filter, 1.0),
    "bicubic": (_bicubic_filter, 2.0),
    "lanczos": (_lanczos_filter, 3.0),
}


def _compute_coefficients(in_size: int, out_size: int, filter: str) -> tuple[Tensor, Tensor]:
    if filter not in PILLOW_FILTERS:
        raise ValueError(f"unknown Pillow filter {filter!r}; valid: {', '.join(PILLOW_FILTERS)}")
    if int(in_size) != in_size or int(out_size) != out_size or in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive integers, got in_size={in_size}, out_size={out_size}")
    fn, filter_support = PILLOW_FILTERS[filter]
    # Resample.c: precompute_coeffs(inSize, in0=0, in1=inSize, outSize, ...)
    scale = filterscale = float(in_size) / out_size
    if filterscale < 1.0:
        filterscale = 1.0
    support = filter_support * filterscale
    ss = 1.0 / filterscale  # Pillow multiplies by the reciprocal (not a division by filterscale)
    real = torch.zeros(out_size, in_size, dtype=torch.float64)
    fixed = torch.zeros(out_size, in_size, dtype=torch.int64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # C (int) cast truncates toward zero
        xmax = min(int(center + support + 0.5), in_size)
        ws = [fn((x - center + 0.5) * ss) for x in range(xmin, xmax)]  # x here = x + xmin in C
        ww = 0.0
        for w in ws:
            ww += w
        if ww != 0.0:
            ws = [w / ww for w in ws]
        # Resample.c: normalize_coeffs_8bpc, (int) truncation toward zero
        ks = [int(-0.5 + w * _ONE) if w < 0 else int(0.5 + w * _ONE) for w in ws]
        real[xx, xmin:xmax] = torch.tensor(ws, dtype=torch.float64)
        fixed[xx, xmin:xmax] = torch.tensor(ks, dtype=torch.int64)
    return real, fixed


def pillow_coefficients(in_size: int, out_size: int, filter: str = "bicubic") -> tuple[Tensor, Tensor]:
    """Pillow's 1-D resampling weights for a full-image resize ``in_size -> out_size``.

    Reproduces ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` of libImaging/Resample.c with
    box = (0, in_size). ``filter``: one of :data:`PILLOW_FILTERS` ("bicubic", "bilinear", "box",
    "lanczos", "hamming").

    Returns ``(real, fixed)``: ``real`` float64 (out_size, in_size), the normalized weights
    (rows sum to 1); ``fixed`` int64 (out_size, in_size), the 8-bpc fixed-point weights
    (``PRECISION_BITS = 22``, rows sum to about 2^22). Output pixel ``i`` is
    ``sum_j W[i, j] * in[j]``.
    """
    return _compute_coefficients(int(in_size), int(out_size), filter)


@functools.lru_cache(maxsize=64)
def _fixed_matrix(in_size: int, out_size: int, filter: str) -> Tensor:
    """The fixed-point weights as float64 (out, in) on the CPU: integers, exact. Cached, do not modify."""
    return _compute_coefficients(int(in_size), int(out_size), filter)[1].to(torch.float64)


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _pillow_major() -> int:
    try:
        import PIL

        return int(PIL.__version__.split(".")[0])
    except (ImportError, ValueError):  # pragma: no cover - Pillow is a dependency
        return 13


#: Pillow >= 13 (python-pillow/Pillow PR #9549) runs the vertical pass first when the height
#: shrinks by more than twice as many pixels as the width (see :func:`pillow_vertical_first`);
#: older Pillow always runs the horizontal pass first. Follows the installed Pillow.
PILLOW_VERTICAL_FIRST_RULE: bool = _pillow_major() >= 13


def pillow_vertical_first(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether Pillow's ``ImagingResampleInner`` runs the vertical pass before the horizontal one.

    Only matters when both passes run (the 8-bit intermediate is rounded). Pillow >= 13:
    ``h < H and (H - h) > 2 * (W - w)``, found by testing Pillow 13.0.0 on thousands of size
    combinations (every case where the two orders give different pixels); Pillow < 13: never.
    """
    (H, W), (h, w) = in_hw, out_hw
    return PILLOW_VERTICAL_FIRST_RULE and h < H and (H - h) > 2 * (W - w)


def _pillow_apply(x: Tensor, kh: Tensor | None, kw: Tensor | None, rounding: bool,
                  vertical_first: bool | None = None) -> Tensor:
    """Apply the fixed-point weights (float64 integers) in Pillow's order; x float64 (..., H, W).
    vertical_first: Pillow's pass order (default: :func:`pillow_vertical_first` of these shapes)."""
    if not rounding:
        y = x
        if kw is not None:
            y = y @ (kw / _ONE).T
        if kh is not None:
            y = (kh / _ONE) @ y
        return y

    def clip8(s: Tensor) -> Tensor:  # Resample.c: ss0 = 1 << (PRECISION_BITS - 1); ...; clip8(ss0)
        return torch.floor((s + _HALF) / _ONE).clamp_(0.0, 255.0)

    # Resample.c ImagingResampleInner: ImagingResampleHorizontal_8bpc then ImagingResampleVertical_8bpc
    # on the 8-bit intermediate, or the other way round (pillow_vertical_first)
    if vertical_first is None and kh is not None and kw is not None:
        vertical_first = pillow_vertical_first((x.shape[-2], x.shape[-1]), (kh.shape[0], kw.shape[0]))
    if kh is not None and kw is not None and vertical_first:
        return clip8(clip8(kh @ x) @ kw.T)
    y = x
    if kw is not None:
        y = clip8(y @ kw.T)
    if kh is not None:
        y = clip8(kh @ y)
    return y


class _StraightThrough(torch.autograd.Function):
    """Value: the exact 8-bit output (computed without gradient); gradient: the transpose of the
    fixed-point linear map, ``Khᵀ g Kw / 2^44``, in the gradient's precision (the order of the two
    passes does not matter for a linear map)."""

    @staticmethod
    def forward(ctx, x: Tensor, exact: Tensor, kh: Tensor | None, kw: Tensor | None) -> Tensor:
        ctx.kh, ctx.kw = kh, kw
        return exact

    @staticmethod
    def backward(ctx, g: Tensor):
        if ctx.kh is not None:
            g = (ctx.kh.to(g.dtype) / _ONE).T @ g
        if ctx.kw is not None:
            g = g @ (ctx.kw.to(g.dtype) / _ONE)
        return g, None, None, None


def _pillow_forward(x: Tensor, kh: Tensor | None, kw: Tensor | None, rounding: bool,
                    vertical_first: bool | None = None) -> Tensor:
    """Shared body of :func:`pillow_resize` and :class:`PillowResize` (weights on x's device)."""
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    if kh is None and kw is None:
        return x.to(out_dtype)
    xd = x.detach().to(torch.float64) if rounding else x.to(torch.float64)
    if not rounding:
        out = _pillow_apply(xd, kh, kw, rounding=False)
    else:
        with torch.no_grad():
            exact = _pillow_apply(xd.detach(), kh, kw, rounding=True, vertical_first=vertical_first)
        if torch.is_grad_enabled() and x.requires_grad:
            # straight-through: value = exact Pillow output, gradient = the fixed-point linear map
            return _StraightThrough.apply(x, exact.to(out_dtype), kh, kw)
        out = exact
    return out.to(out_dtype)


def pillow_resize(x: Tensor, size: tuple[int, int], filter: str = "bicubic", rounding: bool = True) -> Tensor:
    """Pillow's ``Image.resize`` (8-bit path of libImaging/Resample.c ``ImagingResampleInner``) on tensors.

    x: float (..., H, W), typically (N, C, H, W), pixels in [0, 255]. size: ``(h, w)`` (torch
    order, Pillow's ``resize`` takes (w, h)). Returns (..., h, w) of x's dtype (float32 for
    integer inputs).

    A horizontal pass (skipped when ``w == W``) and a vertical one (skipped when ``h == H``),
    each with :func:`pillow_coefficients`' fixed-point weights ``k``; horizontal first, except
    where Pillow >= 13 runs the vertical one first (:func:`pillow_vertical_first`).

    * ``rounding=True``: each pass computes ``clip8((2^21 + sum_i x_i k_i) >> 22)`` (round, clip
      to [0, 255]) as Pillow does, so for integral inputs the value equals
      ``np.asarray(Image.fromarray(u8).resize((w, h), filter))`` bit for bit. Non-integral inputs
      are used as they are (no prior quantization). The backward is straight-through: the
      gradient of the ``rounding=False`` map.
    * ``rounding=False``: the plain linear map with weights ``k / 2^22`` (no rounding, no clipping).

    Computed in float64 with matmuls on x's device (integer sums < 2^31, exact).
    """
    if filter not in PILLOW_FILTERS:
        raise ValueError(f"unknown Pillow filter {filter!r}; valid: {', '.join(PILLOW_FILTERS)}")
    h, w = _pair(size)
    H, W = x.shape[-2], x.shape[-1]
    kw = _fixed_matrix(W, w, filter).to(x.device) if w != W else None  # Resample.c: need_horizontal
    kh = _fixed_matrix(H, h, filter).to(x.device) if h != H else None  # Resample.c: need_vertical
    return _pillow_forward(x, kh, kw, rounding)


_MODULE_CACHE_SIZE = 16


def _used(k: Tensor) -> tuple[int, int]:
    """First and one-past-last input index read by the rows of k (out, in)."""
    cols = (k != 0).any(0).nonzero().flatten()
    return (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (0, 1)


def pillow_resize_crop(x: Tensor, size: tuple[int, int], top: int, left: int, crop: tuple[int, int],
                       filter: str = "bicubic") -> Tensor:
    """``pillow_resize(x, size, filter)[..., top:top + ch, left:left + cw]`` (rounding, straight-through
    gradient), computing only what the crop needs: the output rows and columns kept and the input
    pixels their windows read. Same values to the bit (each output pixel depends only on its
    window; Pillow's pass order is decided on the full sizes)."""
    if filter not in PILLOW_FILTERS:
        raise ValueError(f"unknown Pillow filter {filter!r}; valid: {', '.join(PILLOW_FILTERS)}")
    h, w = size
    ch, cw = crop
    H, W = x.shape[-2], x.shape[-1]
    kh = kw = None
    if w != W:
        kw = _fixed_matrix(W, w, filter)[left:left + cw]
        c0, c1 = _used(kw)
        x, kw = x[..., c0:c1], kw[:, c0:c1].to(x.device)
    else:
        x = x[..., left:left + cw]
    if h != H:
        kh = _fixed_matrix(H, h, filter)[top:top + ch]
        r0, r1 = _used(kh)
        x, kh = x[..., r0:r1, :], kh[:, r0:r1].to(x.device)
    else:
        x = x[..., top:top + ch, :]
    return _pillow_forward(x, kh, kw, True, vertical_first=pillow_vertical_first((H, W), (h, w)))


class PillowResize(nn.Module):
    """Module form of :func:`pillow_resize`; weights cached per (input size, output size, device)
    (at most 16 entries, oldest dropped first).

    size: ``(h, w)`` output; filter: a Pillow filter name; rounding: see :func:`pillow_resize`.
    forward: (N, C, H, W) float in [0, 255] -> (N, C, h, w).
    """

    def __init__(self, size: int | tuple[int, int], filter: str = "bicubic", rounding: bool = True) -> None:
        super().__init__()
        if filter not in PILLOW_FILTERS:
            raise ValueError(f"unknown Pillow filter {filter!r}; valid: {', '.join(PILLOW_FILTERS)}")
        self.size = _pair(size)
        self.filter = filter
        self.rounding = rounding
        self._cache: dict[tuple[int, int, torch.device], Tensor] = {}

    def _weights(self, n_in: int, n_out: int, device: torch.device) -> Tensor | None:
        if n_in == n_out:
            return None
        key = (n_in, n_out, device)
        if key not in self._cache:
            if len(self._cache) >= _MODULE_CACHE_SIZE:  # bounded: inputs of many sizes (a data set)
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = _fixed_matrix(n_in, n_out, self.filter).to(device)
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.size
        kw = self._weights(x.shape[-1], w, x.device)
        kh = self._weights(x.shape[-2], h, x.device)
        return _pillow_forward(x, kh, kw, self.rounding)

    def extra_repr(self) -> str:
        return f"size={self.size}, filter={self.filter!r}, rounding={self.rounding}"


# ---------------------------------------------------------------------------------------------
# The six downscalers of thesis Sect. 9.3
# ---------------------------------------------------------------------------------------------

DOWNSCALERS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "area", "bilag", "bilg")


def kernel_size(large: int, small: int) -> int:
    """Thesis Sect. 9.3 prefilter size ``k = ceil(L / l)`` (printed ``ceil(l / L)``, a typo); 1 when ``L <= l``."""
    if large < 1 or small < 1:
        raise ValueError(f"sizes must be positive, got large={large}, small={small}")
    return -(-int(large) // int(small))


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a reflect-padded axis (mirror without the edge, periodic for any pad length)."""
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _filter_axis(x: Tensor, taps: Tensor, before: int, dim: int) -> Tensor:
    """Correlate (N, C, H, W) x with 1-D ``taps`` along ``dim`` (2 or 3), reflect-padded, same size."""
    k = taps.numel()
    n = x.shape[dim]
    idx = _reflect_index(n, before, k - 1 - before, x.device)
    xp = x.index_select(dim, idx)
    N, C = x.shape[:2]
    xp = xp.reshape(N * C, 1, *xp.shape[2:])
    weight = taps.to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, k, 1) if dim == 2 else weight.view(1, 1, 1, k)
    y = F.conv2d(xp, weight)
    return y.reshape(N, C, *y.shape[2:])


def _box_taps(k: int) -> Tensor:
    return torch.full((k,), 1.0 / k, dtype=torch.float64)


def _gaussian_taps(k: int) -> Tensor:
    """Thesis Sect. 9.3 BilG: sigma = 1.6 k, support 2 ceil(3 sigma) + 1, normalized to sum 1."""
    sigma = 1.6 * k
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def _prefilter(x: Tensor, size: tuple[int, int], gaussian: bool) -> Tensor:
    """BilAg/BilG anti-alias prefilter on the axes that shrink (per-axis k = ceil(L / l))."""
    for dim, small in ((2, size[0]), (3, size[1])):
        large = x.shape[dim]
        if large <= small:  # choice 2: no prefilter on an axis that does not shrink
            continue
        k = kernel_size(large, small)
        if gaussian:
            taps = _gaussian_taps(k)
            x = _filter_axis(x, taps, (taps.numel() - 1) // 2, dim)
        else:
            x = _filter_axis(x, _box_taps(k), (k - 1) // 2, dim)
    return x


def _check_4d(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")


def downscale(x: Tensor, size: int | tuple[int, int], method: str) -> Tensor:
    """One of the six downscalers of thesis Sect. 9.3 (see the module's Choices).

    x: float (N, C, H, W) pixels in [0, 255]; size: ``(h, w)`` (an int means square);
    method: one of :data:`DOWNSCALERS`. Returns float (N, C, h, w), linear in x, differentiable.
    """
    if method not in DOWNSCALERS:
        raise ValueError(f"unknown downscaler {method!r}; valid: {', '.join(DOWNSCALERS)}")
    _check_4d(x)
    size = _pair(size)
    if tuple(x.shape[-2:]) == size:  # choice 2: same size is the identity for every method
        return x
    if method == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    if method == "area":
        return F.interpolate(x, size=size, mode="area")
    if method in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=method, align_corners=False, antialias=False)
    # "bilag" / "bilg": prefilter, then the same bilinear, applied as one matrix per axis (the
    # composition is linear and separable; a 1-channel conv2d with a long kernel is very slow on CPU)
    mh = _prefilter_bilinear_matrix(x.shape[-2], size[0], method, x.dtype, x.device)
    mw = _prefilter_bilinear_matrix(x.shape[-1], size[1], method, x.dtype, x.device)
    return torch.matmul(torch.matmul(mh, x), mw.T)


@functools.lru_cache(maxsize=32)
def _prefilter_bilinear_matrix(large: int, small: int, method: str, dtype: torch.dtype,
                               device: torch.device) -> Tensor:
    """(small, large) matrix of one axis of BilAg/BilG: the prefilter (reflect padding, only when
    the axis shrinks), then bilinear interpolation (align_corners False), computed in float64 by
    applying both to the identity."""
    eye = torch.eye(large, dtype=torch.float64).view(large, 1, large, 1)  # each column a basis signal
    if large > small:
        k = kernel_size(large, small)
        taps = _gaussian_taps(k) if method == "bilg" else _box_taps(k)
        before = (taps.numel() - 1) // 2 if method == "bilg" else (k - 1) // 2
        eye = _filter_axis(eye, taps, before, 2)
    out = F.interpolate(eye, size=(small, 1), mode="bilinear", align_corners=False, antialias=False)
    return out.view(large, small).T.contiguous().to(dtype=dtype, device=device)


class Downscaler(nn.Module):
    """Module form of :func:`downscale`: ``Downscaler(size, method)``; forward (N, C, H, W) -> (N, C, h, w)."""

    def __init__(self, size: int | tuple[int, int], method: str) -> None:
        super().__init__()
        if method not in DOWNSCALERS:
            raise ValueError(f"unknown downscaler {method!r}; valid: {', '.join(DOWNSCALERS)}")
        self.size = _pair(size)
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        return downscale(x, self.size, self.method)

    def extra_repr(self) -> str:
        return f"size={self.size}, method={self.method!r}"


# ---------------------------------------------------------------------------------------------
# The model's eval resize
# ---------------------------------------------------------------------------------------------

RESIZE_METHODS: tuple[str, ...] = DOWNSCALERS + ("torch-bicubic", "torch-bilinear", "pil-bicubic", "pil-bilinear")


def _check_method(method: str) -> None:
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; valid: {', '.join(RESIZE_METHODS)}")


def _torch_resize(x: Tensor, size: tuple[int, int], filter: str) -> Tensor:
    """torchvision's ``resize`` on a float tensor (antialias=True), as a user calling it gets."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    return TF.resize(x, list(size), interpolation=InterpolationMode(filter), antialias=True)


def resize(x: Tensor, size: int | tuple[int, int], method: str) -> Tensor:
    """Resize float (N, C, H, W) pixels to ``size = (h, w)`` with one of :data:`RESIZE_METHODS`.

    "torch-<f>": ``torchvision.transforms.functional.resize(x, [h, w], interpolation=<f>,
    antialias=True)``; "pil-<f>": :func:`pillow_resize` with ``rounding=True`` (Pillow's values,
    straight-through gradient); a thesis name: :func:`downscale`. Raises ``ValueError`` on an
    unknown name.
    """
    _check_method(method)
    size = _pair(size)
    if method.startswith("torch-"):
        return _torch_resize(x, size, method[len("torch-"):])
    if method.startswith("pil-"):
        return pillow_resize(x, size, method[len("pil-"):], rounding=True)
    return downscale(x, size, method)


class Resize(nn.Module):
    """Module form of :func:`resize`: ``Resize(size, method)``; forward (N, C, H, W) -> (N, C, h, w)."""

    def __init__(self, size: int | tuple[int, int], method: str) -> None:
        super().__init__()
        _check_method(method)
        self.size = _pair(size)
        self.method = method
        self._pil = PillowResize(self.size, method[len("pil-"):], rounding=True) if method.startswith("pil-") else None

    def forward(self, x: Tensor) -> Tensor:
        if self._pil is not None:
            return self._pil(x)
        return resize(x, self.size, self.method)

    def extra_repr(self) -> str:
        return f"size={self.size}, method={self.method!r}"


def shorter_side_size(h: int, w: int, short: int) -> tuple[int, int]:
    """Output ``(h, w)`` of torchvision ``Resize(short)``: the shorter side becomes ``short``, the
    longer ``int(short * long / shorter)`` (torchvision ``_compute_resized_output_size``)."""
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def center_crop_box(h: int, w: int, size: int) -> tuple[int, int]:
    """``(top, left)`` of torchvision's ``center_crop`` of ``size x size`` in an ``h x w`` image:
    ``int(round((h - size) / 2.0))`` (Python's round: half to even). Raises ``ValueError`` if the
    crop does not fit (torchvision would zero-pad)."""
    if size > h or size > w:
        raise ValueError(f"crop {size} does not fit in a {h}x{w} image")
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


class EvalTransform(nn.Module):
    """timm's eval transform on float tensors: resize the shorter side to
    ``floor(input_size / crop_pct)`` with :func:`resize` (``method``), then centre crop
    ``input_size x input_size`` (torchvision's convention, :func:`center_crop_box`).

    forward: float (N, 3, H, W) in [0, 255], any H, W -> (N, 3, input_size, input_size).
    """

    def __init__(self, input_size: int, crop_pct: float, method: str) -> None:
        super().__init__()
        _check_method(method)
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.input_size = int(input_size)
        self.crop_pct = float(crop_pct)
        self.method = method
        self.scale_size = math.floor(self.input_size / self.crop_pct)  # timm transforms_factory

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """``(h', w')`` after the shorter-side resize of an ``h x w`` input."""
        return shorter_side_size(h, w, self.scale_size)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x)
        H, W = x.shape[-2:]
        size = self.resized_size(H, W)
        top, left = center_crop_box(size[0], size[1], self.input_size)
        S = self.input_size
        if (H, W) == size:  # torchvision's resize returns the image unchanged when sizes match
            return x[..., top:top + S, left:left + S]
        if self.method.startswith("pil-"):  # only what the crop needs (same values, less work)
            return pillow_resize_crop(x, size, top, left, (S, S), self.method[len("pil-"):])
        x = resize(x, size, self.method)
        return x[..., top:top + S, left:left + S]

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, crop_pct={self.crop_pct}, method={self.method!r}"
