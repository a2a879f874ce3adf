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
from typing import Callable

import torch
from torch import Tensor, nn

from ..criteria import Criterion, as_criterion
from ..jpeg.io import clamp_coefficients, roundtrip
from ..jpeg.transform import apply_j, decode_like_libjpeg, to_dct
from .base import QuantizedImages, check_cost, critical_lambda, register
from .spatial import admissible_bounds  # eq. 7.8, applied to X_a (u -> U) in the DCT domain

#: Before the engine's one result type; kept as a name for old imports.
JpegQuantizeResult = QuantizedImages


def lambda_grid(lam_c: Tensor, n: int) -> Tensor:
    """Eqs. 7.24-7.25: (N, n+1) values ``lam_c 10^{2(n-2i)/n}``, i = n..0 (increasing)."""
    i = torch.arange(n, -1, -1, dtype=lam_c.dtype, device=lam_c.device)
    return lam_c[:, None] * 10.0 ** (2 * (n - 2 * i) / n)


def _check(x0: Tensor, x_adv: Tensor, crit: Criterion, quality: int, n: int) -> None:
    if x0.ndim != 4 or x0.shape[1] != 3 or x_adv.shape != x0.shape:
        raise ValueError(f"x0 and x_adv must both be (N, 3, H, W), got {tuple(x0.shape)} and {tuple(x_adv.shape)}")
    if len(crit) != x0.shape[0]:  # type: ignore[arg-type]
        raise ValueError(f"y must have shape ({x0.shape[0]},), got {len(crit)} labels")  # type: ignore[arg-type]
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def quantize_jpeg(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, quality: int = 90,
                  df: float = 1, n: int = 10, targeted: bool = False, verify: bool = True,
                  cost: Tensor | None = None) -> QuantizedImages:
    """Quantize an adversarial sample to JPEG coefficients that stay adversarial (Sect. 7.3).

    model: float pixels (N, 3, H, W) in [0, 255] -> logits (N, C).
    x0: (N, 3, H, W) original pixels (integral values in [0, 255], any dtype).
    x_adv: (N, 3, H, W) float adversarial pixels from an attack on x0.
    y: (N,) long, true labels (or target labels when ``targeted``), or a criterion.
    quality: JPEG quality factor 1..100 (4:4:4, libjpeg tables). df: degree of freedom
    (0, 1, 2, ... or ``math.inf``). n: lambda grid has n + 1 values (eq. 7.25).
    verify: check the result on the real file (jpeglib writer, Pillow decoder).
    Sizes that are not multiples of 8 are padded by edge replication (see ``jpeg.transform``).
    cost: (N, 3, Hb, Wb, 8, 8) weights w > 0 of a quadratic cost Σ w k² on the coefficient
    changes (None: ones); the step becomes -λ J g / (2 w).
    Returns :class:`QuantizedImages` with ``pixels`` the decoded file (uint8) and ``coefficients``.
    """
    from ..distortion import distortion
    from ..oracle import LossOracle

    crit = as_criterion(y.to(x0.device) if isinstance(y, Tensor) else y, targeted)
    _check(x0, x_adv, crit, quality, n)
    N, size, dev = x0.shape[0], tuple(x0.shape[-2:]), x0.device
    x0, x_adv = x0.double(), x_adv.double()
    forwards = torch.zeros(N, dtype=torch.long, device=dev)
    gradients = torch.zeros(N, dtype=torch.long, device=dev)

    def query(x: Tensor, idx: Tensor) -> Tensor:
        """One forward pass of the images ``idx`` (counted by the caller); the criterion's loss (M,)."""
        with torch.no_grad():
            return crit.subset(idx).loss(model(x.float()))

    # Protocol 7.4.1: the plain JPEG of the original.
    X0 = to_dct(x0, quality)
    coeffs = clamp_coefficients(X0.round())
    pixels = decode_like_libjpeg(coeffs, quality, size)
    loss = query(pixels, torch.arange(N, device=dev))
    forwards += 1
    success = loss < 0
    lam = torch.zeros(N, dtype=torch.float64, device=dev)

    todo = (~success).nonzero().squeeze(1)
    if todo.numel():
        x0s, xas = x0[todo], x_adv[todo]
        oracle = LossOracle(model, crit.subset(todo), max_gradients=1)
        loss_a, g, _ = oracle.loss_and_grad(xas.float())  # g = grad L_adv(x_a), pixel domain
        gradients[todo] += oracle.gradients
        g = g.double()
        u = xas - x0s                                       # eq. 7.1
        jg = apply_j(g, quality)                            # J g, the gradient in the DCT domain
        w = check_cost(cost, X0)
        w = None if w is None else w[todo]
        # eq. 7.16 in the DCT domain (J is orthogonal up to the quantization steps: uᵀg = Uᵀ J⁻ᵀ g)
        lams = lambda_grid(critical_lambda(loss_a.double(), u, g) if w is None else
                           critical_lambda(loss_a.double(), to_dct(xas, quality) - to_dct(x0s, quality),
                                           _dct_gradient(g, quality), w), n)
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
            step = lam_i / 2 * jg[active] if w is None else lam_i / 2 * jg[active] / w[active]
            xq = (x0d[active] - step).round()
            xq = clamp_coefficients(torch.minimum(torch.maximum(xq, lo[active]), hi[active]))
            new = (xq != prev[active]).flatten(1).any(1)   # same coefficients: same verdict
            prev[active] = xq
            idx, xq = active[new], xq[new]
            if not idx.numel():
                continue
            px = decode_like_libjpeg(xq, quality, size)
            loss_i = query(px, todo[idx]).double()
            forwards[todo[idx]] += 1
            better = (loss_i < 0) | (~found[idx] & (loss_i < best_loss[idx]))
            sel = idx[better]
            best_loss[sel], best_X[sel], best_px[sel] = loss_i[better], xq[better], px[better]
            best_lam[sel] = lams[sel, i]
            found[idx] |= loss_i < 0

        coeffs[todo], pixels[todo], lam[todo], success[todo] = best_X, best_px, best_lam, found

    if verify:
        pixels, success = _verify(coeffs, pixels, success, quality, size, query, forwards)
    return QuantizedImages(
        pixels=pixels.round().clamp(0, 255).to(torch.uint8), success=success,
        distortion=distortion(pixels, x0).to(dev), lam=lam.float(), gradients=gradients, forwards=forwards,
        suffix=".jpg", coefficients=coeffs.to(torch.int32), quality=int(quality),
    )


