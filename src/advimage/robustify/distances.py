"""Feature distances of thesis Appendix B, eqs. (9.8)-(9.11), for (N, n_f) feature batches.

Each returns a scalar: the mean over the batch (and, for MSE and MSLE, over the features).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _check(g1: Tensor, g2: Tensor) -> None:
    if g1.shape != g2.shape:
        raise ValueError(f"feature batches differ in shape: {tuple(g1.shape)} vs {tuple(g2.shape)}")
    if g1.ndim != 2:
        raise ValueError(f"expected (N, n_f) features, got {tuple(g1.shape)}")


def mse(g1: Tensor, g2: Tensor) -> Tensor:
    """Mean squared error, eq. (9.8): E[(g1 - g2)^2]."""
    _check(g1, g2)
    return (g1 - g2).square().mean()


def msle(g1: Tensor, g2: Tensor) -> Tensor:
    """Mean squared logarithmic error, eq. (9.9): E[(log(g1 + 1) - log(g2 + 1))^2].

    Defined for features > -1 (the thesis's features follow a ReLU: >= 0); smaller ones are refused.
    """
    _check(g1, g2)
    low = float(torch.minimum(g1.detach().min(), g2.detach().min())) if g1.numel() else 0.0
    if low <= -1:
        raise ValueError(f"msle needs features > -1 (got {low:.3g}); use mse or cc for this model")
    return (torch.log1p(g1) - torch.log1p(g2)).square().mean()


def cc(g1: Tensor, g2: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine correlation, eqs. (9.10)-(9.11): 1 - cos(g1, g2)^2 per image, averaged over the batch.

    Invariant to a (non-zero) rescaling of either vector, also by a negative factor.
    """
    _check(g1, g2)
    cos = (g1 * g2).sum(1) / (g1.norm(dim=1) * g2.norm(dim=1)).clamp_min(eps)
    return (1 - cos.square()).mean()


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mse, "msle": msle, "cc": cc}


def names() -> list[str]:
    return list(DISTANCES)


def get(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The distance called ``name``; refused with the valid names."""
    try:
        return DISTANCES[name]
    except KeyError:
        raise ValueError(f"unknown distance {name!r}; valid: {', '.join(DISTANCES)}") from None
