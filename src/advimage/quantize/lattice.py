"""Lattice-aware refinement before rounding (issue: file distortion closer to the attack's floats).

A PNG's perturbation k is integer, and its cost ||k||² is the integer squares' sum: for ±1 changes
it is the *number* of pixels changed, an L1 (not L2) cost. The convex envelope of t ↦ t² sampled at
the integers is the piecewise-linear

    f(t) = (2j + 1) |t| - j (j + 1),   j = floor(|t|),

equal to k² on the lattice and |t| on [-1, 1]. BP's floats minimize the L2 norm, which spreads the
perturbation thinly over all pixels; rounding then has to concentrate it (Ch. 7's cost).

``lattice`` continues the attack for ``walk_steps`` gradients from its floats with BP's boundary walk
(Zhang et al., TIFS 2020; :func:`advimage.boundary_walk.boundary_step`) in the metric of Σ f(δ_i),
majorized at each step by a weighted L2 norm (iteratively reweighted least squares, Daubechies,
DeVore, Fornasier & Güntürk, CPAM 2010, eq. 1.5 with the weights of f): w_i = f'(|δ_i|) / (|δ_i| + ε).
BP runs on z = δ √w, i.e. δ = D z with D = w^(-1/2), so its steps move the pixels already moved most
and the perturbation becomes sparse with entries near the lattice. The adversarial iterate of least
Σ f(δ) is kept, rounded by :mod:`~advimage.quantize.scaled`, and pruned once
(:mod:`~advimage.quantize.prune`). On BP's outputs the extra BP steps in L2 do not lower the files'
distortion, these do (docs/results.md).

:func:`proximal_walk` reaches the same objective another way: proximal linearized steps whose prox
(:func:`envelope_prox`) snaps entries to the lattice. :func:`integer_walk` stays in BP's L2 metric
but takes the gradient and the success at the rounded iterate (``lattice-int``, the default at 100
gradients: the smallest files measured). ``quantize_lattice(walks=...)`` chains walks;
``studies/lattice_walks.py`` measures each alone on the same floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..boundary_walk import boundary_step, gamma_schedule
from ..criteria import Criterion
from ..distortion import distortion
from ..oracle import LossOracle
from ..tensor_ops import batch_view
from .base import QuantizedImages
from .prune import prune_rounds
from .scaled import quantize_scaled
from .spatial import _as_pixels

#: gradients of the walk and of the pruning round (the registry's count)
WALK_STEPS = 30
PRUNE_ROUNDS = 1


def envelope_slope(a: Tensor) -> Tensor:
    """f'(a) = 2 floor(a) + 1 for a = |t| >= 0: slope of the integer squares' convex envelope."""
    return 2 * a.floor() + 1


def integer_cost(delta: Tensor) -> Tensor:
    """Σ f(δ_i) per image (N,): equals ||k||² for integer δ = k (module docstring)."""
    a = delta.abs()
    j = a.floor()
    return ((2 * j + 1) * a - j * (j + 1)).flatten(1).sum(1)


def reweighting(delta: Tensor, eps: float) -> Tensor:
    """D = w^(-1/2) with w = f'(|δ|) / (|δ| + eps), the IRLS majorizer of Σ f(δ) at δ (same shape)."""
    a = delta.abs()
    return ((a + eps) / envelope_slope(a)).sqrt()


