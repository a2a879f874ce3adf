"""CW2 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", S&P 2017)
on the margin loss (thesis eq. 4.21), in best-effort mode.

Inner loop: Adam on the tanh change of variables x = 127.5 (tanh(w) + 1) (CW §V), which keeps
pixels in [0, 255], minimizing ||x - x0||^2 + μ |L_adv(x) - m|_+. Outer loop: per-image
search on μ (grow by 10 until success, then bisect, as CW's binary search on c).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import AttackResult, BestTracker, LossOracle, batch_view, check_inputs
from .gradient_steps import first_order_scale, split_budget
from .registry import register
from .search import BracketSearch

_HALF = 127.5


def _to_w(x: Tensor) -> Tensor:
    return torch.atanh((x / _HALF - 1).clamp(-1 + 1e-6, 1 - 1e-6))


def _to_x(w: Tensor) -> Tensor:
    return _HALF * (torch.tanh(w) + 1)


@register("cw")
def cw(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 100, targeted: bool = False,
       runs: int = 5, lr: float = 0.001, margin: float = 0.0,
       betas: tuple[float, float] = (0.9, 0.999)) -> AttackResult:
    """CW2 with ``runs`` values of μ, each with (steps - 1) // runs + 1 Adam iterations.

    lr: Adam learning rate in tanh space. CW's 0.01 was tuned for MNIST/CIFAR-sized distortions;
    at mid-gray it moves pixels by ~1.3 per step, ten times ImageNet's typical adversarial
    distortion, so the default here is 0.001. margin: m <= 0 of eq. (4.21).
    """
    check_inputs(x, y)
    if margin > 0:
        raise ValueError("margin m must be <= 0 (eq. 4.21)")
    runs, per_run = split_budget(steps, runs)
    oracle = LossOracle(model, y, targeted, max_gradients=steps, max_forwards=runs)
    best = BestTracker(x)
    loss0, grad0, logits0 = first_order_scale(oracle, x)
    best.update(x, oracle.success(logits0))
    # μ reaching L = 0 on the linearized problem: δ = -μ g / 2 (same as λ_c of eq. 7.16), doubled
    mu0 = 4 * loss0.clamp_min(1e-3) / grad0.flatten(1).pow(2).sum(1).clamp_min(1e-20)
    search = BracketSearch(mu0, grow=10.0)
    w0 = _to_w(x)
    b1, b2 = betas
    for _ in range(runs):
        mu = batch_view(search.value)
        w = w0.clone()
        m = torch.zeros_like(w)
        v = torch.zeros_like(w)
        succeeded = torch.zeros_like(search.value, dtype=torch.bool)
        loss, grad_l = loss0, grad0
        for t in range(1, per_run + 1):
            xi = _to_x(w)
            if t > 1:
                loss, grad_l, logits = oracle.loss_and_grad(xi)
                adv = oracle.success(logits)
                best.update(xi, adv)
                succeeded |= adv
            active = batch_view((loss - margin > 0).to(x.dtype))
            grad_x = 2 * (xi - x) + mu * active * grad_l
            grad_w = grad_x * _HALF * (1 - torch.tanh(w).square())
            m = b1 * m + (1 - b1) * grad_w
            v = b2 * v + (1 - b2) * grad_w.square()
            w = w - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + 1e-8)
        xi = _to_x(w)
        adv = oracle.success(oracle.logits(xi))
        best.update(xi, adv)
        search.update(succeeded | adv)
    return best.result(oracle)
