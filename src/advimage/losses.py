"""The adversarial margin loss on logits (thesis eq. 4.15-4.16).

``L_adv(x) < 0`` exactly when the attack succeeds, so the loss is both a descent
direction and a stopping criterion.
"""

from __future__ import annotations

from torch import Tensor


def best_other_logit(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Largest logit and its class among classes other than ``labels``.

    logits: (N, C); labels: (N,) long. Returns values (N,) and classes (N,).
    """
    masked = logits.scatter(1, labels[:, None], float("-inf"))
    values, classes = masked.max(dim=1)
    return values, classes


def adversarial_loss(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Per-image margin loss, (N,).

    Untargeted (eq. 4.15 with a chosen by eq. 4.16): ``l_c - max_{k != c} l_k`` where
    ``c = labels`` is the class to move away from.
    Targeted: ``max_{k != t} l_k - l_t`` where ``t = labels`` is the target; this is
    eq. 4.15 with the competing class taken as the best non-target class, so that
    the loss is negative exactly when the prediction is ``t``.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other, _ = best_other_logit(logits, labels)
    return other - own if targeted else own - other


def is_adversarial(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Success of each image, (N,) bool: prediction differs from (or equals, if targeted) ``labels``."""
    pred = logits.argmax(dim=1)
    return pred == labels if targeted else pred != labels
