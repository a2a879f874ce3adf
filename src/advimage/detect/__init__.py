"""Steganalysis detectors of adversarial images (thesis §8.4).

A detector: ``fit(cover, stego) -> self``, ``score(x) -> (N,)`` (higher = more likely
adversarial), ``save(directory)`` and :func:`load` (``detector.json`` + ``weights.npz`` or
``weights.safetensors``; nothing is unpickled). ``x`` is rich-model features (N, D) for ``ridge``
and ``fld`` (:mod:`.features`: SRM 34,671-d, SCRMQ1 18,157-d), uint8 images (N, H, W, 3) for
``srnet``. :func:`score_files` scores image files with either. Metrics (TPR at 5% FPR, ROC,
P(fool both)) are in :mod:`.metrics`, pair sets (``pairs.csv``) in :mod:`.pairs`.

SRNet needs torch (imported by :mod:`.srnet` only); the feature extractors use sealwatch.
"""

from __future__ import annotations

from .features import KINDS as FEATURE_KINDS
from .features import FeatureError, extract, extract_files
from .linear import FldEnsembleDetector, RidgeDetector
from .metrics import p_fool_both, p_fool_both_direct, plot_roc, roc_points, threshold_at_fpr, tpr_at_fpr
from .pairs import Pair, PairSetError, read_pairs
from .scoring import score_files
from .store import DetectorLoadError, load

DETECTORS = ("ridge", "fld", "srnet")


def names() -> tuple[str, ...]:
    """Detector names (``advimage detect train --detector``)."""
    return DETECTORS


def get(name: str):
    """The detector class registered under ``name``; ValueError listing the valid names."""
    if name == "ridge":
        return RidgeDetector
    if name == "fld":
        return FldEnsembleDetector
    if name == "srnet":
        from .srnet import SRNetDetector
        return SRNetDetector
    raise ValueError(f"unknown detector {name!r}; valid detectors: {', '.join(DETECTORS)}")


__all__ = ["DETECTORS", "DetectorLoadError", "FEATURE_KINDS", "FeatureError", "FldEnsembleDetector", "Pair",
           "PairSetError", "RidgeDetector", "extract", "extract_files", "get", "load", "names", "p_fool_both",
           "p_fool_both_direct", "plot_roc", "read_pairs", "roc_points", "score_files", "threshold_at_fpr",
           "tpr_at_fpr"]
