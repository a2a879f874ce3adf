"""Smart quantization in the JPEG (DCT) domain, thesis Sect. 7.3 and protocol 7.4.1.

Given an original ``x0`` (integral pixels), a float adversarial ``x_adv`` from any attack and
a quality factor, find integer DCT coefficients ``X_q`` whose decoded JPEG file is adversarial
with the least distortion. With ``X = J x + C`` (:mod:`advimage.jpeg.transform`):

* protocol (7.4.1): if the plain JPEG of ``x0`` (``round(X_o)``) already fools the model, it
  is the result -- no gradient, one forward pass;
* otherwise one gradient ``g = grad L_adv(x_adv)`` (pixel domain) gives, for each lambda,
  ``X_q = clip([X_o - lambda/2 J g])`` (eq. 7.23 with ``X_a - U = X_o``) clipped to the
  admissible set of eq. 7.8 around ``X_a`` (``d_f``, see :func:`admissible_bounds`);
* lambda is sampled as ``lambda_c 10^{alpha_i}``, ``alpha_i = 2 (n - 2i) / n``, i = 0..n
  (eqs. 7.24-7.25) around ``lambda_c`` of eq. 7.16, tested from the smallest up; the first
  lambda whose *decoded* image is adversarial is kept (distortion grows with lambda).

Decoding inside the search is the bit-exact libjpeg emulation
(:func:`advimage.jpeg.transform.decode_like_libjpeg`); the result is then checked on the
real file (written with jpeglib, decoded by Pillow). Only if the file's pixels differ from the
emulation is the model queried again on them, so the verdict is always the file's.

Budget per image: at most 1 gradient and ``n + 3`` forward passes (1 plain JPEG check,
``n + 1`` lambda values -- fewer when clipping makes consecutive lambdas give the same
coefficients, which are then not re-submitted -- and 1 file check only on a mismatch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..jpeg.io import clamp_coefficients, roundtrip
from ..jpeg.transform import apply_j, decode_like_libjpeg, to_dct
from .spatial import admissible_bounds  # eq. 7.8, applied to X_a (u -> U) in the DCT domain


@dataclass
class JpegQuantizeResult:
    """What :func:`quantize_jpeg` returns; tensors on the input's device.

    coefficients: (N, 3, Hb, Wb, 8, 8) int32 quantized DCT coefficients (Y, Cb, Cr; natural
        order inside blocks), ready for ``advimage.jpeg.write_coefficients`` at ``quality``.
    pixels: (N, 3, H, W) float, integral values in [0, 255]: the decoded JPEG file.
    success: (N,) bool, whether the decoded file fools the model.
    distortion: (N,) float, eq. (6.2) of ``pixels`` against the original spatial ``x0``
        (not zero for the plain JPEG of ``x0``: the compression itself distorts).
    forwards: (N,) long, forward passes used (including the plain-JPEG check).
    gradients: (N,) long, gradient computations used (0 or 1).
    lam: (N,) float, the lambda kept; 0 where the plain JPEG of ``x0`` was kept; for a failure,
        the lambda with the lowest adversarial loss (whose coefficients are returned).
    quality: the JPEG quality factor of the coefficients.
    """

    coefficients: Tensor
    pixels: Tensor
    success: Tensor
    distortion: Tensor
    forwards: Tensor
    gradients: Tensor
    lam: Tensor
    quality: int


def lambda_grid(lam_c: Tensor, n: int) -> Tensor:
    """Eqs. 7.24-7.25: (N, n+1) values ``lam_c 10^{2(n-2i)/n}``, i = n..0 (increasing)."""
    i = torch.arange(n, -1, -1, dtype=lam_c.dtype, device=lam_c.device)
    return lam_c[:, None] * 10.0 ** (2 * (n - 2 * i) / n)


def critical_lambda(loss: Tensor, u: Tensor, g: Tensor) -> Tensor:
    """Eq. 7.16: ``lam_c = 2 (L_adv(x_a) - u^T g) / ||g||^2`` per image (N,).

    Where this is not a positive finite number (e.g. a zero gradient, or an ``x_a`` on the
    wrong side of its linearisation) the scale ``2 ||u|| / ||g||`` -- lambda for which the
    gradient step is as long as the perturbation -- is used instead, or 1 if g = 0.
    """
    g2 = g.flatten(1).pow(2).sum(1)
    lam = 2 * (loss - (u * g).flatten(1).sum(1)) / g2
    fallback = 2 * u.flatten(1).norm(dim=1) / g2.sqrt()
    fallback = torch.where(torch.isfinite(fallback) & (fallback > 0), fallback, torch.ones_like(fallback))
    return torch.where(torch.isfinite(lam) & (lam > 0), lam, fallback)


def _check(x0: Tensor, x_adv: Tensor, y: Tensor, quality: int, n: int) -> None:
    if x0.ndim != 4 or x0.shape[1] != 3 or x_adv.shape != x0.shape:
        raise ValueError(f"x0 and x_adv must both be (N, 3, H, W), got {tuple(x0.shape)} and {tuple(x_adv.shape)}")
    if y.shape != x0.shape[:1]:
        raise ValueError(f"y must have shape ({x0.shape[0]},), got {tuple(y.shape)}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def quantize_jpeg(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor, *, quality: int = 90,
                  df: float = 1, n: int = 10, targeted: bool = False, verify: bool = True) -> JpegQuantizeResult:
    """Quantize an adversarial sample to JPEG coefficients that stay adversarial (Sect. 7.3).

    model: float pixels (N, 3, H, W) in [0, 255] -> logits (N, C).
    x0: (N, 3, H, W) original pixels (integral values in [0, 255], any dtype).
    x_adv: (N, 3, H, W) float adversarial pixels from an attack on x0.
    y: (N,) long, true labels (or target labels when ``targeted``).
    quality: JPEG quality factor 1..100 (4:4:4, libjpeg tables). df: degree of freedom
    (0, 1, 2, ... or ``math.inf``). n: lambda grid has n + 1 values (eq. 7.25).
    verify: check the result on the real file (jpeglib writer, Pillow decoder).
    Sizes that are not multiples of 8 are padded by edge replication (see ``jpeg.transform``).
    """
    from ..attacks.base import LossOracle
    from ..distortion import distortion
    from ..losses import adversarial_loss

    _check(x0, x_adv, y, quality, n)
    N, size, dev = x0.shape[0], tuple(x0.shape[-2:]), x0.device
    x0, x_adv = x0.double(), x_adv.double()
    forwards = torch.zeros(N, dtype=torch.long, device=dev)
    gradients = torch.zeros(N, dtype=torch.long, device=dev)

    def query(x: Tensor, labels: Tensor) -> Tensor:
        """One counted forward pass of a sub-batch; returns the adversarial loss (M,)."""
        with torch.no_grad():
            return adversarial_loss(model(x.float()), labels, targeted)

    # Protocol 7.4.1: the plain JPEG of the original.
    X0 = to_dct(x0, quality)
    coeffs = clamp_coefficients(X0.round())
    pixels = decode_like_libjpeg(coeffs, quality, size)
    loss = query(pixels, y)
    forwards += 1
    success = loss < 0
    lam = torch.zeros(N, dtype=torch.float64, device=dev)

    todo = (~success).nonzero().squeeze(1)
    if todo.numel():
        x0s, xas, ys = x0[todo], x_adv[todo], y[todo]
        oracle = LossOracle(model, ys, targeted)
        loss_a, g, _ = oracle.loss_and_grad(xas.float())  # g = grad L_adv(x_a), pixel domain
        gradients[todo] += oracle.gradients
        g = g.double()
        u = xas - x0s                                       # eq. 7.1
        lams = lambda_grid(critical_lambda(loss_a.double(), u, g), n)
        jg = apply_j(g, quality)                            # J g, the gradient in the DCT domain
        x0d = X0[todo]
        lo, hi = admissible_bounds(to_dct(xas, quality), df)  # eq. 7.8 around X_a

        m = todo.numel()
        best_loss = torch.full((m,), math.inf, dtype=torch.float64, device=dev)
        best_X, best_px = coeffs[todo].clone(), pixels[todo].clone()
        best_lam = torch.zeros(m, dtype=torch.float64, device=dev)
        found = torch.zeros(m, dtype=torch.bool, device=dev)
        prev = torch.full_like(best_X, math.nan)
        for i in range(n + 1):
            active = (~found).nonzero().squeeze(1)
            if not active.numel():
                break
            lam_i = lams[active, i].view(-1, 1, 1, 1, 1, 1)
            # eq. 7.23: X_a + Q* = [X_o - lambda/2 J g], clipped to the admissible set
            xq = (x0d[active] - lam_i / 2 * jg[active]).round()
            xq = clamp_coefficients(torch.minimum(torch.maximum(xq, lo[active]), hi[active]))
            new = (xq != prev[active]).flatten(1).any(1)   # same coefficients: same verdict
            prev[active] = xq
            idx, xq = active[new], xq[new]
            if not idx.numel():
                continue
            px = decode_like_libjpeg(xq, quality, size)
            loss_i = query(px, ys[idx]).double()
            forwards[todo[idx]] += 1
            better = (loss_i < 0) | (~found[idx] & (loss_i < best_loss[idx]))
            sel = idx[better]
            best_loss[sel], best_X[sel], best_px[sel] = loss_i[better], xq[better], px[better]
            best_lam[sel] = lams[sel, i]
            found[idx] |= loss_i < 0

        coeffs[todo], pixels[todo], lam[todo], success[todo] = best_X, best_px, best_lam, found

    if verify:
        pixels, success = _verify(coeffs, pixels, success, y, quality, size, query, forwards)
    return JpegQuantizeResult(
        coefficients=coeffs.to(torch.int32), pixels=pixels.float(), success=success,
        distortion=distortion(pixels, x0).to(dev), forwards=forwards, gradients=gradients,
        lam=lam.float(), quality=int(quality),
    )


def _verify(coeffs: Tensor, pixels: Tensor, success: Tensor, y: Tensor, quality: int,
            size: tuple[int, int], query: Callable[[Tensor, Tensor], Tensor],
            forwards: Tensor) -> tuple[Tensor, Tensor]:
    """The file is the truth: decode the written files; re-query the model where they differ."""
    filed = roundtrip(coeffs.to(torch.int32), quality, size).to(pixels.dtype)
    differ = (filed != pixels).flatten(1).any(1).nonzero().squeeze(1)
    if differ.numel():
        loss = query(filed[differ], y[differ])
        forwards[differ] += 1
        success = success.clone()
        success[differ] = loss < 0
    return filed, success