def _dct_gradient(g: Tensor, quality: int) -> Tensor:
    """The gradient with respect to the coefficients X = J x + C: ``J⁻ᵀ g`` (same layout as X)."""
    from ..jpeg.transform import from_dct

    X = torch.zeros_like(to_dct(g, quality)).requires_grad_(True)
    with torch.enable_grad():
        (gx,) = torch.autograd.grad((from_dct(X, quality, tuple(g.shape[-2:])) * g).sum(), X)
    return gx


def _verify(coeffs: Tensor, pixels: Tensor, success: Tensor, quality: int,
            size: tuple[int, int], query: Callable[[Tensor, Tensor], Tensor],
            forwards: Tensor) -> tuple[Tensor, Tensor]:
    """The file is the truth: decode the written files; re-query the model where they differ."""
    filed = roundtrip(coeffs.to(torch.int32), quality, size).to(pixels.dtype)
    differ = (filed != pixels).flatten(1).any(1).nonzero().squeeze(1)
    if differ.numel():
        loss = query(filed[differ], differ)
        forwards[differ] += 1
        success = success.clone()
        success[differ] = loss < 0
    return filed, success


@register("jpeg", suffix=".jpg", gradients=1,
          description="§7.3 DCT-domain smart quantization, written as JPEG coefficients (jpeglib, 4:4:4)")
def jpeg(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1, quality: int = 90,
         targeted: bool = False, cost: Tensor | None = None, steps: int = 10) -> QuantizedImages:
    return quantize_jpeg(model, x0.float(), x_adv, y, quality=quality, df=df, n=steps, targeted=targeted, cost=cost)


@register("jpeg-pixels", suffix=".jpg", gradients=0, forwards=1,
          description="plain rounding, then a plain Pillow JPEG at --quality (the BPDA baseline's output)")
def jpeg_pixels(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, quality: int = 90,
                targeted: bool = False) -> QuantizedImages:
    """Round the attack's pixels and compress them with Pillow at ``quality``; success is the
    model's verdict on the decoded JPEG (one forward)."""
    from .. import codec
    from ..distortion import distortion
    from ..oracle import LossOracle

    xr = x_adv.detach().round().clamp(0, 255).to(torch.uint8).cpu()
    data = [codec.encode_jpeg(x, quality) for x in xr]
    pixels = (torch.stack([codec.decode(d) for d in data]) if data else xr).to(x0.device)
    oracle = LossOracle(model, y.to(x0.device) if isinstance(y, Tensor) else y, targeted, max_gradients=0,
                        max_forwards=1)
    ok = oracle.success(oracle.logits(pixels.float())) if len(pixels) else torch.zeros(0, dtype=torch.bool)
    return QuantizedImages(pixels=pixels, success=ok, distortion=distortion(pixels.float(), x0.float()),
                           lam=torch.zeros(len(pixels), device=x0.device), gradients=oracle.gradients.clone(),
                           forwards=oracle.forwards.clone(), suffix=".jpg", quality=int(quality))