@torch.no_grad()
def lattice_walk(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
                 steps: int = WALK_STEPS, gamma_min: float = 0.7, eps: float = 0.01) -> tuple[Tensor, LossOracle]:
    """BP's boundary walk from ``x_adv`` in the reweighted metric of Σ f(δ) (module docstring).

    x0: (N, 3, H, W) pixels; x_adv: float pixels in [0, 255]. ``steps`` gradients; γ goes linearly
    from ``gamma_min`` to 1. Returns (the adversarial iterate of least :func:`integer_cost`, or x_adv
    where none was, (N, 3, H, W) float; the oracle with its counts). ``eps`` lets unchanged pixels move.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=1)
    gammas = gamma_schedule(steps, gamma_min, x0.device)
    best = x_adv.clone()
    best_cost = torch.full((x0.shape[0],), float("inf"), device=x0.device)
    xi = x_adv.clone()
    for i in range(steps + 1):
        if i < steps:
            _, grad, logits = oracle.loss_and_grad(xi)
        else:
            logits = oracle.logits(xi)
        adv = oracle.success(logits)
        delta = xi - x0
        cost = integer_cost(delta)
        better = adv & (cost < best_cost)
        best = torch.where(batch_view(better), xi, best)
        best_cost = torch.where(better, cost, best_cost)
        if i == steps:
            break
        d = reweighting(delta, eps)
        gz = grad * d  # the gradient with respect to z, δ = D z
        ghat = gz / batch_view(gz.flatten(1).norm(dim=1).clamp_min(1e-12))
        z = delta / d
        xi = (x0 + d * boundary_step(z, torch.zeros_like(z), ghat, adv, gammas[i])).clamp(0, 255)
    return best, oracle


def envelope_prox(v: Tensor, tau: Tensor | float) -> Tensor:
    """prox of τ f, elementwise: argmin_b ½(b - v)² + τ f(b) (same shape as v; τ scalar or (N,)).

    f is convex and piecewise linear with slopes 2j + 1 on [j, j + 1], so the prox is a staircase
    soft-threshold: 0 for |v| <= τ, |v| - τ(2j + 1) on the rising parts and flat at the integer j + 1
    for |v| in [j + 1 + τ(2j + 1), j + 1 + τ(2j + 3)]. It snaps entries to the lattice.
    """
    t = tau.view(-1, *[1] * (v.ndim - 1)) if isinstance(tau, Tensor) and tau.ndim == 1 else tau
    a = v.abs()
    j = ((a - t) / (1 + 2 * t)).floor().clamp_min(0)
    return v.sign() * torch.minimum(a - t * (2 * j + 1), j + 1).clamp_min(0)


def _proximal_step(x0: Tensor, delta: Tensor, grad: Tensor, loss: Tensor, tau: float, margin: Tensor,
                   bisections: int = 30) -> Tensor:
    """argmin_δ' ½||δ' - δ||² + τ Σ f(δ') s.t. L + gᵀ(δ' - δ) <= -margin, x0 + δ' in [0, 255].

    The minimizer is clip(prox_τf(δ - μ ĝ)) with the multiplier μ >= 0 (pixels along the unit
    gradient ĝ) the smallest that meets the linearized constraint, found by bisection (the
    constraint's left side decreases with μ). δ, grad (N, ...); loss, margin (N,).
    """
    ghat = grad / batch_view(grad.flatten(1).norm(dim=1).clamp_min(1e-12))

    def moved(mu: Tensor) -> Tensor:
        return (x0 + envelope_prox(delta - batch_view(mu) * ghat, tau)).clamp(0, 255) - x0

    def meets(mu: Tensor) -> Tensor:
        return loss + ((moved(mu) - delta) * grad).flatten(1).sum(1) <= -margin

    lo, hi = torch.zeros_like(loss), torch.ones_like(loss)
    for _ in range(40):  # double hi until the constraint is met (|δ'| grows with μ)
        ok = meets(hi)
        if bool(ok.all()):
            break
        hi = torch.where(ok, hi, 2 * hi)
    free = meets(lo)
    for _ in range(bisections):
        mid = (lo + hi) / 2
        ok = meets(mid)
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return moved(torch.where(free, lo, hi))


@torch.no_grad()
def proximal_walk(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
                  steps: int = WALK_STEPS, tau: float = 0.1, margin: float = 0.1) -> tuple[Tensor, LossOracle]:
    """Proximal linearized steps on Σ f(δ) from ``x_adv`` (an alternative to :func:`lattice_walk`).

    Each step minimizes ½||δ' - δ||² + τ Σ f(δ') under the loss linearized at the iterate, pushed to
    -κ (sequential linear programming with a proximal term, the prox being :func:`envelope_prox`, as
    in proximal-gradient attacks such as FMN, Pintor et al., NeurIPS 2021). κ starts at ``margin``
    (loss units) and is doubled after a non-adversarial iterate, multiplied by 0.8 after an
    adversarial one. x0: (N, 3, H, W) pixels; returns (the adversarial iterate of least
    :func:`integer_cost`, or x_adv, (N, 3, H, W) float; the oracle: ``steps`` gradients, 1 forward).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if tau <= 0 or margin <= 0:
        raise ValueError(f"tau and margin must be > 0, got {tau} and {margin}")
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=1)
    best = x_adv.clone()
    best_cost = torch.full((x0.shape[0],), float("inf"), device=x0.device)
    kappa = torch.full_like(best_cost, margin)
    delta = x_adv - x0
    for i in range(steps + 1):
        if i < steps:
            loss, grad, logits = oracle.loss_and_grad(x0 + delta)
        else:
            logits = oracle.logits(x0 + delta)
        adv = oracle.success(logits)
        cost = integer_cost(delta)
        better = adv & (cost < best_cost)
        best = torch.where(batch_view(better), x0 + delta, best)
        best_cost = torch.where(better, cost, best_cost)
        if i == steps:
            break
        kappa = torch.where(adv, 0.8 * kappa, 2 * kappa)
        delta = _proximal_step(x0, delta, grad, loss, tau, kappa)
    return best, oracle


