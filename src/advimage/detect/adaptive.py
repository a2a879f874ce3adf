"""The adaptive attack of thesis §8.5 ("if time allows"): fool the classifier *and* a detector.

A differentiable detector score s(x) (higher = more likely adversarial) and its threshold τ
(TPR₅'s: the 95th percentile of clean scores) are composed with the classifier:

* :class:`DetectorGuard` is a classifier whose output is (N, C + 1): the classifier's logits and
  one more column, s(x) − τ;
* :class:`Undetected` wraps the classifier's criterion: success where the classifier is fooled
  **and** s(x) < τ (the detector calls an image adversarial when s > τ); loss
  max(L_classifier, weight · (s − τ + margin)), negative exactly on success, as every criterion.

Any attack or quantizer that takes a criterion (PGD, FGSM, CW, BP; smart, HILL, MiPOD, GINA)
then descends the worse of the two terms, the same composition as
:class:`~advimage.criteria.AllPaths` over several views. The rich-model detectors (SRM, SCRMQ1)
count quantized residuals in histograms and have no gradient; SRNet or any torch detector does.

A quantizer linearizes the loss at the attack's output, and the gradient of a max is the active
term's: where the classifier's margin is the thinner one, the quantizer moves along the
classifier's gradient alone and its file may be caught although the float image was not (on the
linear models of tests/test_adaptive.py, ``smart`` and ``hill`` fail there where ``gina``, whose
lattices are re-checked one by one, keeps the file hidden).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..criteria import Criterion


class DetectorGuard(nn.Module):
    """``model`` with the detector's margin as one more output column.

    model: pixels (N, 3, H, W) in [0, 255] -> logits (N, C). score: the same pixels -> (N,)
    detector scores (differentiable). threshold: τ (score units). forward -> (N, C + 1).
    """

    def __init__(self, model: nn.Module, score: Callable[[Tensor], Tensor], threshold: float) -> None:
        super().__init__()
        self.model = model
        self.score = score  # an nn.Module score is registered as a submodule
        self.threshold = float(threshold)
        self.config = getattr(model, "config", None)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        s = self.score(x).reshape(-1, 1).to(logits.dtype)
        return torch.cat([logits, s - self.threshold], 1)


@dataclass(frozen=True)
class Undetected:
    """``inner`` (the classifier's criterion, on the first C columns) and the detector's verdict
    (the last column, s − τ): success only where both hold. weight scales the detector's term in
    the loss (score units to logit units); margin ≥ 0 asks s ≤ τ − margin."""

    inner: Criterion
    weight: float = 1.0
    margin: float = 0.0

    @property
    def labels(self) -> Tensor:
        return self.inner.labels  # type: ignore[attr-defined]

    @property
    def targeted(self) -> bool:
        return bool(getattr(self.inner, "targeted", False))

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        if out.ndim != 2:
            raise ValueError(f"expected (N, C + 1) outputs of a DetectorGuard, got {tuple(out.shape)}")
        return out[:, :-1], out[:, -1] + self.margin

    def loss(self, out: Tensor) -> Tensor:
        logits, det = self._split(out)
        return torch.maximum(self.inner.loss(logits), self.weight * det)

    def success(self, out: Tensor) -> Tensor:
        logits, det = self._split(out)
        return self.inner.success(logits) & (det < 0)

    def subset(self, idx: Tensor) -> Undetected:
        return Undetected(self.inner.subset(idx), self.weight, self.margin)

    def describe(self) -> dict:
        return {**self.inner.describe(), "undetected": {"weight": self.weight, "margin": self.margin}}

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


def srnet_score(net: nn.Module) -> Callable[[Tensor], Tensor]:
    """SRNet's score (logit of stego − logit of cover) on float pixels (N, 3, H, W), differentiable;
    the network in eval mode (batch normalization with its running statistics)."""
    net.eval()

    def score(x: Tensor) -> Tensor:
        logits = net(x)
        return logits[:, 1] - logits[:, 0]
    return score
