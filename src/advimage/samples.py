"""Natural photos bundled with scikit-image, written as PNG files for the demo and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = ("chelsea", "coffee", "rocket", "astronaut", "motorcycle")


def sample_array(name: str) -> np.ndarray:
    """A bundled photo as (H, W, 3) uint8."""
    import skimage.data as data

    if name == "motorcycle":
        arr = data.stereo_motorcycle()[0]
    elif name in SAMPLES:
        arr = getattr(data, name)()
    else:
        raise KeyError(f"unknown sample {name!r}; valid: {', '.join(SAMPLES)}")
    return np.ascontiguousarray(arr[..., :3]).astype(np.uint8)


def write_samples(folder: str | Path, names: tuple[str, ...] = SAMPLES) -> list[Path]:
    """Write the named photos as ``folder/<name>.png`` and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(sample_array(name)).save(path)
        paths.append(path)
    return paths
