"""The geometry of BP's walk on the class boundary (Zhang, Avrithis, Furon, Amsaleg, "Walking on
the Edge", IEEE TIFS 2020, §III), shared by the attack (:mod:`advimage.attacks.bp`) and the
lattice quantizer (:mod:`advimage.quantize.lattice`), which walks in another metric.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tensor_ops import batch_view


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
