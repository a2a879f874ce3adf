"""JPEG files: write chosen DCT coefficients losslessly, read them back, plain compression.

Writing goes through ``jpeglib`` (a ctypes wrapper of libjpeg): the integer coefficients are
entropy-coded as they are, with the quantization tables of the chosen quality factor stored
in the file -- no DCT and no re-quantization happens. Files are baseline, 4:4:4 (every
component sampled 1x1), YCbCr, and decode with any JPEG decoder (Pillow is used for the
pixels, as the independent decoder of the data flow).

Coefficient tensors use the layout of :mod:`advimage.jpeg.transform`:
(3, Hb, Wb, 8, 8) per image, or (N, 3, Hb, Wb, 8, 8) for a batch, natural order inside blocks.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import codec
from .transform import BLOCK, padded_size, quant_tables

# Baseline Huffman coding limits (libjpeg jchuff.c): AC magnitudes need at most 10 bits,
# DC values at most 11 bits (8-bit samples).
AC_LIMIT = 1023
DC_RANGE = (-1024, 1023)


@dataclass
class JpegCoefficients:
    """What a JPEG file holds, read back with jpeglib.

    coefficients: (3, Hb, Wb, 8, 8) int32, Y, Cb, Cr, natural order inside blocks.
    tables: (2, 8, 8) int32 quantization steps (luminance, chrominance), natural order.
    size: (H, W) image size in pixels (may be smaller than 8*Hb x 8*Wb).
    """

    coefficients: Tensor
    tables: Tensor
    size: tuple[int, int]


def clamp_coefficients(coeffs: Tensor) -> Tensor:
    """Clamp integer coefficients (..., 8, 8) to what baseline Huffman coding can store."""
    out = coeffs.clamp(-AC_LIMIT, AC_LIMIT)
    out[..., 0, 0] = coeffs[..., 0, 0].clamp(*DC_RANGE)
    return out


def _check_coefficients(coeffs: Tensor, size: tuple[int, int] | None) -> tuple[int, int]:
    if coeffs.ndim != 5 or coeffs.shape[0] != 3 or coeffs.shape[-2:] != (BLOCK, BLOCK):
        raise ValueError(f"coefficients must be (3, Hb, Wb, 8, 8), got {tuple(coeffs.shape)}")
    if coeffs.is_floating_point():
        if not bool((coeffs == coeffs.round()).all()):
            raise ValueError("coefficients must be integers; round them first (writing never re-quantizes)")
    if not bool((clamp_coefficients(coeffs) == coeffs).all()):
        raise ValueError(f"coefficients out of baseline range (AC within +-{AC_LIMIT}, DC within {DC_RANGE}); "
                         "use clamp_coefficients")
    full = (coeffs.shape[1] * BLOCK, coeffs.shape[2] * BLOCK)
    if size is None:
        return full
    h, w = int(size[0]), int(size[1])
    if padded_size(h, w) != full:
        raise ValueError(f"size {h}x{w} does not fit {coeffs.shape[1]}x{coeffs.shape[2]} blocks")
    return h, w


def write_coefficients(path: str | os.PathLike, coeffs: Tensor, quality: int,
                       size: tuple[int, int] | None = None) -> None:
    """Write integer coefficients (3, Hb, Wb, 8, 8) as a 4:4:4 baseline JPEG file, losslessly.

    The file stores the quantization tables of ``quality`` (see ``transform.quant_tables``);
    ``size=(H, W)`` declares a smaller image than the blocks cover (decoders crop the padding);
    by default the image is 8*Hb x 8*Wb.
    """
    h, w = _check_coefficients(coeffs, size)
    import jpeglib

    arr = coeffs.detach().cpu().to(torch.int16).numpy()
    qt = quant_tables(quality).numpy().astype(np.uint16)
    jpeg = jpeglib.from_dct(Y=arr[0].copy(), Cb=arr[1].copy(), Cr=arr[2].copy(), qt=qt)
    jpeg.height, jpeg.width = h, w
    jpeg.write_dct(str(path))


def encode_coefficients(coeffs: Tensor, quality: int, size: tuple[int, int] | None = None) -> bytes:
    """JPEG bytes holding integer DCT coefficients (3, Hb, Wb, 8, 8) as they are (see :func:`write_coefficients`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jpg"
        write_coefficients(path, coeffs, quality, size)
        return path.read_bytes()


def read_coefficients(path: str | os.PathLike) -> JpegCoefficients:
    """Read the quantized DCT coefficients of a 4:4:4 YCbCr JPEG file with jpeglib (libjpeg)."""
    import jpeglib

    jpeg = jpeglib.read_dct(str(path))
    if jpeg.Cb is None or jpeg.Cb.shape != jpeg.Y.shape:
        raise ValueError(f"{path}: only 4:4:4 colour JPEG files are supported (no chroma subsampling)")
    coeffs = torch.from_numpy(np.stack([jpeg.Y, jpeg.Cb, jpeg.Cr]).astype(np.int32))
    tables = torch.from_numpy(np.asarray(jpeg.qt).astype(np.int32))
    return JpegCoefficients(coefficients=coeffs, tables=tables, size=(int(jpeg.height), int(jpeg.width)))


def decode(path: str | os.PathLike | bytes) -> Tensor:
    """Decode a JPEG file (path or bytes) with Pillow -> uint8 (3, H, W) RGB (see :mod:`advimage.codec`)."""
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else Path(path).read_bytes()
    return codec.decode(data)


def roundtrip(coeffs: Tensor, quality: int, size: tuple[int, int] | None = None,
              directory: str | os.PathLike | None = None) -> Tensor:
    """Write each image's coefficients (N, 3, Hb, Wb, 8, 8) to a file and decode it with Pillow.

    Returns the decoded pixels uint8 (N, 3, H, W) on the coefficients' device: what a
    classifier reading the files would see. Files go to a temporary folder unless
    ``directory`` is given (then they are kept as ``{directory}/{i}.jpg``).
    """
    if coeffs.ndim != 6:
        raise ValueError(f"expected a batch (N, 3, Hb, Wb, 8, 8), got {tuple(coeffs.shape)}")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(directory) if directory is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(coeffs.shape[0]):
            path = folder / f"{i}.jpg"
            write_coefficients(path, coeffs[i], quality, size)
            out.append(decode(path))
    if not out:
        h, w = size if size is not None else (coeffs.shape[2] * BLOCK, coeffs.shape[3] * BLOCK)
        return torch.zeros(0, 3, h, w, dtype=torch.uint8, device=coeffs.device)
    return torch.stack(out).to(coeffs.device)


def encode(x: Tensor, quality: int) -> bytes:
    """Plain JPEG compression of one image uint8 (3, H, W); see :func:`advimage.codec.encode_jpeg`."""
    return codec.encode_jpeg(x, quality)


def compress(x: Tensor, quality: int) -> Tensor:
    """JPEG-compress then decode with Pillow: uint8 (N, 3, H, W) -> uint8 (N, 3, H, W), same device.

    4:4:4 (``subsampling=0``), libjpeg's default islow DCT, tables of ``quality``.
    """
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 (N, 3, H, W), got {x.dtype} {tuple(x.shape)}; "
                         "round and clamp float pixels first")
    if x.shape[0] == 0:
        return x.clone()
    return torch.stack([decode(encode(img, quality)) for img in x]).to(x.device)


def write_pixels(path: str | os.PathLike, x: Tensor, quality: int) -> None:
    """Save uint8 pixels (3, H, W) as a plain 4:4:4 JPEG at ``quality`` (Pillow), atomically."""
    codec.write_atomic(path, encode(x, quality))
