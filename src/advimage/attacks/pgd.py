"""PGD2 (Madry et al. 2018; thesis eq. 4.19) in best-effort mode.

Binary search on the radius α (distortion units, eq. 6.2) over ``runs`` runs; each run takes
the step ε = 2α / N_run (thesis §6.4.2) with the L2-normalized gradient and projects on the
ball of radius α around x0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import AttackResult, BestTracker, LossOracle, batch_view, check_inputs, l2_normalize
from .gradient_steps import first_order_scale, linear_distance, split_budget
from .registry import register
from .search import BracketSearch


def project_l2(x: Tensor, x0: Tensor, radius: Tensor) -> Tensor:
    """Project x on the L2 balls of radius ``radius`` (N,) (pixels, not normalized) around x0."""
    delta = x - x0
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (radius / norm).clamp(max=1.0)
    return x0 + delta * batch_view(factor)


@register("pgd")
def pgd(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 100, targeted: bool = False,
        runs: int = 10) -> AttackResult:
    check_inputs(x, y)
    runs, per_run = split_budget(steps, runs)
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=runs)
    best = BestTracker(x)
    sqrt_n = math.sqrt(x[0].numel())
    loss0, grad0, logits0 = first_order_scale(oracle, x)
    best.update(x, oracle.success(logits0))
    search = BracketSearch(linear_distance(loss0, grad0).clamp_min(1e-3) * 1.5)
    ghat0 = l2_normalize(grad0)
    for _ in range(runs):
        radius = search.value * sqrt_n
        step = batch_view(2 * radius / per_run)
        xi = project_l2((x - step * ghat0).clamp(0, 255), x, radius).clamp(0, 255)
        succeeded = torch.zeros_like(radius, dtype=torch.bool)
        for _ in range(per_run - 1):
            _, grad, logits = oracle.loss_and_grad(xi)
            adv = oracle.success(logits)
            best.update(xi, adv)
            succeeded |= adv
            xi = project_l2(xi - step * l2_normalize(grad), x, radius).clamp(0, 255)
        adv = oracle.success(oracle.logits(xi))
        best.update(xi, adv)
        search.update(succeeded | adv)
    return best.result(oracle)