@torch.no_grad()
def integer_walk(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
                 steps: int = WALK_STEPS, gamma_min: float = 0.85) -> tuple[Tensor, LossOracle]:
    """BP's boundary walk (L2) from ``x_adv`` with integer iterates: the gradient and the success
    are taken at the *rounded* iterate x0 + round(x_i - x0), which is what a file would be.

    DDN (Rony et al., CVPR 2019, §3) replaces its iterate by the rounding at every step; here the
    float iterate x_i is kept and moves by BP's steps (Zhang et al., TIFS 2020) given the rounded
    iterate's gradient and success, a float "shadow" of the integer iterates, so that steps smaller
    than one grey level still add up. γ goes from ``gamma_min`` to 1; 0.85 gave files 0.3% smaller
    than BP's 0.7 on the first 23 sample images after BP 50 (docs/results.md, the benchmark's
    ``--int-gamma-min``). x0: (N, 3, H, W) pixels; x_adv: float pixels in [0, 255].
    Returns (the adversarial rounded iterate of least distortion, integral, or x_adv where none was,
    (N, 3, H, W) float; the oracle: ``steps`` gradients and 1 forward).
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=1)
    gammas = gamma_schedule(steps, gamma_min, x0.device)
    x0 = x0.round()
    best = x_adv.clone()
    best_d = torch.full((x0.shape[0],), float("inf"), device=x0.device)
    xi = x_adv.clone()
    for i in range(steps + 1):
        xr = (x0 + (xi - x0).round()).clamp(0, 255)
        if i < steps:
            _, grad, logits = oracle.loss_and_grad(xr)
        else:
            logits = oracle.logits(xr)
        adv = oracle.success(logits)
        d = distortion(xr, x0).to(best_d)
        better = adv & (d < best_d)
        best = torch.where(batch_view(better), xr, best)
        best_d = torch.where(better, d, best_d)
        if i == steps:
            break
        ghat = grad / batch_view(grad.flatten(1).norm(dim=1).clamp_min(1e-12))
        xi = boundary_step(xi, x0, ghat, adv, gammas[i]).clamp(0, 255)
    return best, oracle


#: the walks :func:`quantize_lattice` can chain, by name
WALKS = {"irls": lattice_walk, "prox": proximal_walk, "int": integer_walk}


@torch.no_grad()
def quantize_lattice(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
                     steps: int = 10, walk_steps: int = WALK_STEPS, prune_rounds_: int = PRUNE_ROUNDS,
                     prune_steps: int = 8, walks: Sequence[tuple[str, int]] | None = None) -> QuantizedImages:
    """:func:`lattice_walk`, then :func:`~advimage.quantize.scaled.quantize_scaled` (``steps``
    forwards) and ``prune_rounds_`` pruning rounds. The attack's own floats are rounded the same
    way (``steps`` more forwards), and per image the adversarial file of lower integer cost is
    returned: the walk's file, or that one where the walk does not pay (or does not round to an
    adversarial file). So the result never costs more than ``quantize_scaled`` of ``x_adv`` with the
    same ``steps``, whatever the floating-point rounding of the machine.

    ``walks`` replaces the walk by a chain of (name in :data:`WALKS`, steps), each started from the
    previous one's output, e.g. (("irls", 30), ("prox", 15)).

    Passes per image: ``walk_steps + prune_rounds_`` gradients; 1 + 2 ``steps`` +
    ``prune_rounds_ * prune_steps`` forwards (with ``walks``, their steps and one forward each).
    """
    x0 = _as_pixels(x0, 1.0).round()
    xa = _as_pixels(x_adv, 1.0).to(x0.device).clamp(0, 255)
    if x0.shape != xa.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_adv {tuple(xa.shape)} differ in shape")
    if isinstance(y, Tensor):
        y = y.to(x0.device)
    plan = list(walks) if walks is not None else [("irls", walk_steps)]
    unknown = [name for name, _ in plan if name not in WALKS]
    if unknown or not plan:
        raise ValueError(f"unknown walk(s) {unknown or plan}; choose from {sorted(WALKS)}")
    walked = xa
    gradients = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
    forwards = torch.zeros_like(gradients)
    for name, n_steps in plan:
        walked, walk_oracle = WALKS[name](model, x0, walked, y, targeted=targeted, steps=n_steps)
        gradients += walk_oracle.gradients.to(gradients)
        forwards += walk_oracle.forwards.to(forwards)
    # the walked floats sit near the lattice (entries near 0 or ±1): start the scale search at s = 1;
    # start_scale's quantile of |u| can fall among the near-zero entries and waste the search
    q = quantize_scaled(model, x0, walked, y, targeted=targeted, steps=steps, start=torch.ones(len(x0)))
    forwards += q.forwards.to(forwards)
    walked_file = QuantizedImages(pixels=q.pixels, success=q.success, distortion=q.distortion, lam=q.lam,
                                  gradients=gradients, forwards=forwards, suffix=".png")
    if prune_rounds_ >= 1:
        walked_file = prune_rounds(model, x0, walked_file, y, targeted=targeted, prune_steps=prune_steps,
                                   rounds=prune_rounds_)
    plain = quantize_scaled(model, x0, xa, y, targeted=targeted, steps=steps)
    return _cheaper(walked_file, plain, x0)


def _cheaper(a: QuantizedImages, b: QuantizedImages, x0: Tensor) -> QuantizedImages:
    """Per image, ``a``'s file unless ``b``'s is adversarial and costs less (Σ k², integers) or ``a``'s
    is not adversarial; passes are the sum of both (both were spent). Same (N, 3, H, W) pixels."""
    cost_a = (a.pixels.float() - x0).pow(2).flatten(1).sum(1)
    cost_b = (b.pixels.float() - x0).pow(2).flatten(1).sum(1)
    take_b = b.success & (~a.success | (cost_b < cost_a))
    pick = batch_view(take_b)
    pixels = torch.where(pick, b.pixels, a.pixels)
    return QuantizedImages(pixels=pixels, success=torch.where(take_b, b.success, a.success),
                           distortion=distortion(pixels.float(), x0), lam=torch.where(take_b, b.lam, a.lam),
                           gradients=a.gradients + b.gradients.to(a.gradients),
                           forwards=a.forwards + b.forwards.to(a.forwards), suffix=".png")
