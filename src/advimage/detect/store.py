"""A saved detector is a folder: ``detector.json`` (type, feature kind, parameters, versions) and its
weights (``weights.npz`` or ``weights.safetensors``). Nothing is ever unpickled.

:func:`load` picks the detector class from ``detector.json`` through the registry of :mod:`.meta`
(which the detectors themselves use to save and load, so that they never import this module back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .meta import DETECTORS, META, DetectorLoadError, annotate, read_meta, versions, write_meta

__all__ = ["DETECTORS", "META", "DetectorLoadError", "annotate", "load", "read_meta", "versions", "write_meta"]


def load(directory: str | Path, device: str | None = None):
    """The detector saved in ``directory``, of the registered type its ``detector.json`` names
    (RidgeDetector, FldEnsembleDetector, or SRNetDetector on ``device``); DetectorLoadError naming
    the folder when it cannot be loaded."""
    meta = read_meta(directory)
    kind = DETECTORS.get(meta["type"])
    try:
        cls: Any = kind.load_class()
        return cls.load(directory, device=device) if kind.inputs == "pixels" else cls.load(directory)
    except DetectorLoadError:
        raise
    except Exception as exc:  # missing/damaged weights, wrong shapes: one message naming the folder
        raise DetectorLoadError(f"{directory}: cannot load the {meta['type']} detector "
                                f"({type(exc).__name__}: {exc})") from None
