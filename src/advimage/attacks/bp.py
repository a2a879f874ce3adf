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

from .base import AttackResult, BestTracker, LossOracle, batch_view, check_inputs
from .registry import register


def gamma_schedule(steps: int, gamma_min: float, device: torch.device | None = None) -> Tensor:
    """γ_i, i = 0..steps-1, linear from γ_min (first iteration) to 1 (last), (steps,)."""
    if steps == 1:
        return torch.ones(1, device=device)
    return torch.linspace(gamma_min, 1.0, steps, device=device)


def boundary_step(x: Tensor, origin: Tensor, ghat: Tensor, adv: Tensor, gamma: float | Tensor) -> Tensor:
    """BP's stage-2 move of the iterate x (N, ...) with respect to the origin (the original image),
    given the unit normal ĝ (N, ...) of the boundary at x; returns the new iterate.

    adv (N,): where x is adversarial, move on the tangent hyperplane towards the origin to distance
    γ||δ||, δ = x - origin (or along the normal if the hyperplane is farther); elsewhere move along
    -ĝ to the sphere of radius ||δ||/γ. The norm is the Euclidean norm of the tensors given, so a
    change of variables δ = D z gives BP in the metric of z (used by :mod:`advimage.quantize.lattice`).
    """
    delta = x - origin
    norm = delta.flatten(1).norm(dim=1)
    r = (delta * ghat).flatten(1).sum(dim=1)  # component of δ along the normal
    # adversarial: on the tangent hyperplane, target norm ε = γ||δ||
    eps_out = gamma * norm
    v_star = origin + batch_view(r) * ghat  # projection of the origin on the tangent hyperplane
    tangent = delta - batch_view(r) * ghat
    t_norm = tangent.flatten(1).norm(dim=1).clamp_min(1e-12)
    along = (eps_out.square() - r.square()).clamp_min(0).sqrt()
    z_plane = v_star + batch_view(along / t_norm) * tangent
    # if the hyperplane is farther than ε, shrink along the normal instead
    z_shrink = origin + batch_view(eps_out / r.abs().clamp_min(1e-12) * r) * ghat
    z_out = torch.where(batch_view(eps_out >= r.abs()), z_plane, z_shrink)
    # not adversarial: move along -ĝ to the sphere of radius ||δ||/γ
    eps_in = norm / gamma
    t = r + (eps_in.square() - norm.square() + r.square()).clamp_min(0).sqrt()
    z_in = x - batch_view(t) * ghat
    return torch.where(batch_view(adv), z_out, z_in)

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
