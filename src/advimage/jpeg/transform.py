"""The JPEG transform ``J`` of thesis Sect. 7.3.1 as differentiable torch ops.

``X = J x + C`` maps float pixels to *scaled* DCT coefficients (the numbers that a JPEG file
stores after rounding). It is the composition of

1. RGB -> YCbCr with the JFIF constants used by libjpeg (``jccolor.c``), level-shifted by
   -128 on every channel (so that ``C`` only touches the DC coefficients of Y),
2. the orthonormal 8x8 block DCT-II, which is exactly the JPEG FDCT (libjpeg's integer
   DCT computes it with 13-bit fixed point and an extra factor 8 that its quantizer divides out),
3. division by the quantization steps of a quality factor (libjpeg's ``jpeg_set_quality``:
   ``jpeg_quality_scaling`` + ``jpeg_add_quant_table`` with ``force_baseline``); the luminance
   table for Y and the chrominance table for Cb and Cr.

No chroma subsampling (4:4:4) and no rounding anywhere: the transform is affine and exactly
invertible, as the thesis assumes (Sect. 7.4.1). A real encoder additionally rounds the
YCbCr samples to integers and computes the DCT in fixed point, so ``round(to_dct(x))`` equals
libjpeg's coefficients up to rare off-by-one differences at rounding boundaries.

Layout. Coefficients are (N, 3, H8/8, W8/8, 8, 8): channel (Y, Cb, Cr), block row, block
column, then the frequency bin in natural (not zigzag) order ``[v, u]`` = [vertical, horizontal]
frequency -- the same layout as ``jpeglib``'s ``DCTJPEG.Y`` etc. Quantization tables are
(2, 8, 8) in the same natural order (luminance, chrominance).

Sizes that are not multiples of 8. ``to_dct`` pads the image on the bottom and right to
``H8 = 8*ceil(H/8)``, ``W8 = 8*ceil(W/8)`` by edge replication, as libjpeg does to fill the
last MCU (``expand_right_edge`` / bottom-row replication in ``jcprepct.c``); ``from_dct``
returns the padded image unless ``size=(H, W)`` is given, in which case it crops to it. The
padding is linear, so ``x -> J(pad(x))`` stays linear and ``from_dct(to_dct(x), size=x.shape[-2:])``
is the identity.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 8

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural order.
ANNEX_K_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
ANNEX_K_CHROMINANCE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

# JFIF RGB -> YCbCr (libjpeg jccolor.c), without the +128 offsets of Cb and Cr.
RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)


def quality_scaling(quality: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: quality 1..100 -> percentage scale factor."""
    quality = min(max(int(quality), 1), 100)
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def quant_tables(quality: int, force_baseline: bool = True) -> Tensor:
    """Quantization steps of a libjpeg quality factor, (2, 8, 8) float64, natural order.

    Index 0 is the luminance table (Y), 1 the chrominance table (Cb, Cr). Each step is
    ``(base * scale + 50) // 100`` clamped to [1, 32767], then to [1, 255] when
    ``force_baseline`` (as ``jpeg_add_quant_table`` does; Pillow and cjpeg force baseline).
    """
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    scale = quality_scaling(quality)
    base = torch.tensor([ANNEX_K_LUMINANCE, ANNEX_K_CHROMINANCE], dtype=torch.int64)
    steps = ((base * scale + 50) // 100).clamp(1, 32767)
    if force_baseline:
        steps = steps.clamp(max=255)
    return steps.double()


def channel_steps(quality: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Quantization steps per channel (3, 8, 8): luminance for Y, chrominance for Cb and Cr."""
    qt = quant_tables(quality)
    return qt[[0, 1, 1]].to(device=device, dtype=dtype)


@lru_cache(maxsize=None)
def _dct_matrix() -> Tensor:
    """Orthonormal 8-point DCT-II matrix D (8, 8) float64: ``coeffs = D @ samples``."""
    k = torch.arange(BLOCK, dtype=torch.float64)[:, None]
    n = torch.arange(BLOCK, dtype=torch.float64)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / (2 * BLOCK)) * math.sqrt(2 / BLOCK)
    d[0] /= math.sqrt(2)
    return d


def _color(dtype: torch.dtype, device: torch.device | None, inverse: bool) -> Tensor:
    m = torch.tensor(RGB_TO_YCBCR, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)  # exact inverse, so that J^-1 J = I in float
    return m.to(device=device, dtype=dtype)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """JFIF colour conversion of pixels (N, 3, H, W) in [0, 255] -> YCbCr in [0, 255] (float)."""
    offset = torch.tensor([0.0, 128.0, 128.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.einsum("ij,njhw->nihw", _color(x.dtype, x.device, False), x) + offset


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr`, (N, 3, H, W) float, no rounding or clipping."""
    offset = torch.tensor([0.0, 128.0, 128.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.einsum("ij,njhw->nihw", _color(x.dtype, x.device, True), x - offset)


def padded_size(h: int, w: int) -> tuple[int, int]:
    """Size (H8, W8) of the full 8x8 blocks covering an (h, w) image (4:4:4 MCUs)."""
    return BLOCK * math.ceil(h / BLOCK), BLOCK * math.ceil(w / BLOCK)


def pad_to_blocks(x: Tensor) -> Tensor:
    """Replicate the last row and column of (N, C, H, W) up to multiples of 8 (as libjpeg)."""
    h, w = x.shape[-2:]
    h8, w8 = padded_size(h, w)
    if (h8, w8) == (h, w):
        return x
    return F.pad(x, (0, w8 - w, 0, h8 - h), mode="replicate")


def block_dct(x: Tensor) -> Tensor:
    """Orthonormal 8x8 block DCT-II: (N, C, H, W), H, W multiples of 8 -> (N, C, H/8, W/8, 8, 8)."""
    n, c, h, w = x.shape
    if h % BLOCK or w % BLOCK:
        raise ValueError(f"block_dct needs sizes that are multiples of 8, got {h}x{w}; use pad_to_blocks")
    d = _dct_matrix().to(device=x.device, dtype=x.dtype)
    blocks = x.reshape(n, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5)
    return d @ blocks @ d.T  # [v, u] = sum_{y,x} D[v,y] b[y,x] D[u,x]


def block_idct(coeffs: Tensor) -> Tensor:
    """Inverse of :func:`block_dct`: (N, C, Hb, Wb, 8, 8) -> (N, C, 8*Hb, 8*Wb)."""
    n, c, hb, wb = coeffs.shape[:4]
    d = _dct_matrix().to(device=coeffs.device, dtype=coeffs.dtype)
    blocks = d.T @ coeffs @ d
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hb * BLOCK, wb * BLOCK)


def apply_j(d: Tensor, quality: int) -> Tensor:
    """The linear part ``J d`` of the transform, for a perturbation or gradient d (N, 3, H, W).

    Colour matrix without offsets, edge-replication padding, block DCT, division by the
    steps. Returns (N, 3, H8/8, W8/8, 8, 8). ``to_dct(x) = apply_j(x - 128)``.
    """
    _check_pixels(d)
    ycc = torch.einsum("ij,njhw->nihw", _color(d.dtype, d.device, False), d)
    steps = channel_steps(quality, d.device, d.dtype)
    return block_dct(pad_to_blocks(ycc)) / steps[None, :, None, None]


def apply_j_inverse(coeffs: Tensor, quality: int, size: tuple[int, int] | None = None) -> Tensor:
    """``J^-1`` of the linear part: (N, 3, Hb, Wb, 8, 8) -> (N, 3, H, W), cropped to ``size``."""
    if coeffs.ndim != 6 or coeffs.shape[1] != 3 or coeffs.shape[-2:] != (BLOCK, BLOCK):
        raise ValueError(f"coefficients must be (N, 3, Hb, Wb, 8, 8), got {tuple(coeffs.shape)}")
    if not coeffs.is_floating_point():
        coeffs = coeffs.float()
    steps = channel_steps(quality, coeffs.device, coeffs.dtype)
    ycc = block_idct(coeffs * steps[None, :, None, None])
    x = torch.einsum("ij,njhw->nihw", _color(ycc.dtype, ycc.device, True), ycc)
    if size is not None:
        h, w = size
        x = x[..., :h, :w]
    return x


def to_dct(x: Tensor, quality: int) -> Tensor:
    """``X = J x + C``: float pixels (N, 3, H, W) in [0, 255] -> scaled DCT coefficients.

    Returns float (N, 3, ceil(H/8), ceil(W/8), 8, 8) in the input's float dtype (float32 for
    integer input). ``round(to_dct(x, q))`` is what a 4:4:4 libjpeg encoder at quality q stores.
    """
    _check_pixels(x)
    x = x if x.is_floating_point() else x.float()
    return apply_j(x - 128.0, quality)  # the level shift is C = J(-128)


def from_dct(coeffs: Tensor, quality: int, size: tuple[int, int] | None = None) -> Tensor:
    """``x = J^-1 (X - C)``: coefficients (N, 3, Hb, Wb, 8, 8) -> float pixels (N, 3, H, W).

    No rounding or clipping (a decoder would round and clip to [0, 255]; see
    :func:`decode_like_libjpeg`). ``size=(H, W)`` crops the padded 8*Hb x 8*Wb image.
    """
    return apply_j_inverse(coeffs, quality, size) + 128.0


def soft_roundtrip(x: Tensor, quality: int, *, subsampling: bool = False) -> Tensor:
    """A differentiable stand-in for a JPEG round trip of float pixels (N, 3, H, W) -> same shape.

    ``J^-1(round(X) + (X - round X)^3)`` per channel, with X = the quantized DCT coefficients of
    the YCbCr planes: Shin & Song's cubic approximation of rounding (NeurIPS-W 2017, "JPEG-resistant
    adversarial images"), whose derivative ``3 (X - round X)^2`` vanishes on coefficients
    that rounding pins (those near an integer, the zeros of flat areas included) and peaks on those
    about to flip. ``subsampling``: 4:2:0 as Pillow's default encoder, the chroma planes averaged
    over 2x2 pixels before their DCT and repeated after (libjpeg averages too; it upsamples with a
    triangle filter, which this ignores). For gradients (BPDA, Athalye et al. 2018): its values
    are close to a real encoder's, not equal (no rounding of YCbCr samples, no clipping).
    """
    _check_pixels(x)
    h, w = x.shape[-2:]
    ycc = rgb_to_ycbcr(x) - 128.0
    planes = [ycc[:, :1], ycc[:, 1:]]
    if subsampling:
        c = F.pad(planes[1], (0, w % 2, 0, h % 2), mode="replicate")
        planes[1] = F.avg_pool2d(c, 2)
    steps = quant_tables(quality).to(device=x.device, dtype=x.dtype)
    out = []
    for plane, step in zip(planes, steps):
        ph, pw = plane.shape[-2:]
        coeffs = block_dct(pad_to_blocks(plane)) / step
        r = coeffs.detach().round()
        out.append(block_idct((r + (coeffs - r) ** 3) * step)[..., :ph, :pw])
    if subsampling:
        out[1] = out[1].repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
    return ycbcr_to_rgb(torch.cat(out, 1) + 128.0)


def _fix(v: float, bits: int = 16) -> int:
    return int(v * (1 << bits) + 0.5)


def _descale(v: Tensor, n: int) -> Tensor:
    return torch.div(v + (1 << (n - 1)), 1 << n, rounding_mode="floor")  # arithmetic RIGHT_SHIFT


def _idct_1d_islow(c: list[Tensor], shift: int) -> list[Tensor]:
    """One 8-point pass of libjpeg's ``jpeg_idct_islow`` (jidctint.c, 13-bit constants)."""
    f = {k: _fix(v, 13) for k, v in dict(
        a=0.298631336, b=0.390180644, c=0.541196100, d=0.765366865, e=0.899976223, f=1.175875602,
        g=1.501321110, h=1.847759065, i=1.961570560, j=2.053119869, k=2.562915447, l=3.072711026).items()}
    z1 = (c[2] + c[6]) * f["c"]  # even part
    tmp2 = z1 - c[6] * f["h"]
    tmp3 = z1 + c[2] * f["d"]
    tmp0 = (c[0] + c[4]) * (1 << 13)
    tmp1 = (c[0] - c[4]) * (1 << 13)
    t10, t13, t11, t12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    o0, o1, o2, o3 = c[7], c[5], c[3], c[1]  # odd part
    z1, z2, z3, z4 = o0 + o3, o1 + o2, o0 + o2, o1 + o3
    z5 = (z3 + z4) * f["f"]
    o0, o1, o2, o3 = o0 * f["a"], o1 * f["j"], o2 * f["l"], o3 * f["g"]
    z1, z2, z3, z4 = -z1 * f["e"], -z2 * f["k"], -z3 * f["i"] + z5, -z4 * f["b"] + z5
    o0, o1, o2, o3 = o0 + z1 + z3, o1 + z2 + z4, o2 + z2 + z3, o3 + z1 + z4
    out = [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]
    return [_descale(v, shift) for v in out]


def idct_islow(coeffs: Tensor, quality: int) -> Tensor:
    """libjpeg's integer inverse DCT, bit-exact: (N, 3, Hb, Wb, 8, 8) integers -> YCbCr samples.

    Dequantizes with the tables of ``quality``, runs the two passes of ``jpeg_idct_islow``
    (columns then rows, PASS1_BITS = 2) and adds 128 with clipping to [0, 255], as libjpeg
    6b and libjpeg-turbo (Pillow's decoder) do. Returns int64 (N, 3, 8*Hb, 8*Wb).
    """
    steps = quant_tables(quality).long()[[0, 1, 1]].to(coeffs.device)
    c = coeffs.round().long() * steps[None, :, None, None]
    cols = _idct_1d_islow([c[..., k, :] for k in range(BLOCK)], 13 - 2)  # pass 1: along v
    ws = torch.stack(cols, dim=-2)
    rows = _idct_1d_islow([ws[..., k] for k in range(BLOCK)], 13 + 2 + 3)  # pass 2: along u
    blocks = (torch.stack(rows, dim=-1) + 128).clamp(0, 255)
    n, ch, hb, wb = blocks.shape[:4]
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, ch, hb * BLOCK, wb * BLOCK)


def decode_like_libjpeg(coeffs: Tensor, quality: int, size: tuple[int, int] | None = None) -> Tensor:
    """Batched emulation of a libjpeg decoder: integer coefficients -> pixels, float (N, 3, H, W).

    :func:`idct_islow` (the default DCT method of libjpeg 6b and libjpeg-turbo) followed by
    libjpeg's fixed-point YCbCr -> RGB (``jdcolor.c``, 16-bit scale) with clipping to [0, 255].
    Integral float values in [0, 255]. Not differentiable (use :func:`from_dct` for that).
    It reproduces Pillow's decoding of the file written by ``io.write_coefficients``; the
    file stays the reference (``io.roundtrip``).
    """
    ycc = idct_islow(coeffs, quality)
    if size is not None:
        ycc = ycc[..., : size[0], : size[1]]
    y, cb, cr = ycc[:, 0], ycc[:, 1] - 128, ycc[:, 2] - 128
    half = 1 << 15

    def shift(v: Tensor) -> Tensor:
        return torch.div(v, 1 << 16, rounding_mode="floor")

    r = y + shift(_fix(1.40200) * cr + half)
    g = y + shift(-_fix(0.34414) * cb - _fix(0.71414) * cr + half)
    b = y + shift(_fix(1.77200) * cb + half)
    return torch.stack([r, g, b], dim=1).clamp(0, 255).float()


def _check_pixels(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got shape {tuple(x.shape)}")
