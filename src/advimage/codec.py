"""The one image codec: file bytes <-> pixels, and atomic writes.

Every file advimage writes goes through here: PNG (Pillow, lossless), JPEG from pixels
(Pillow/libjpeg, 4:4:4) and ``.npy`` for unquantized floats; JPEG files of chosen DCT coefficients
are :func:`advimage.jpeg.io.encode_coefficients` (jpeglib, no re-quantization), which builds on this
module. Every file advimage reads is decoded here too, by one function (:func:`decode_file`, or
:func:`read` for a path): Pillow (NumPy for ``.npy``), the independent decoder a victim would use,
into one :class:`Decoded` that every verification path and deployed pipeline takes, so that a
verified file is decoded once. Reading converts grayscale, palette, RGBA/LA (alpha dropped, as
timm/torchvision loaders do), CMYK and 16-bit images to 8-bit RGB; truncated or non-image files and
decompression bombs raise :class:`ImageReadError` with the file's name and the reason.
This module imports nothing else of advimage: the JPEG package and every reader and writer sit above it.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def _check_u8(x: Tensor) -> None:
    if x.ndim != 3 or x.shape[0] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected one uint8 image (3, H, W), got {x.dtype} {tuple(x.shape)}")


def encode_png(x: Tensor) -> bytes:
    """PNG bytes of one uint8 image (3, H, W)."""
    _check_u8(x)
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).cpu().numpy(), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(x: Tensor, quality: int) -> bytes:
    """Plain JPEG of one uint8 image (3, H, W) with Pillow (libjpeg), 4:4:4, baseline."""
    _check_u8(x)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).cpu().numpy()).save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()


def encode_npy(x: Tensor) -> bytes:
    """``.npy`` bytes of float pixels (3, H, W), float32 (unquantized output)."""
    buf = io.BytesIO()
    np.save(buf, x.detach().cpu().numpy().astype(np.float32), allow_pickle=False)
    return buf.getvalue()


class ImageReadError(OSError):
    """A file could not be read as an image (missing, corrupt, truncated, not an image, too large)."""


@dataclass(frozen=True, eq=False)
class Decoded:
    """One file decoded once; every verification path and pipeline reads it, none modifies it.

    data: the file's bytes. suffix: its suffix (``.png``, ``.jpg``, ``.npy``) or None.
    pixels: uint8 (3, H, W) RGB for images; float32 (3, H, W) for ``.npy`` (unquantized floats).
    pil: the same pixels as an 8-bit RGB PIL image (for victims that work on PIL images); None for ``.npy``.
    """

    data: bytes
    suffix: str | None
    pixels: Tensor
    pil: Image.Image | None

    @property
    def is_array(self) -> bool:
        """A ``.npy`` file (float pixels, no image a PIL pipeline could read)."""
        return self.pil is None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB (16-bit and float modes scaled to 8 bits)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(np.round(a * (255.0 if a.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _decode(data: bytes | Path, suffix: str | None, name: str, *, arrays: bool) -> Decoded:
    """The one decoder: ``data`` bytes, or a path to read; ``arrays``: ``.npy`` files are accepted
    (told by ``suffix`` or the bytes). Errors are :class:`ImageReadError` naming ``name``."""
    try:
        if isinstance(data, Path):
            data = data.read_bytes()
        if arrays and (suffix == ".npy" or data[:6] == b"\x93NUMPY"):
            return Decoded(data, ".npy", torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False)).float(),
                           None)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                arr = _to_rgb8(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{name}: refused, image too large (decompression bomb guard): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError(f"{name}: not an image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{name}: corrupt or truncated image ({exc})") from exc
    pixels = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return Decoded(data, suffix, pixels, Image.fromarray(arr, "RGB"))


def decode_file(data: bytes, suffix: str | None = None, *, name: str = "<bytes>") -> Decoded:
    """Decode a file's bytes once (Pillow; NumPy for ``.npy``, told by ``suffix`` or the bytes)."""
    return _decode(bytes(data), suffix, name, arrays=True)


def read(path: str | os.PathLike[str], data: bytes | None = None) -> Decoded:
    """Read and decode an image file (Pillow only), or its bytes ``data`` (``path`` then only names it
    in errors); ImageReadError says what is wrong."""
    path = Path(path)
    if data is None and not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    return _decode(path if data is None else bytes(data), path.suffix.lower() or None, str(path), arrays=False)


def decoded(file: Decoded | bytes, suffix: str | None = None) -> Decoded:
    """``file`` itself if already decoded, else its bytes decoded (for functions taking either)."""
    return file if isinstance(file, Decoded) else decode_file(file, suffix)


def decode(data: bytes, suffix: str | None = None) -> Tensor:
    """Decode file bytes: images -> uint8 (3, H, W) RGB; ``.npy`` -> float32 (3, H, W)."""
    return decode_file(data, suffix).pixels


def decode_pil(data: bytes) -> Image.Image:
    """Decode image bytes as an RGB PIL image (for victims that work on PIL images)."""
    img = decode_file(data).pil
    if img is None:
        raise ValueError("a .npy file has no PIL image")
    return img


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` atomically (a half-written file never appears), usual file mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a written image gets the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
