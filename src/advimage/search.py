"""Vectorized per-image parameter search for best-effort mode (thesis §6.2.2, §6.4.2).

Each image carries its own parameter (ε, α or μ) as a tensor. After a trial, a success
means the parameter may be lowered, a failure that it must be raised. Until an image has
both a success and a failure, its parameter is halved or doubled (bracketing); then it is
bisected geometrically.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BracketSearch:
    """Per-image search of the smallest parameter value that succeeds.

    start: (N,) positive initial values. ``grow`` is the bracketing factor.
    """

    def __init__(self, start: Tensor, grow: float = 2.0) -> None:
        self.value = start.clone().clamp_min(1e-12)
        self.low = torch.zeros_like(self.value)          # largest value known to fail
        self.high = torch.full_like(self.value, float("inf"))  # smallest value known to succeed
        self.grow = grow

    def update(self, success: Tensor) -> Tensor:
        """Record the trial at ``self.value``; return the next values (N,)."""
        self.high = torch.where(success, torch.minimum(self.high, self.value), self.high)
        self.low = torch.where(~success, torch.maximum(self.low, self.value), self.low)
        has_low, has_high = self.low > 0, torch.isfinite(self.high)
        bisect = torch.sqrt(self.low.clamp_min(1e-30) * self.high.where(has_high, self.low))
        self.value = torch.where(
            has_low & has_high, bisect,
            torch.where(has_high, self.high / self.grow, self.low * self.grow),
        )
        return self.value
