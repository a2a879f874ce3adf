"""``detector.json``, the description every saved detector folder holds: type, feature kind,
parameters, versions, and the detector registry :data:`DETECTORS` (its types). The detectors
(:mod:`.linear`, :mod:`.srnet`) write and read it here; :func:`advimage.detect.store.load`,
above them, reads it to pick the detector to load. :mod:`advimage.detect` registers the types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry, UnknownNameError

META = "detector.json"


class DetectorLoadError(ValueError):
    """A detector folder that cannot be loaded (missing, wrong type, damaged)."""


class UnknownDetectorError(UnknownNameError, ValueError):
    """A detector name that is not registered (a ValueError too, as it always was)."""


@dataclass(frozen=True)
class DetectorKind:
    """A registered detector type. inputs: what it scores, ``features`` (rich-model features
    (N, D)) or ``pixels`` (uint8 images (N, H, W, 3)); load_class: its class, imported on first
    use (SRNet needs torch)."""

    inputs: str
    load_class: Callable[[], type]


#: detector type (``detector.json``'s ``type``, ``advimage detect train --detector``) -> :class:`DetectorKind`
DETECTORS: Registry[DetectorKind] = Registry("detector", UnknownDetectorError)


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
    if not isinstance(meta, dict) or meta.get("type") not in DETECTORS:
        found = meta.get("type") if isinstance(meta, dict) else meta
        raise DetectorLoadError(f"{path}: unknown detector type {found!r}; valid types: {', '.join(DETECTORS.names())}")
    if expected is not None and meta["type"] != expected:
        raise DetectorLoadError(f"{path}: a {meta['type']} detector, not {expected}")
    return meta


def annotate(directory: str | Path, **fields: Any) -> None:
    """Add top-level fields (JSON values) to a saved ``detector.json`` (e.g. what it was trained on)."""
    path = Path(directory) / META
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta, indent=2) + "\n")
