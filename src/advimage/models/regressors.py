"""Differentiable image-quality regressors: float pixels (N, 3, H, W) in [0, 255] -> scores (N,).

A regressor carries ``higher_is_better`` (the direction of its score), ``config`` (its name) and
``device``; the engine attacks it with :class:`~advimage.criteria.ScoreBelow` (thesis App. A).
Registered: ``brisque``, the *quality* 100 − BRISQUE (so that, like App. A's KonCept network,
higher is better: pushing the quality below s_a is pushing BRISQUE above 100 − s_a).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class RegressorConfig:
    """name: registered name; description: what the score is."""

    name: str
    description: str = ""
    kind: str = "regressor"


class Quality(nn.Module):
    """``offset − score`` of a lower-is-better score: a higher-is-better quality."""

    higher_is_better = True

    def __init__(self, score: nn.Module, offset: float, config: RegressorConfig) -> None:
        super().__init__()
        self.score = score
        self.offset = float(offset)
        self.config = config
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(iter(self.buffers())).device

    def forward(self, x: Tensor) -> Tensor:
        return self.offset - self.score(x)


def _brisque(**kwargs) -> nn.Module:
    from .brisque import BRISQUE

    return Quality(BRISQUE(**kwargs), 100.0, RegressorConfig(
        "brisque", "quality = 100 − BRISQUE (Mittal et al. 2012; the brisque package's libsvm model)"))


_REGRESSORS: dict[str, Callable[..., nn.Module]] = {"brisque": _brisque}


class UnknownRegressorError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def regressor_names() -> list[str]:
    return sorted(_REGRESSORS)


def load_regressor(name: str, device: str | None = None, **kwargs) -> nn.Module:
    """Build a registered regressor in eval mode on ``device`` (default: CUDA if available)."""
    if name not in _REGRESSORS:
        raise UnknownRegressorError(f"unknown regressor {name!r}; valid regressors: {', '.join(regressor_names())}")
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return _REGRESSORS[name](**kwargs).to(dev).eval()


def is_regressor(model: object) -> bool:
    """Whether ``model`` is a regressor (it says which way its score goes)."""
    return isinstance(getattr(model, "higher_is_better", None), bool)
