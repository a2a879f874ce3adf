"""FGSM (Goodfellow et al. 2015; thesis eq. 4.17) in best-effort mode.

One gradient at x0, then a per-image bracket/bisection search on ε (pixels), one forward
pass per trial: ``steps`` is the number of trials.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import AttackResult, BestTracker, LossOracle, check_inputs
from .registry import register
from .search import BracketSearch


@register("fgsm", budget="forwards")
def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 30, targeted: bool = False,
         eps: float | None = None) -> AttackResult:
    """FGSM; ``eps`` fixes ε (pixels) and skips the search, else ``steps`` trials search it per image."""
    check_inputs(x, y)
    oracle = LossOracle(model, y, targeted, max_gradients=1, max_forwards=max(1, steps))
    best = BestTracker(x)
    loss, grad, logits = oracle.loss_and_grad(x)
    best.update(x, oracle.success(logits))
    sign = grad.sign()
    if eps is not None:
        xa = (x - eps * sign).clamp(0, 255)
        best.update(xa, oracle.success(oracle.logits(xa)))
        return best.result(oracle)
    # linear estimate of the ε that cancels the loss: L + g·(-ε sign g) = 0
    start = (loss.clamp_min(0) / grad.abs().flatten(1).sum(1).clamp_min(1e-12)).clamp_min(1e-2)
    search = BracketSearch(start)
    for _ in range(steps):
        e = search.value.view(-1, 1, 1, 1)
        xa = (x - e * sign).clamp(0, 255)
        success = oracle.success(oracle.logits(xa))
        best.update(xa, success)
        search.update(success)
    return best.result(oracle)
