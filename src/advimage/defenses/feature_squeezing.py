"""Feature-squeezing detector (Xu, Evans & Qi, NDSS 2018; thesis §5.3.3).

score(x) = max over squeezers s of ``|| softmax(f(x)) − softmax(f(s(x))) ||_1``: an adversarial image
is expected to move more under a squeezer than a natural one. ``fit`` sets the threshold on clean
images so that at most ``fpr`` of them (5% by default, as Xu et al.) score above it; ``detect``
flags scores above the threshold. The default squeezers are Xu et al.'s ImageNet ones without
non-local means: 5-bit depth and 2×2 median smoothing (:mod:`advimage.defenses.squeeze`).

The model is the undefended classifier (pixels (N, 3, H, W) in [0, 255] -> logits (N, C)); images
are given at the model's input size.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .squeeze import BitDepth, MedianSmoothing, Squeezer


def default_squeezers() -> list[Squeezer]:
    """Xu et al.'s ImageNet squeezers without non-local means: 5-bit depth, 2×2 median."""
    return [BitDepth(5), MedianSmoothing(2)]


def threshold_at_fpr(clean_scores: Tensor, fpr: float = 0.05) -> float:
    """The smallest calibration score ``t`` such that at most ``fpr`` of ``clean_scores`` are > t
    (the ⌈n(1 − fpr)⌉-th smallest score)."""
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    s = clean_scores.detach().flatten().double().sort().values
    if not s.numel():
        raise ValueError("fitting a threshold needs at least one clean image")
    k = max(1, math.ceil(s.numel() * (1 - fpr)))
    return float(s[k - 1])


class FeatureSqueezingDetector:
    """Xu et al.'s detector around ``model``: :meth:`fit` (clean images) -> :meth:`score` / :meth:`detect`.

    squeezers: front-end layers (default :func:`default_squeezers`); fpr: false-positive rate the
    threshold allows on the calibration images; batch_size: images per forward pass.
    """

    def __init__(self, model: nn.Module, squeezers: Sequence[Squeezer] | None = None, *, fpr: float = 0.05,
                 batch_size: int = 32) -> None:
        if not 0 <= fpr < 1:
            raise ValueError(f"fpr must be in [0, 1), got {fpr}")
        self.model = model
        self.squeezers = list(squeezers) if squeezers is not None else default_squeezers()
        if not self.squeezers:
            raise ValueError("feature squeezing needs at least one squeezer")
        self.fpr = fpr
        self.batch_size = batch_size
        self.threshold: float | None = None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.squeezers]

    def _device(self) -> torch.device:
        dev = getattr(self.model, "device", None)
        if isinstance(dev, torch.device):
            return dev
        return next(iter(list(self.model.parameters()) + list(self.model.buffers()))).device

    @torch.no_grad()
    def squeezer_scores(self, x: Tensor) -> Tensor:
        """L1 distances (N, S) between softmax(f(x)) and softmax(f(s(x))) for each squeezer s."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) pixels, got {tuple(x.shape)}")
        dev = self._device()
        out = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size].to(dev).float()
            p0 = self.model(xb).softmax(-1)
            out.append(torch.stack([(self.model(s(xb)).softmax(-1) - p0).abs().sum(-1) for s in self.squeezers], 1))
        return torch.cat(out).cpu() if out else torch.zeros(0, len(self.squeezers))

    def score(self, x: Tensor) -> Tensor:
        """Detection scores (N,): the largest squeezer distance."""
        return self.squeezer_scores(x).amax(1)

    def fit(self, clean: Tensor) -> "FeatureSqueezingDetector":
        """Set :attr:`threshold` so that at most ``fpr`` of the clean images ``clean`` are flagged."""
        self.threshold = threshold_at_fpr(self.score(clean), self.fpr)
        return self

    def detect(self, x: Tensor | None = None, *, scores: Tensor | None = None) -> Tensor:
        """Flags (N,) bool: score above the fitted threshold (``scores`` given: no model call)."""
        if self.threshold is None:
            raise RuntimeError("call fit(clean_images) before detect")
        if scores is None:
            if x is None:
                raise ValueError("give images or scores")
            scores = self.score(x)
        return scores > self.threshold

    def __repr__(self) -> str:
        t = "unfitted" if self.threshold is None else f"threshold={self.threshold:.4g}"
        return f"FeatureSqueezingDetector(squeezers={self.names}, fpr={self.fpr}, {t})"
