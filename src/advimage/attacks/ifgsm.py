"""I-FGSM (Kurakin et al. 2017; thesis eq. 4.18) in best-effort mode.

The budget of ``steps`` gradients is split into ``runs`` runs of equal length; a per-image
search on the step ε (pixels) picks each run's value (thesis §6.4.2: 10 x 10).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import AttackResult, BestTracker, LossOracle, batch_view, check_inputs
from .gradient_steps import first_order_scale, split_budget
from .registry import register
from .search import BracketSearch


@register("ifgsm")
def ifgsm(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 100, targeted: bool = False,
          runs: int = 10) -> AttackResult:
    check_inputs(x, y)
    runs, per_run = split_budget(steps, runs)
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=runs)
    best = BestTracker(x)
    loss0, grad0, logits0 = first_order_scale(oracle, x)
    best.update(x, oracle.success(logits0))
    # linear estimate: per_run sign steps of ε cancel the loss when ε ||g||_1 per_run = L
    start = (loss0.clamp_min(0) / grad0.abs().flatten(1).sum(1).clamp_min(1e-12) / per_run).clamp_min(1e-3)
    search = BracketSearch(start)
    for _ in range(runs):
        eps = batch_view(search.value)
        xi = (x - eps * grad0.sign()).clamp(0, 255)
        succeeded = torch.zeros_like(search.value, dtype=torch.bool)
        for _ in range(per_run - 1):
            _, grad, logits = oracle.loss_and_grad(xi)
            adv = oracle.success(logits)
            best.update(xi, adv)
            succeeded |= adv
            xi = torch.where(batch_view(adv), xi, (xi - eps * grad.sign()).clamp(0, 255))
        adv = oracle.success(oracle.logits(xi))
        best.update(xi, adv)
        search.update(succeeded | adv)
    return best.result(oracle)
