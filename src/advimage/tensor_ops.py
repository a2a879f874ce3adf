"""Small per-image tensor helpers shared by attacks and quantizers."""

from __future__ import annotations

from torch import Tensor


def batch_view(t: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting over images."""
    return t.view(-1, 1, 1, 1)


def l2_normalize(g: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-image unit-L2 direction of g (N, ...)."""
    n = g.flatten(1).norm(dim=1).clamp_min(eps)
    return g / n.view(-1, *[1] * (g.ndim - 1))
