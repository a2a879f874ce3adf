"""Rich-model features for steganalysis (thesis §8.4): SRM and SCRMQ1, through sealwatch.

* ``srm``: the spatial rich model (Fridrich & Kodovský, TIFS 2012), 34,671 features, on the
  luminance: the RGB pixels converted by Pillow's ``"L"`` mode (Y = (19595 R + 38470 G + 7471 B
  + 2¹⁵) >> 16, i.e. ITU-R 601 weights, rounded to integers).
* ``scrmq1``: 18,157 features = SRMQ1 (12,753: the SRM with quantization step q = 1 only)
  computed on R, G and B and summed over the three channels (sealwatch normalizes each
  channel's co-occurrences, so the sum is 3× the normalized sum of counts: a constant factor),
  then the CRMQ1 (5,404: Goljan,
  Fridrich & Cogranne, WIFS 2014, co-occurrences across the three channels with T = 3).
  sealwatch's ``crm.extract`` gives 5,404 features with ``Tc=3`` (its default ``Tc=2`` gives
  2,073, not the thesis's CRMQ1); its ``implementation`` argument is not used by the colour
  path (CRM_ORIGINAL and CRM_FIX_MIN24 give identical arrays, sealwatch 2025.9).

sealwatch returns ordered dicts of sub-models; the order of a few keys follows Python's set
order, which changes from process to process, so they are flattened here in sorted key order.

:func:`extract_files` runs over files in worker processes (forked where the platform allows it,
so workers inherit the modules already loaded and import nothing) and keeps an on-disk cache:
one ``.npy`` per (file bytes' sha256, kind, sealwatch version), written atomically, read with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

KINDS = {"srm": 34_671, "scrmq1": 18_157}
"""Feature kind -> dimension D."""

CRMQ1_T = 3  # truncation threshold of the CRMQ1 co-occurrences (5,404 features)


class FeatureError(ValueError):
    """A file could not be turned into features (missing, corrupt, not an image)."""


def sealwatch_version() -> str:
    import sealwatch

    return str(getattr(sealwatch, "__version__", "unknown"))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def flatten(features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Concatenate a sealwatch feature dict in sorted key order -> (D,) float32."""
    return np.concatenate([np.asarray(features[k], dtype=np.float32).ravel() for k in sorted(features)])


def luminance(image: np.ndarray) -> np.ndarray:
    """Pillow's ``"L"`` conversion of an RGB image (H, W, 3) uint8 -> (H, W) uint8."""
    from PIL import Image

    return np.asarray(Image.fromarray(image, "RGB").convert("L"), dtype=np.uint8)


def extract(image: np.ndarray, kind: str) -> np.ndarray:
    """Features of one image.

    image: (H, W, 3) uint8 pixels in [0, 255] (H, W >= 8).
    kind: ``"srm"`` (34,671-d, luminance) or ``"scrmq1"`` (18,157-d, colour).
    Returns (D,) float32.
    """
    import sealwatch

    from .cooccurrence import install, uninstall

    _check_kind(kind)
    if os.environ.get("ADVIMAGE_SEALWATCH_LOOPS") == "1":
        uninstall()  # sealwatch's own loops, for comparisons (same features, slower)
    else:
        install()  # the same co-occurrences, vectorized
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected one RGB image (H, W, 3) uint8, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 8:
        raise ValueError(f"image too small for rich-model residuals: {image.shape[:2]} (need at least 8x8)")
    if kind == "srm":
        out = flatten(sealwatch.srm.extract(luminance(image)))
    else:
        channels = [sealwatch.srmq1.extract(image[..., c]) for c in range(3)]
        srmq1 = {k: sum(np.asarray(ch[k], dtype=np.float64) for ch in channels) for k in channels[0]}
        crmq1 = sealwatch.crm.extract(image, Tc=CRMQ1_T)
        out = np.concatenate([flatten(srmq1), flatten(crmq1)])
    if out.shape != (KINDS[kind],):
        raise RuntimeError(f"sealwatch {sealwatch_version()} gave {out.shape[0]} {kind} features, "
                           f"expected {KINDS[kind]}")
    return out


def read_rgb(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """Decode an image file with Pillow -> (H, W, 3) uint8; FeatureError naming the file."""
    from ..images import ImageReadError, read_pil

    try:
        return np.asarray(read_pil(path, data), dtype=np.uint8)
    except ImageReadError as exc:
        raise FeatureError(str(exc)) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FeatureError(f"{path}: cannot read ({exc.strerror or exc})") from None


def cache_path(cache_dir: Path, data: bytes, kind: str) -> Path:
    """Where the features of a file with these bytes are cached: ``<cache>/<kind>/<sha256>-sw<ver>.npy``."""
    digest = hashlib.sha256(data).hexdigest()
    return Path(cache_dir) / kind / f"{digest}-sw{sealwatch_version()}.npy"


def _save_atomic(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, x, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, kind: str) -> np.ndarray | None:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent or damaged: recompute
    return x if x.shape == (KINDS[kind],) and x.dtype == np.float32 else None


def file_features(path: str | os.PathLike, kind: str, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Features (D,) float32 of one file, from the cache when present (the worker of :func:`extract_files`)."""
    path = Path(path)
    data = _read_bytes(path)
    where = cache_path(Path(cache_dir), data, kind) if cache_dir is not None else None
    if where is not None and (cached := _load_cached(where, kind)) is not None:
        return cached
    image = read_rgb(path, data)  # FeatureError naming the file
    try:
        x = extract(image, kind)
    except ValueError as exc:
        raise FeatureError(f"{path}: {exc}") from None
    if where is not None:
        _save_atomic(where, x)
    return x


def cached(paths: Sequence[str | os.PathLike], kind: str, cache_dir: str | os.PathLike) -> list[bool]:
    """Whether each file's features are already in the cache."""
    return [_load_cached(cache_path(Path(cache_dir), _read_bytes(Path(p)), kind), kind) is not None for p in paths]


def _pool_context():
    # fork: workers inherit what is loaded (no torch import per worker); spawn where fork is absent
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def extract_files(paths: Sequence[str | os.PathLike], kind: str, *, processes: int = 1,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True) -> np.ndarray:
    """Features of image files -> (N, D) float32, rows in the order of ``paths``.

    processes: worker processes (1: in this process). cache_dir: on-disk cache (None: none).
    A missing or corrupt file raises FeatureError naming it.
    """
    from ..progress import progress_bar

    _check_kind(kind)
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), KINDS[kind]), dtype=np.float32)
    with progress_bar(progress and len(paths) > 0) as bar:
        task = bar.add_task(f"{kind} features", total=len(paths), status="")
        if processes == 1 or len(paths) <= 1:
            for i, p in enumerate(paths):
                out[i] = file_features(p, kind, cache_dir)
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=min(processes, len(paths)), mp_context=_pool_context()) as pool:
                futures = {pool.submit(file_features, p, kind, cache_dir): i for i, p in enumerate(paths)}
                try:
                    for fut in as_completed(futures):
                        out[futures[fut]] = fut.result()
                        bar.advance(task)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    return out
