"""What "adversarial" means: a criterion is a loss that is negative exactly on success.

Attacks, quantizers and the engine ask a criterion, never an argmax test of their own, so that
new targets (a detector, a regressor's score) plug in without touching them. Label criteria
carry ``labels`` for the attacks that need them (DDN's cross-entropy, decision-based attacks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .losses import adversarial_loss


@runtime_checkable
class Criterion(Protocol):
    """``loss(logits) -> (N,)`` negative exactly where ``success(logits) -> (N,) bool`` holds.

    ``subset(idx)`` restricts the criterion to some images (idx: long indices or a bool mask).
    ``describe()`` names it in stored settings.
    """

    def loss(self, logits: Tensor) -> Tensor: ...
    def success(self, logits: Tensor) -> Tensor: ...
    def subset(self, idx: Tensor) -> "Criterion": ...
    def describe(self) -> dict: ...


@dataclass(frozen=True)
class Misclassification:
    """Untargeted: leave class ``labels`` (N,). Loss eq. 4.15-4.16 on logits."""

    labels: Tensor
    targeted = False

    def loss(self, logits: Tensor) -> Tensor:
        return adversarial_loss(logits, self.labels.to(logits.device), targeted=False)

    def success(self, logits: Tensor) -> Tensor:
        return logits.argmax(1) != self.labels.to(logits.device)

    def subset(self, idx: Tensor) -> "Misclassification":
        return Misclassification(self.labels[idx.to(self.labels.device)])

    def describe(self) -> dict:
        return {"criterion": "misclassification"}

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TargetedMisclassification:
    """Targeted: be classified as ``labels`` (N,) (the targets). Loss ``max_{k≠t} l_k − l_t``."""

    labels: Tensor
    targeted = True

    def loss(self, logits: Tensor) -> Tensor:
        return adversarial_loss(logits, self.labels.to(logits.device), targeted=True)

    def success(self, logits: Tensor) -> Tensor:
        return logits.argmax(1) == self.labels.to(logits.device)

    def subset(self, idx: Tensor) -> "TargetedMisclassification":
        return TargetedMisclassification(self.labels[idx.to(self.labels.device)])

    def describe(self) -> dict:
        return {"criterion": "targeted"}

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class AllPaths:
    """Several views of one image (logits (N, P, C), e.g. a victim's PIL and float resizes):
    success only when ``inner`` succeeds on every view; loss the worst view's (max over P), so
    that descending it works on the view still holding out (thesis §7.4.6 / §9.4.5, worst case)."""

    inner: "Criterion"

    @property
    def labels(self) -> Tensor:
        return self.inner.labels  # type: ignore[attr-defined]

    @property
    def targeted(self) -> bool:
        return bool(getattr(self.inner, "targeted", False))

    def loss(self, logits: Tensor) -> Tensor:
        if logits.ndim == 2:
            return self.inner.loss(logits)
        return torch.stack([self.inner.loss(logits[:, p]) for p in range(logits.shape[1])], 1).amax(1)

    def success(self, logits: Tensor) -> Tensor:
        if logits.ndim == 2:
            return self.inner.success(logits)
        return torch.stack([self.inner.success(logits[:, p]) for p in range(logits.shape[1])], 1).all(1)

    def subset(self, idx: Tensor) -> "AllPaths":
        return AllPaths(self.inner.subset(idx))

    def describe(self) -> dict:
        return {**self.inner.describe(), "all_paths": True}

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


#: the default margin κ₀ (logits) of files made for a classifier (``Settings.margin``): room for
#: what another machine, batch size or pipeline changes in the logits. Measured on Lite0
#: (studies/noise_margin.py, docs/results.md): 1 vs 2 threads and batch 1 vs 32 move the
#: top-2 logit margin by <= 4e-6, clamping the float resize to [0, 255] by up to 0.025; bf16
#: inference by up to 0.17 (not covered: a different pipeline, see --victims).
NOISE_MARGIN = 0.05


@dataclass(frozen=True)
class Margin:
    """``inner`` with a margin κ ≥ 0 (logit units): success only when ``inner.loss ≤ −κ``; loss
    ``inner.loss + κ``. For files that must stay adversarial after small changes (a victim's
    re-encoding or resizing): quantizers then search λ until the margin is reached."""

    inner: "Criterion"
    kappa: float

    @property
    def labels(self) -> Tensor:
        return self.inner.labels  # type: ignore[attr-defined]

    @property
    def targeted(self) -> bool:
        return bool(getattr(self.inner, "targeted", False))

    def loss(self, logits: Tensor) -> Tensor:
        return self.inner.loss(logits) + self.kappa

    def success(self, logits: Tensor) -> Tensor:
        return self.inner.success(logits) & (self.inner.loss(logits) <= -self.kappa)

    def subset(self, idx: Tensor) -> "Margin":
        return Margin(self.inner.subset(idx), self.kappa)

    def describe(self) -> dict:
        return {**self.inner.describe(), "margin": self.kappa}

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScoreBelow:
    """A regressor's score must rate the image worse than a target (thesis App. A, eq. 5).

    ``targets`` (N,): s_a per image. ``higher_is_better`` (default, a quality score such as
    KonCept's or 100 − BRISQUE): success when ``score < s_a``, loss ``score − s_a``. For a
    lower-is-better score (raw BRISQUE), ``higher_is_better=False``: success when ``score > s_a``,
    loss ``s_a − score``. Either way the loss is negative exactly on success. The model's output
    is (N,) or (N, 1).
    """

    targets: Tensor
    higher_is_better: bool = True
    targeted = False

    @staticmethod
    def _scores(out: Tensor) -> Tensor:
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 1:
            raise ValueError(f"a score criterion needs one score per image (N,) or (N, 1), got {tuple(out.shape)}")
        return out

    def loss(self, logits: Tensor) -> Tensor:
        s = self._scores(logits)
        t = self.targets.to(s.device, s.dtype)
        return s - t if self.higher_is_better else t - s

    def success(self, logits: Tensor) -> Tensor:
        return self.loss(logits) < 0

    def subset(self, idx: Tensor) -> "ScoreBelow":
        return ScoreBelow(self.targets[idx.to(self.targets.device)], self.higher_is_better)

    @property
    def device(self) -> torch.device:
        return self.targets.device

    def describe(self) -> dict:
        return {"criterion": "score-below" if self.higher_is_better else "score-above"}

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass(frozen=True)
class FixedRival:
    """Untargeted with the rival class held fixed (thesis eq. 8.10, on logits as the project does,
    eq. 4.15's remark): loss ``l_{c0} − l_{ca}`` with c0 = ``labels`` (N,) and c_a = ``rivals`` (N,),
    the class the attack reached; success where that loss is negative, i.e. c_a beats c0 (which
    implies a misclassification, so such a file satisfies :class:`Misclassification` too, with at
    least the same margin). Eq. 8.11's constraint L(ℓ) < 0, taken literally."""

    labels: Tensor
    rivals: Tensor
    targeted = False

    def __post_init__(self) -> None:
        if self.rivals.shape != self.labels.shape:
            raise ValueError(f"rivals {tuple(self.rivals.shape)} and labels {tuple(self.labels.shape)} differ in shape")
        if bool((self.rivals == self.labels.to(self.rivals.device)).any()):
            raise ValueError("a rival class c_a must differ from the label c0 (eq. 8.10)")

    def loss(self, logits: Tensor) -> Tensor:
        own = logits.gather(1, self.labels.to(logits.device)[:, None])[:, 0]
        rival = logits.gather(1, self.rivals.to(logits.device)[:, None])[:, 0]
        return own - rival

    def success(self, logits: Tensor) -> Tensor:
        return self.loss(logits) < 0

    def subset(self, idx: Tensor) -> "FixedRival":
        idx = idx.to(self.labels.device)
        return FixedRival(self.labels[idx], self.rivals[idx.to(self.rivals.device)])

    def describe(self) -> dict:
        return {"criterion": "misclassification", "rival": "fixed"}

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def rival_classes(logits: Tensor, labels: Tensor) -> Tensor:
    """c_a of eq. 8.10: the best class other than c0 = ``labels`` (N,) in ``logits`` (N, C) at x_a,
    the predicted class wherever the attack succeeded. Several paths or members (N, P, C): the
    best other class of their mean logits, one c_a per image. Returns (N,) long."""
    from .losses import best_other_logit

    if logits.ndim == 3:
        logits = logits.mean(1)
    return best_other_logit(logits, labels.to(logits.device))[1]


def fix_rival(crit: "Criterion", rivals: Tensor) -> "Criterion":
    """``crit`` with its untargeted label criterion replaced by :class:`FixedRival` (c_a = ``rivals``
    (N,)), keeping the :class:`Margin` and :class:`AllPaths` wrappers around it. Other criteria
    (targeted: the class is fixed already; scores: no class) raise ``TypeError``."""
    if isinstance(crit, Margin):
        return Margin(fix_rival(crit.inner, rivals), crit.kappa)
    if isinstance(crit, AllPaths):
        return AllPaths(fix_rival(crit.inner, rivals))
    if isinstance(crit, Misclassification):
        return FixedRival(crit.labels, rivals.to(crit.labels.device))
    if isinstance(crit, FixedRival):
        return crit
    raise TypeError(f"a fixed rival class (eq. 8.10) applies to the untargeted misclassification criterion, "
                    f"not to {type(crit).__name__}")


def untargeted_labels(crit: "Criterion") -> Tensor | None:
    """The labels c0 (N,) of an untargeted label criterion under its wrappers, else None."""
    while isinstance(crit, (Margin, AllPaths)):
        crit = crit.inner
    return crit.labels if isinstance(crit, (Misclassification, FixedRival)) else None


LabelCriterion = Misclassification | TargetedMisclassification


def as_criterion(y: "Tensor | Criterion", targeted: bool = False) -> Criterion:
    """A criterion from labels (N,) and ``targeted``, or ``y`` itself if it already is one."""
    if isinstance(y, Tensor):
        if y.ndim != 1:
            raise ValueError(f"labels must have shape (N,), got {tuple(y.shape)}")
        return TargetedMisclassification(y.long()) if targeted else Misclassification(y.long())
    if isinstance(y, Criterion):
        return y
    raise TypeError(f"expected labels (N,) or a Criterion, got {type(y).__name__}")


def label_criterion(y: "Tensor | Criterion", targeted: bool, attack: str) -> LabelCriterion:
    """For attacks that need class labels: refuse other criteria with a clear message."""
    crit = as_criterion(y, targeted)
    if isinstance(crit, AllPaths):
        raise TypeError(f"{attack} needs one model output per image, not several paths; "
                        "use --victim pil or --victim float")
    if not isinstance(crit, (Misclassification, TargetedMisclassification)):
        raise TypeError(f"{attack} needs a label criterion (misclassification, targeted); got {type(crit).__name__}")
    return crit


def criterion_size(crit: Criterion) -> int:
    """Number of images a criterion is about (``len`` when it has one)."""
    return len(crit)  # type: ignore[arg-type]
