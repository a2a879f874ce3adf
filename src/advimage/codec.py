"""The one image codec: pixels <-> file bytes, and atomic writes.

Every file advimage writes goes through here: PNG (Pillow, lossless), JPEG from pixels
(Pillow/libjpeg, 4:4:4) and ``.npy`` for unquantized floats; JPEG files of chosen DCT coefficients
are :func:`advimage.jpeg.io.encode_coefficients` (jpeglib, no re-quantization), which builds on this
module. Decoding always uses Pillow (NumPy for ``.npy``), the independent decoder a victim would use.
This module imports nothing else of advimage: the JPEG package and every writer sit above it.
"""

from __future__ import annotations

import io
import os
import tempfile
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


def decode(data: bytes, suffix: str | None = None) -> Tensor:
    """Decode file bytes: images with Pillow -> uint8 (3, H, W) RGB; ``.npy`` -> float32 (3, H, W)."""
    if suffix == ".npy" or data[:6] == b"\x93NUMPY":
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False)).float()
    with Image.open(io.BytesIO(data)) as img:
        arr = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def decode_pil(data: bytes) -> Image.Image:
    """Decode image bytes with Pillow as an RGB PIL image (for victims that work on PIL images)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


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
