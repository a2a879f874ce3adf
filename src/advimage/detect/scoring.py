"""Scores of image files by any saved detector: rich-model features for the linear detectors,
pixels for SRNet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def score_files(detector, paths: Sequence[str | os.PathLike], *, processes: int = 1,
                cache_dir: str | os.PathLike | None = None, progress: bool = True, batch_size: int = 32) -> np.ndarray:
    """Scores (N,) float64 of image files, higher = more likely adversarial.

    detector: a RidgeDetector / FldEnsembleDetector (``detector.features`` names the feature kind:
    features extracted with ``processes`` workers and cached in ``cache_dir``) or an SRNetDetector
    (``features`` None: pixels decoded with Pillow, scored in batches of equal-size images).
    A missing or corrupt file raises FeatureError naming it.
    """
    paths = [Path(p) for p in paths]
    if detector.features is not None:
        from .features import extract_files

        x = extract_files(paths, detector.features, processes=processes, cache_dir=cache_dir, progress=progress)
        return np.asarray(detector.score(x), dtype=np.float64)
    from .features import read_rgb

    images = [read_rgb(p) for p in paths]
    out = np.empty(len(paths), dtype=np.float64)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for idx in by_shape.values():
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            out[chunk] = detector.score(np.stack([images[i] for i in chunk]))
    return out
