"""A saved detector is a folder: ``detector.json`` (type, feature kind, parameters, versions) and its
weights (``weights.npz`` or ``weights.safetensors``). Nothing is ever unpickled."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

META = "detector.json"
TYPES = ("ridge", "fld", "srnet")


class DetectorLoadError(ValueError):
    """A detector folder that cannot be loaded (missing, wrong type, damaged)."""


def versions() -> dict[str, str]:
    """Versions of the packages that made a detector."""
    from .. import __version__

    out = {"advimage": __version__}
    for pkg in ("sealwatch", "scikit-learn", "numpy", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_meta(directory: str | Path, type: str, features: str | None, params: dict[str, Any]) -> Path:
    path = Path(directory) / META
    meta = {"type": type, "features": features, "params": params, "versions": versions()}
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_meta(directory: str | Path, expected: str | None = None) -> dict[str, Any]:
    """The parsed ``detector.json`` of a folder; DetectorLoadError when absent, damaged or of another type."""
    path = Path(directory) / META
    if not path.is_file():
        raise DetectorLoadError(f"{directory}: not a detector folder (no {META})")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DetectorLoadError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("type") not in TYPES:
        found = meta.get("type") if isinstance(meta, dict) else meta
        raise DetectorLoadError(f"{path}: unknown detector type {found!r}; valid types: {', '.join(TYPES)}")
    if expected is not None and meta["type"] != expected:
        raise DetectorLoadError(f"{path}: a {meta['type']} detector, not {expected}")
    return meta


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


def annotate(directory: str | Path, **fields: Any) -> None:
    """Add top-level fields (JSON values) to a saved ``detector.json`` (e.g. what it was trained on)."""
    path = Path(directory) / META
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta, indent=2) + "\n")
