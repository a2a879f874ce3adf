"""A saved detector is a folder: ``detector.json`` (type, feature kind, parameters, versions) and its
weights (``weights.npz`` or ``weights.safetensors``). Nothing is ever unpickled.

:func:`load` picks the detector class from ``detector.json`` (:mod:`.meta`, which the detectors
themselves use to save and load, so that they never import this module back).
"""

from __future__ import annotations

from pathlib import Path

from .meta import META, TYPES, DetectorLoadError, annotate, read_meta, versions, write_meta

__all__ = ["META", "TYPES", "DetectorLoadError", "annotate", "load", "read_meta", "versions", "write_meta"]


def load(directory: str | Path, device: str | None = None):
    """The detector saved in ``directory`` (RidgeDetector, FldEnsembleDetector or SRNetDetector on
    ``device``); DetectorLoadError naming the folder when it cannot be loaded."""
    meta = read_meta(directory)
    try:
        if meta["type"] == "ridge":
            from .linear import RidgeDetector
            return RidgeDetector.load(directory)
        if meta["type"] == "fld":
            from .linear import FldEnsembleDetector
            return FldEnsembleDetector.load(directory)
        from .srnet import SRNetDetector
        return SRNetDetector.load(directory, device=device)
    except DetectorLoadError:
        raise
    except Exception as exc:  # missing/damaged weights, wrong shapes: one message naming the folder
        raise DetectorLoadError(f"{directory}: cannot load the {meta['type']} detector "
                                f"({type(exc).__name__}: {exc})") from None
