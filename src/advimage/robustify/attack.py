"""The online attack of thesis Appendix B, eqs. (9.6)-(9.7), run on the current student.

x^(i+1) = x^(i) - sqrt(n) (ε / N_iter) ∇L_adv / ||∇L_adv||, with L_adv = ŷ_c - ŷ_a (logits), c the
predicted class of x0 (the pseudo-label: no ground truth) and a the second most likely class of x0.
Both stay fixed over the iterations (the thesis fixes a after the first one; c is fixed with it,
so that L_adv keeps measuring the margin of the pseudo-label). Each step has L2 norm sqrt(n) ε /
N_iter, so the distortion (eq. 6.2, pixel units) is at most ε. The iterate is clipped to [0, 255]
(not said in the thesis; clipping can only shorten the perturbation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class PairingExamples:
    """x_adv: (N, 3, H, W) float pixels; label, second: the classes c and a (N,); gradients: per image."""

    x_adv: Tensor
    label: Tensor
    second: Tensor
    gradients: int


def pairing_attack(model: nn.Module, x: Tensor, *, eps: float = 1.0, iters: int = 1) -> PairingExamples:
    """Adversarial examples of ``x`` (float pixels in [0, 255]) for ``model`` (pixels -> logits),
    distortion at most ``eps`` (eq. 6.2) after ``iters`` normalized gradient steps. The model's
    parameters receive no gradient; its train/eval mode is left as it is."""
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    x0 = x.detach().float()
    step = math.sqrt(x0[0].numel()) * eps / iters
    xa = x0.clone()
    c = a = None
    for _ in range(iters):
        xa.requires_grad_(True)
        logits = model(xa)
        if c is None:
            top2 = logits.detach().topk(2, dim=1).indices
            c, a = top2[:, 0], top2[:, 1]
        rows = torch.arange(len(xa), device=xa.device)
        loss = (logits[rows, c] - logits[rows, a]).sum()
        (grad,) = torch.autograd.grad(loss, xa)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        xa = (xa.detach() - step * grad / norm).clamp(0, 255)
    return PairingExamples(xa.detach(), c, a, iters)
