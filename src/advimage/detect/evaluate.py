"""Evaluation of a detector on the test split of a pair set (thesis §8.4): TPR₅, AUC, ROC and,
when the pair set says which attacks succeeded, P(fool both)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .metrics import auc, p_fool_both, p_fool_both_direct, plot_roc, threshold_at_fpr, tpr_at_fpr
from .pairs import Pair


@dataclass
class Evaluation:
    """Metrics of one detector on test pairs. Rates in [0, 1]; ``threshold`` τ: detected iff score > τ."""

    detector: str
    features: str | None
    pairs: int
    fpr: float
    threshold: float
    tpr: float
    auc: float
    success_rate: float | None = None        # P_suc over the test pairs (``success`` column)
    p_fool_both: float | None = None         # P_suc × (1 − TPR), thesis (independence)
    p_fool_both_direct: float | None = None  # fraction successful and not detected
    clean_scores: list[float] = field(default_factory=list)
    adv_scores: list[float] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)

    def markdown(self) -> str:
        """A one-row Markdown table."""
        pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
        head = ["detector", "features", "test pairs", f"TPR@{self.fpr:.0%} FPR %", "AUC", "P_suc %",
                "P(fool both) % (P_suc·(1−TPR))", "P(fool both) % (direct)"]
        row = [self.detector, self.features or "pixels", str(self.pairs), pct(self.tpr), f"{self.auc:.4f}",
               pct(self.success_rate), pct(self.p_fool_both), pct(self.p_fool_both_direct)]
        return "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n| " + " | ".join(row) + " |\n"


def evaluate(clean_scores: np.ndarray, adv_scores: np.ndarray, *, detector: str, features: str | None,
             fpr: float = 0.05, success: np.ndarray | None = None, pairs: list[Pair] | None = None) -> Evaluation:
    """Metrics from the scores of the test covers (N,) and their adversarial images (N,)."""
    c, a = np.asarray(clean_scores, dtype=np.float64), np.asarray(adv_scores, dtype=np.float64)
    tau, tpr = threshold_at_fpr(c, fpr), tpr_at_fpr(c, a, fpr)
    ev = Evaluation(detector, features, len(a), fpr, tau, tpr, auc(c, a), clean_scores=c.tolist(),
                    adv_scores=a.tolist())
    if success is not None:
        s = np.asarray(success, dtype=bool)
        ev.success_rate = float(s.mean())
        ev.p_fool_both = p_fool_both(ev.success_rate, tpr)
        ev.p_fool_both_direct = p_fool_both_direct(s, a, tau)
    if pairs is not None:
        ev.files = [{"source": p.source, "cover": str(p.cover), "adversarial": str(p.adversarial)} for p in pairs]
    return ev


def write_evaluation(ev: Evaluation, out: str | Path) -> dict[str, Path]:
    """Write ``evaluation.json``, ``evaluation.md`` and ``roc.png`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "markdown": out / "evaluation.md", "roc": out / "roc.png"}
    paths["json"].write_text(json.dumps(asdict(ev), indent=2) + "\n")
    paths["markdown"].write_text(ev.markdown())
    plot_roc({f"{ev.detector} ({ev.features or 'pixels'})": (np.array(ev.clean_scores), np.array(ev.adv_scores))},
             paths["roc"], fpr=ev.fpr, title=f"ROC, {ev.pairs} test pairs")
    return paths
