"""DDN: Rony et al., "Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial
Attacks and Defenses", CVPR 2019 (Algorithm 1), in pixel units.

The direction follows the normalized cross-entropy gradient; the norm ε of the perturbation is
decreased by (1 - γ) when the iterate is adversarial and increased by (1 + γ) otherwise. As in
the authors' code, the step α follows a cosine schedule from 1 to 0.01 ([0, 1] units, i.e. 255
to 2.55 pixels here) and each iterate is rounded to 8-bit levels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..criteria import label_criterion
from .base import AttackResult, BestTracker, LossOracle, batch_view, check_inputs, l2_normalize
from .registry import register


def _ce(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    # the quantity to *decrease*: CE to the target, or minus CE to the true class
    ce = F.cross_entropy(logits, labels, reduction="none")
    return ce if targeted else -ce


@register("ddn", labels_only=True)
def ddn(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 100, targeted: bool = False,
        gamma: float = 0.05, init_norm: float = 1.0, quantize: bool = True,
        seed: int = 0) -> AttackResult:
    """DDN with ``steps`` gradients. init_norm: initial ε in [0, 1] L2 units (x 255 here)."""
    check_inputs(x, y)
    crit = label_criterion(y, targeted, "ddn")  # DDN descends the cross-entropy of class labels
    oracle = LossOracle(model, crit, max_gradients=steps, max_forwards=1)
    best = BestTracker(x)
    eps = torch.full((x.shape[0],), init_norm * 255.0, device=x.device)
    worst = torch.maximum(x, 255 - x).flatten(1).norm(dim=1)
    delta = torch.zeros_like(x)
    gen = torch.Generator().manual_seed(seed)
    for k in range(steps):
        xi = x + delta
        _, grad, logits = oracle.loss_and_grad(xi, loss_fn=_ce)
        adv = oracle.success(logits)
        best.update(xi, adv)
        # zero gradient (saturated softmax): take a random direction, as the authors' code does
        dead = grad.flatten(1).norm(dim=1) < 1e-12
        if bool(dead.any()):
            grad = torch.where(batch_view(dead), torch.randn(grad.shape, generator=gen, device="cpu").to(grad), grad)
        alpha = 255.0 * (0.01 + 0.99 * (1 + math.cos(math.pi * k / steps)) / 2)
        delta = delta - alpha * l2_normalize(grad)
        eps = torch.minimum(eps * torch.where(adv, 1 - gamma, 1 + gamma), worst)
        delta = delta * batch_view(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))
        xq = (x + delta).clamp(0, 255)
        if quantize:
            xq = xq.round()
        delta = xq - x
    xi = x + delta
    best.update(xi, oracle.success(oracle.logits(xi)))
    return best.result(oracle)
