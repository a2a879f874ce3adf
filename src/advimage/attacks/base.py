"""The attack contract: result dataclass and budget accounting.

Every attack is a function ``run(model, x, y, *, steps, targeted=False, ...) -> AttackResult``
with ``x`` float pixels in [0, 255] of shape (N, 3, H, W) and ``y`` either (N,) long labels (the
true class to move away from, or the target class when ``targeted``) or a
:class:`~advimage.criteria.Criterion`. Budgets are counted by :mod:`advimage.oracle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..distortion import distortion
from ..oracle import BudgetExceeded, LossFn, LossOracle  # noqa: F401  (re-exported)
from ..tensor_ops import batch_view, l2_normalize  # noqa: F401  (re-exported)


@dataclass
class AttackResult:
    """What an attack returns; all tensors are on the input's device.

    x_adv: (N, 3, H, W) float pixels in [0, 255]; the lowest-distortion successful
        point found per image, or the original where the attack failed.
    success: (N,) bool, whether ``x_adv`` fools the model (in float).
    distortion: (N,) float, eq. (6.2) of ``x_adv`` against the original, pixel units.
    gradients: (N,) long, forward+backward passes spent on each image.
    forwards: (N,) long, forward-only passes spent on each image.
    queries: (N,) long, label-only queries (black-box attacks).
    """

    x_adv: Tensor
    success: Tensor
    distortion: Tensor
    gradients: Tensor
    forwards: Tensor
    queries: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def __post_init__(self) -> None:
        n = self.x_adv.shape[0]
        if self.queries.numel() == 0 and n:
            self.queries = torch.zeros(n, dtype=torch.long, device=self.x_adv.device)


class BestTracker:
    """Keeps, per image, the successful point of lowest distortion seen so far."""

    def __init__(self, x0: Tensor) -> None:
        self.x0 = x0
        self.x_best = x0.clone()
        self.d_best = torch.full((x0.shape[0],), float("inf"), device=x0.device)
        self.found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)

    def update(self, x: Tensor, success: Tensor) -> None:
        d = distortion(x, self.x0).to(self.d_best.device)
        better = success & (d < self.d_best)
        self.d_best = torch.where(better, d, self.d_best)
        self.x_best = torch.where(better[:, None, None, None], x.detach(), self.x_best)
        self.found |= success

    def result(self, oracle: LossOracle, queries: Tensor | None = None) -> AttackResult:
        d = torch.where(self.found, self.d_best, torch.zeros_like(self.d_best))
        return AttackResult(
            x_adv=self.x_best, success=self.found.clone(), distortion=d,
            gradients=oracle.gradients.clone(), forwards=oracle.forwards.clone(),
            queries=queries if queries is not None else torch.zeros_like(oracle.gradients),
        )


def check_inputs(x: Tensor, y) -> None:
    """Validate the attack contract's inputs with clear messages (y: labels (N,) or a criterion)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must be (N, 3, H, W) pixels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be float pixels in [0, 255], got dtype {x.dtype}; use x.float()")
    n = y.shape[0] if isinstance(y, Tensor) and y.ndim == 1 else (len(y) if hasattr(y, "__len__") else None)
    if n != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else f"a criterion about {n} images"
        raise ValueError(f"y must have shape ({x.shape[0]},), got {shape}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 255):
        raise ValueError("x must be pixels in [0, 255]; scale [0, 1] inputs by 255 first")
    if x.numel() > 1000 and float(x.max()) <= 1.0:
        import warnings
        warnings.warn("x looks like [0, 1] data; advimage expects pixels in [0, 255]", stacklevel=3)
