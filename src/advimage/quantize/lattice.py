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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..boundary_walk import boundary_step, gamma_schedule
from ..criteria import Criterion
from ..distortion import distortion
from ..oracle import LossOracle
from ..tensor_ops import batch_view
from .base import QuantizedImages, register
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


@torch.no_grad()
def quantize_lattice(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
                     steps: int = 10, walk_steps: int = WALK_STEPS, prune_rounds_: int = PRUNE_ROUNDS,
                     prune_steps: int = 8) -> QuantizedImages:
    """:func:`lattice_walk`, then :func:`~advimage.quantize.scaled.quantize_scaled` (``steps``
    forwards) and ``prune_rounds_`` pruning rounds. Where the walked floats do not round to an
    adversarial file, the attack's own floats are rounded instead (``steps`` more forwards there).

    Passes per image: ``walk_steps + prune_rounds_`` gradients; 1 + ``steps`` (+ ``steps``) +
    ``prune_rounds_ * prune_steps`` forwards.
    """
    x0 = _as_pixels(x0, 1.0).round()
    xa = _as_pixels(x_adv, 1.0).to(x0.device).clamp(0, 255)
    if x0.shape != xa.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_adv {tuple(xa.shape)} differ in shape")
    if isinstance(y, Tensor):
        y = y.to(x0.device)
    walked, walk_oracle = lattice_walk(model, x0, xa, y, targeted=targeted, steps=walk_steps)
    # the walked floats sit near the lattice (entries near 0 or ±1): start the scale search at s = 1;
    # start_scale's quantile of |u| can fall among the near-zero entries and waste the search
    q = quantize_scaled(model, x0, walked, y, targeted=targeted, steps=steps, start=torch.ones(len(x0)))
    pixels, success = q.pixels.float(), q.success.clone()
    forwards = q.forwards + walk_oracle.forwards
    failed = (~success).nonzero().flatten()
    if failed.numel():
        sub = y[failed] if isinstance(y, Tensor) else y.subset(failed)
        again = quantize_scaled(model, x0[failed], xa[failed], sub, targeted=targeted, steps=steps)
        pixels[failed], success[failed] = again.pixels.float(), again.success
        forwards[failed] += again.forwards
    merged = QuantizedImages(pixels=pixels.to(torch.uint8), success=success, distortion=distortion(pixels, x0),
                             lam=q.lam, gradients=walk_oracle.gradients.clone(), forwards=forwards, suffix=".png")
    if prune_rounds_ < 1:
        return merged
    return prune_rounds(model, x0, merged, y, targeted=targeted, prune_steps=prune_steps, rounds=prune_rounds_)


@register("lattice", suffix=".png", gradients=WALK_STEPS + PRUNE_ROUNDS, uses_df=False,
          description=f"{WALK_STEPS} more BP steps in the metric of the files' integer cost (reweighted L1 near 0), "
                      "then scaled rounding and one pruning round")
def lattice(model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor | Criterion, *, targeted: bool = False,
            steps: int = 10, **_: object) -> QuantizedImages:
    return quantize_lattice(model, x0, x_adv, y, targeted=targeted, steps=steps)
