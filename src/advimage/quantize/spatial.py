"""Smart quantization in the spatial domain (thesis §7.2, eqs. 7.1-7.16).

Turns a float adversarial sample x_a into an 8-bit image x_q that stays adversarial with
little extra distortion: x_q = x0 + clip(round(-λ g / 2)) where g is the gradient of L_adv at
x_a (eq. 7.15), the clip keeps each pixel within ``df`` levels around the adversarial value
(eq. 7.8), and λ is searched around λ_c (eq. 7.16) by evaluating the *quantized* image.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..criteria import Criterion, fix_rival, rival_classes, untargeted_labels
from ..distortion import distortion
from ..oracle import LossOracle
from ..search import BracketSearch
from ..tensor_ops import batch_view
from .base import QuantizedImages, check_cost, critical_lambda, register


def admissible_bounds(u: Tensor, df: float) -> tuple[Tensor, Tensor]:
    """Lowest and highest admissible integers around each value of u (eq. 7.8).

    In the spatial domain u = x_a - x0 and the bounds are on x_q - x0; in the JPEG domain the
    same bounds apply to the coefficients X_a (§7.3.2).

    df = 0: [u] only; df = 1: floor(u) or ceil(u); even df: [u] ± df/2; odd df:
    floor(u) - (df-1)/2 .. ceil(u) + (df-1)/2. Each leaves df + 1 choices and keeps
    |x_q - x_a| <= (df + 1) / 2. df = inf leaves the perturbation free.
    """
    if math.isinf(df):
        return torch.full_like(u, float("-inf")), torch.full_like(u, float("inf"))
    if df < 0 or df != int(df):
        raise ValueError(f"df must be a non-negative integer or inf, got {df}")
    df = int(df)
    if df % 2 == 0:
        r = u.round()
        return r - df // 2, r + df // 2
    return u.floor() - (df - 1) // 2, u.ceil() + (df - 1) // 2


def quantize_at(x0: Tensor, grad: Tensor, low: Tensor, high: Tensor, lam: Tensor,
                cost: Tensor | None = None) -> Tensor:
    """Eq. (7.15): x_q = x0 + clip(round(-λ g / (2 w)), low, high), kept in [0, 255]; float (N,3,H,W).

    w = cost (ones: squared L2, Ch. 7); -λ g / (2w) minimizes w k² + λ g k per pixel (eq. 8.14's
    closed form for quadratic costs).
    """
    step = -batch_view(lam) * grad / 2
    if cost is not None:
        step = step / cost
    k = torch.maximum(torch.minimum(step.round(), high), low)
    return (x0 + k).clamp(0, 255)


CostFn = Callable[[Tensor], Tensor]
"""Elementwise stego cost w(k) of integer perturbations k (N, 3, H, W) -> (N, 3, H, W), w(0) = 0."""


def argmin_costs(x0: Tensor, grad: Tensor, low: Tensor, high: Tensor, lam: Tensor, costs: CostFn) -> Tensor:
    """Eq. (8.13), generic costs: per pixel, the k in {low, ..., high} minimizing w(k) + λ g k.

    The thesis prints λ(u − k)g; written with g = ∇L_adv the linearized loss term is +λ g k (u is
    a constant), so a larger λ pushes k along −g (the sign fix of the spec, part A.1). The d_f + 1
    candidates are evaluated at once: (df+1, N, 3, H, W) values, the first minimum wins ties.
    Candidates that would leave [0, 255] are excluded. Returns x0 + k as floats (N, 3, H, W).
    """
    span = int((high - low).max().item()) if high.numel() else 0
    best_value = torch.full_like(x0, float("inf"))
    best_k = low.clone()
    lam = batch_view(lam)
    for j in range(span + 1):
        k = low + j
        admissible = (k <= high) & (x0 + k >= 0) & (x0 + k <= 255)
        value = torch.where(admissible, costs(k) + lam * grad * k, torch.full_like(k, float("inf")))
        better = value < best_value
        best_value = torch.where(better, value, best_value)
        best_k = torch.where(better, k, best_k)
    return (x0 + best_k).clamp(0, 255)


def lambda_c(loss: Tensor, grad: Tensor, u: Tensor, cost: Tensor | None = None) -> Tensor:
    """Eq. (7.16), see :func:`advimage.quantize.base.critical_lambda` (the one implementation)."""
    return critical_lambda(loss, u, grad, cost)


#: how the rival class of the loss is chosen: ``max`` the best other class wherever the loss is
#: evaluated (eqs. 4.15-4.16, the run's criterion), ``fixed`` the class c_a the attack reached, held
#: fixed for the whole quantization (eq. 8.10)
RIVALS = ("max", "fixed")


def check_rival(rival: str, oracle: LossOracle) -> None:
    """Refuse an unknown ``rival`` or, for ``fixed``, a criterion without an untargeted label."""
    if rival not in RIVALS:
        raise ValueError(f"rival must be one of {', '.join(RIVALS)}, got {rival!r}")
    if rival == "fixed" and untargeted_labels(oracle.criterion) is None:
        raise TypeError("a fixed rival class (eq. 8.10) needs the untargeted misclassification criterion, not "
                        f"{type(oracle.criterion).__name__}")


def hold_rival(oracle: LossOracle, logits_a: Tensor) -> None:
    """Eq. 8.10: from now on ``oracle`` asks L = l_{c0} − l_{ca}, with c_a = the best class other
    than c0 in ``logits_a`` (the logits at x_a), held fixed; margins and paths are kept.

    g and λ_c (eq. 7.16) are taken before, with the run's criterion; for one output per image
    they are eq. 8.10's at x_a too (l_{c0} − max_{k≠c0} l_k reaches its max at c_a and autograd
    follows that class), so only the tests of the quantized images change (c_a must beat c0,
    not any class). With several paths or ensemble members, c_a comes from their mean logits.
    """
    labels = untargeted_labels(oracle.criterion)
    assert labels is not None  # check_rival ran
    oracle.criterion = fix_rival(oracle.criterion, rival_classes(logits_a, labels))


def _as_pixels(x: Tensor, scale: float) -> Tensor:
    x = x.detach().float() * scale
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(x.shape)}")
    return x


@torch.no_grad()
def quantize_spatial(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1,
                     targeted: bool = False, steps: int = 10, scale: float = 1.0, grow: float = 10.0,
                     cost: Tensor | None = None, costs: CostFn | None = None, rival: str = "max") -> QuantizedImages:
    """Quantize adversarial samples to 8-bit images that stay adversarial (§7.2).

    x0: (N, 3, H, W) original integer pixels (uint8 or float); x_adv: float adversarial samples,
    in [0, 255] or in [0, 1] with ``scale=255`` (e.g. foolbox, torchattacks, ART outputs); y: (N,)
    labels (targets if ``targeted``) or a criterion. cost: (N, 3, H, W) weights w > 0 of the
    quadratic cost Σ w k² (None: squared L2), solved in closed form (eq. 8.14); ``costs``: any
    elementwise cost function w(k) instead, solved by the generic argmin of eq. 8.13 (finite df
    only; λ_c then uses w(1) as the quadratic weight). df: degree of freedom (0 = rounding, 1, 2, ..., inf).
    steps: forward passes in all (default 10): one checks x0, the others search λ around λ_c
    (eq. 7.16), moving by factors of ``grow`` until bracketed, then bisecting; plus one gradient at x_a.
    Where x0 is already adversarial, x0 is returned. Where no λ works, ``success`` is False and the
    image returned is the one of the largest λ tried (still admissible).
    rival: ``max`` (default) tests the quantized images with the criterion as given; ``fixed``
    holds the class c_a reached at x_a (eq. 8.10; :func:`hold_rival`), untargeted labels only, df > 0.
    """
    x0 = _as_pixels(x0, scale if not x0.dtype == torch.uint8 else 1.0)
    xa = _as_pixels(x_adv, scale).to(x0.device)
    if x0.shape != xa.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_adv {tuple(xa.shape)} differ in shape")
    if float(xa.min()) < -1e-3 or float(xa.max()) > 255 + 1e-3:
        raise ValueError("x_adv must be pixels in [0, 255] (use scale=255 for [0, 1] inputs)")
    if float(xa.max()) <= 1.0 and scale == 1.0 and float(x0.max()) > 1.0:
        raise ValueError("x_adv looks like [0, 1] data while x0 is in [0, 255]: pass scale=255")
    x0 = x0.round()
    xa = xa.clamp(0, 255)
    if isinstance(y, Tensor):
        y = y.to(x0.device)
    cost = check_cost(cost, x0)
    if costs is not None and (cost is not None or math.isinf(df)):
        raise ValueError("a generic cost function needs a finite df and no quadratic cost map")
    n = x0.shape[0]
    if steps < 2:
        raise ValueError("steps must be >= 2 (one forward checks x0, the rest search λ)")
    oracle = LossOracle(model, y, targeted, max_gradients=1, max_forwards=steps)
    check_rival(rival, oracle)
    if rival == "fixed" and df == 0:
        raise ValueError("df=0 is plain rounding, with no gradient at x_a: a fixed rival class needs df > 0")
    u = xa - x0
    low, high = admissible_bounds(u, df)
    # already-adversarial originals are their own best answer (thesis §7.4.1)
    start_adv = oracle.success(oracle.logits(x0))
    if df == 0:
        xq = quantize_at(x0, torch.zeros_like(u), low, high, torch.zeros(n, device=x0.device))
        ok = oracle.success(oracle.logits(xq))
        xq = torch.where(batch_view(start_adv), x0, xq)
        lam = torch.where(start_adv | ok, 0.0, float("nan"))
        return _result(xq, x0, ok | start_adv, lam, oracle)
    loss, grad, logits_a = oracle.loss_and_grad(xa)
    if rival == "fixed":
        hold_rival(oracle, logits_a)  # eq. 8.10; loss and grad at x_a are unchanged
    if costs is not None:
        lc = critical_lambda(loss, u, grad, check_cost(costs(torch.ones_like(u)).clamp_min(1e-12), x0))

        def solve(lam: Tensor) -> Tensor:
            return argmin_costs(x0, grad, low, high, lam, costs)
    else:
        lc = critical_lambda(loss, u, grad, cost)

        def solve(lam: Tensor) -> Tensor:
            return quantize_at(x0, grad, low, high, lam, cost)
    # Line search around λ_c (§7.2.2): lower λ after a success, raise it after a failure, by a
    # factor `grow` until both outcomes are seen, then bisect in log λ. The thesis's interval
    # [0.01 λ_c, 100 λ_c] is reached in two moves; it is not a hard limit, because a sample
    # within a hair of the boundary (λ_c tiny) may need more than 100 λ_c to move one pixel.
    search = BracketSearch(lc, grow=grow)
    best_lam = torch.full((n,), float("nan"), device=x0.device)
    x_best = solve(lc * grow ** 2)
    found = torch.zeros(n, dtype=torch.bool, device=x0.device)
    for _ in range(steps - 1):
        lam = search.value
        xq = solve(lam)
        ok = oracle.success(oracle.logits(xq))
        better = ok & ~(lam >= best_lam)  # nan-safe: best_lam is nan until found
        best_lam = torch.where(better, lam, best_lam)
        x_best = torch.where(batch_view(better), xq, x_best)
        found |= ok
        search.update(ok)
    x_best = torch.where(batch_view(start_adv), x0, x_best)
    best_lam = torch.where(start_adv, torch.zeros_like(best_lam), best_lam)
    return _result(x_best, x0, found | start_adv, best_lam, oracle)


def _result(xq: Tensor, x0: Tensor, success: Tensor, lam: Tensor, oracle: LossOracle) -> QuantizedImages:
    return QuantizedImages(
        pixels=xq.round().clamp(0, 255).to(torch.uint8), success=success, distortion=distortion(xq, x0),
        lam=lam, gradients=oracle.gradients.clone(), forwards=oracle.forwards.clone(), suffix=".png",
    )


def round_pixels(x_adv: Tensor, scale: float = 1.0) -> Tensor:
    """Plain rounding of float pixels to uint8 (the baseline the thesis contrasts, Table 7.1)."""
    return _as_pixels(x_adv, scale).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def _checked(model: nn.Module, x0: Tensor, x: Tensor, y: Tensor | Criterion, targeted: bool, suffix: str,
             pixels: Tensor) -> QuantizedImages:
    """Evaluate already-chosen images x once (one forward) and wrap them."""
    oracle = LossOracle(model, y, targeted, max_gradients=0, max_forwards=1)
    ok = oracle.success(oracle.logits(x)) if len(x) else torch.zeros(0, dtype=torch.bool, device=x.device)
    lam = torch.zeros(len(x), device=x.device)
    return QuantizedImages(pixels=pixels, success=ok, distortion=distortion(x, x0), lam=lam,
                           gradients=oracle.gradients.clone(), forwards=oracle.forwards.clone(), suffix=suffix)


@register("smart", suffix=".png", gradients=1,
          description="§7.2 smart quantization to 8-bit PNG (eqs. 7.8, 7.15, 7.16; λ searched on the quantized image)")
def smart(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, df: float = 1,
          targeted: bool = False, cost: Tensor | None = None, steps: int = 10) -> QuantizedImages:
    return quantize_spatial(model, x0, x_adv, y, df=df, targeted=targeted, cost=cost, steps=steps)


@register("round", suffix=".png", gradients=0, forwards=1,
          description="plain rounding to 8-bit PNG (the baseline Table 7.1 contrasts)")
def rounding(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *,
             targeted: bool = False) -> QuantizedImages:
    xq = round_pixels(x_adv)
    return _checked(model, x0.float(), xq.float(), y, targeted, ".png", xq)


@register("none", suffix=".npy", gradients=0, forwards=1,
          description="no quantization: the attack's float pixels, kept as .npy (not an image)")
def no_quantization(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *,
                    targeted: bool = False) -> QuantizedImages:
    xa = x_adv.detach().float().clamp(0, 255)
    return _checked(model, x0.float(), xa, y, targeted, ".npy", xa)
