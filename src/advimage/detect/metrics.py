"""Detection metrics of thesis §8.4: TPR at 5% FPR, ROC, P(fool both).

Convention: scores are higher for "more likely adversarial". The threshold τ at false-positive
rate α is the (1 − α) quantile of the clean scores (NumPy's default linear interpolation); an
image is *detected* when its score is **strictly greater** than τ (ties at τ count as not
detected). With N clean scores the false-positive rate achieved on them is at most
α + (1 − α)/N (exactly ⌈α(N − 1)⌉/N or less with distinct scores: the interpolated quantile
lies between two order statistics), e.g. 5 % of 1,000 clean test images: at most 5.1 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{name}: no scores")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: scores contain NaN or infinity")
    return x


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float = 0.05) -> float:
    """τ = the (1 − fpr) quantile of the clean scores (N,)."""
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    return float(np.quantile(_scores(clean_scores, "clean_scores"), 1.0 - fpr))


def tpr_at_fpr(clean_scores: np.ndarray, adv_scores: np.ndarray, fpr: float = 0.05) -> float:
    """Fraction of adversarial scores (M,) > τ, with τ from :func:`threshold_at_fpr` (TPR₅ for fpr 0.05)."""
    tau = threshold_at_fpr(clean_scores, fpr)
    return float(np.mean(_scores(adv_scores, "adv_scores") > tau))


@dataclass
class Roc:
    """ROC curve: false- and true-positive rates (K,) at thresholds (K,) (decision: score > threshold)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoids; ties scored 1/2)."""
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined]  # NumPy 2 renamed it
        return float(trapezoid(self.tpr, self.fpr))


def roc_points(clean_scores: np.ndarray, adv_scores: np.ndarray) -> Roc:
    """Every operating point: for each distinct score s (descending), the rates of scores >= s,
    starting at (0, 0) with threshold +inf and ending at (1, 1)."""
    c, a = _scores(clean_scores, "clean_scores"), _scores(adv_scores, "adv_scores")
    s = np.unique(np.concatenate([c, a]))[::-1]
    c_sorted, a_sorted = np.sort(c), np.sort(a)
    fp = len(c) - np.searchsorted(c_sorted, s, side="left")  # clean scores >= s
    tp = len(a) - np.searchsorted(a_sorted, s, side="left")
    return Roc(fpr=np.concatenate([[0.0], fp / len(c)]), tpr=np.concatenate([[0.0], tp / len(a)]),
               thresholds=np.concatenate([[np.inf], s]))


def auc(clean_scores: np.ndarray, adv_scores: np.ndarray) -> float:
    """Area under the ROC curve = P(adv score > clean score) + ½ P(tie)."""
    return roc_points(clean_scores, adv_scores).auc


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, fpr: float = 0.05,
             title: str = "ROC") -> Path:
    """Write a PNG of ROC curves: name -> (clean scores, adversarial scores); marks TPR at ``fpr``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for name, (clean, adv) in curves.items():
        roc = roc_points(clean, adv)
        ax.plot(roc.fpr, roc.tpr, label=f"{name} (AUC {roc.auc:.3f}, TPR@{fpr:.0%} {tpr_at_fpr(clean, adv, fpr):.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.axvline(fpr, color="0.5", lw=0.8, ls=":")
    ax.set(xlabel="false-positive rate (clean flagged)", ylabel="true-positive rate (adversarial detected)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def p_fool_both(success_rate: float, tpr: float) -> float:
    """P(fool both) = P_suc × (1 − TPR₅): the thesis's estimate, assuming the classifier's and
    the detector's outcomes independent (rates in [0, 1])."""
    for name, v in (("success_rate", success_rate), ("tpr", tpr)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    return float(success_rate * (1.0 - tpr))


def p_fool_both_direct(success: np.ndarray, adv_scores: np.ndarray, threshold: float) -> float:
    """The direct estimate: fraction of images (N,) whose attack succeeded **and** whose
    adversarial score is not above τ (not detected); no independence assumed."""
    success = np.asarray(success, dtype=bool).reshape(-1)
    a = _scores(adv_scores, "adv_scores")
    if success.shape != a.shape:
        raise ValueError(f"success {success.shape} and adv_scores {a.shape} differ in length")
    return float(np.mean(success & ~(a > threshold)))
