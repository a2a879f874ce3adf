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
from .meta import DETECTORS, DetectorKind, UnknownDetectorError
from .metrics import p_fool_both, p_fool_both_direct, plot_roc, roc_points, threshold_at_fpr, tpr_at_fpr
from .pairs import Pair, PairSetError, read_pairs
from .scoring import score_files
from .store import DetectorLoadError, load


def _ridge() -> type:
    return RidgeDetector


def _fld() -> type:
    return FldEnsembleDetector


def _srnet() -> type:
    from .srnet import SRNetDetector  # torch, only when asked for
    return SRNetDetector


DETECTORS.register("ridge", DetectorKind("features", _ridge),
                   "ridge regression (leave-one-out λ) on standardized rich-model features")
DETECTORS.register("fld", DetectorKind("features", _fld),
                   "Kodovský's ensemble of FLD base learners on rich-model features (sealwatch)")
DETECTORS.register("srnet", DetectorKind("pixels", _srnet), "SRNet (Boroumand, Chen, Fridrich 2019) on pixels")


def names() -> list[str]:
    """Detector names (``advimage detect train --detector``), sorted."""
    return DETECTORS.names()


def get(name: str) -> type:
    """The detector class registered under ``name``; :class:`UnknownDetectorError` (a ValueError)
    listing the valid names."""
    return DETECTORS.get(name).load_class()


__all__ = ["DETECTORS", "DetectorKind", "DetectorLoadError", "FEATURE_KINDS", "FeatureError", "FldEnsembleDetector",
           "Pair", "PairSetError", "RidgeDetector", "UnknownDetectorError", "extract", "extract_files", "get", "load",
           "names", "p_fool_both", "p_fool_both_direct", "plot_roc", "read_pairs", "roc_points", "score_files",
           "threshold_at_fpr", "tpr_at_fpr"]
