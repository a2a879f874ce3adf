"""Boundary Projection (BP): Zhang, Avrithis, Furon, Amsaleg, "Walking on the Edge: Fast,
Low-Distortion Adversarial Examples", IEEE TIFS 2020 (arXiv:1912.02153); thesis eq. (4.20)
and the α initialisation of eq. (6.7).

Stage 1 walks along the normalized gradient of L_adv until the iterate is adversarial.
Stage 2 then walks *on* the class boundary: when the iterate is adversarial ("out" of the
true class) it moves within the tangent hyperplane towards the original to shrink the
distortion by γ_i; when it is not, it moves along the gradient to a sphere of radius
||δ||/γ_i. γ_i grows linearly from γ_min to 1, so the walk settles on the boundary.
Best-effort mode is built in: α is set per image by eq. (6.7) and the lowest-distortion
adversarial iterate is returned.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..boundary_walk import boundary_step, gamma_schedule
from .base import AttackResult, BestTracker, LossOracle, batch_view, check_inputs
from .registry import register


@register("bp")
def bp(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 100, targeted: bool = False,
       gamma_min: float = 0.7, kappa: float = 0.2) -> AttackResult:
    """BP in best-effort mode, ``steps`` gradients per image.

    x: (N, 3, H, W) float pixels in [0, 255]; y: (N,) labels (targets if ``targeted``).
    gamma_min: first value of the γ schedule. kappa: fraction of ``steps`` in which stage 1
    is expected to cross the boundary (eq. 6.7 with κ = ceil(kappa * steps)).
    """
    check_inputs(x, y)
    if steps < 1:
        raise ValueError("steps must be >= 1")
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=1)
    best = BestTracker(x)
    gammas = gamma_schedule(steps, gamma_min, x.device)
    k = max(1, math.ceil(kappa * steps))
    x0 = x.detach()
    xi = x0.clone()
    alpha = None
    ever_adv = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for i in range(steps):
        loss, grad, logits = oracle.loss_and_grad(xi)
        adv = oracle.success(logits)
        best.update(xi, adv)
        ever_adv |= adv
        gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        ghat = grad / batch_view(gnorm)
        if alpha is None:
            # eq. (6.7): the step that cancels the linearized loss in κ iterations
            alpha = (loss.clamp_min(0) / (gnorm * gammas[:k].sum())).clamp_min(1e-3)
        # stage 1 (eq. 4.20): descend the loss
        z1 = xi - batch_view(alpha * gammas[i]) * ghat
        z2 = boundary_step(xi, x0, ghat, adv, gammas[i])
        xi = torch.where(batch_view(ever_adv), z2, z1).clamp(0, 255)
    logits = oracle.logits(xi)
    best.update(xi, oracle.success(logits))
    return best.result(oracle)
