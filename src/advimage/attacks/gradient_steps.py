"""Shared pieces of the iterative gradient attacks run in best-effort mode (thesis §6.4.2)."""

from __future__ import annotations

import math

from torch import Tensor

from .base import LossOracle


def first_order_scale(oracle: LossOracle, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Loss, gradient and logits at the original x0: one gradient, reused by every run.

    Every best-effort run of I-FGSM, PGD2 and CW2 starts at x0, so the first gradient of each
    run is this one.
    """
    return oracle.loss_and_grad(x0)


def split_budget(steps: int, runs: int) -> tuple[int, int]:
    """(runs, iterations per run) so that 1 + runs * (iterations - 1) <= steps.

    The first iteration of each run reuses the gradient at x0 computed once.
    """
    if steps < 2:
        raise ValueError("best-effort iterative attacks need steps >= 2")
    runs = max(1, min(runs, steps - 1))
    per_run = 1 + (steps - 1) // runs
    return runs, per_run


def linear_distance(loss: Tensor, grad: Tensor) -> Tensor:
    """DeepFool-style L2 distance to the linearized boundary, in distortion units (eq. 6.2), (N,)."""
    n = grad[0].numel()
    return loss.clamp_min(0) / grad.flatten(1).norm(dim=1).clamp_min(1e-12) / math.sqrt(n)
