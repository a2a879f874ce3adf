"""Real images as tensors: any Pillow format -> uint8 (3, H, W), PNG out, timm's eval resize.

Decoding and encoding are :mod:`advimage.codec`'s (one decoder for originals and written files):
reading converts grayscale, palette, RGBA/LA (alpha dropped, as timm/torchvision loaders do),
CMYK and 16-bit images to 8-bit RGB. Truncated or non-image files and decompression bombs
raise :class:`ImageReadError` (defined in the codec) with the path and the reason.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import codec
from .codec import ImageReadError

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "load_for_model", "pil_to_tensor", "read_image", "read_pil",
           "resize_center_crop", "tensor_to_pil", "write_png"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


def read_pil(path: str | os.PathLike[str], data: bytes | None = None) -> Image.Image:
    """Open and fully decode an image (:func:`advimage.codec.read`) as 8-bit RGB, or raise ImageReadError.

    data: the file's bytes, decoded instead of opening ``path`` (which then only names it in errors).
    """
    img = codec.read(path, data).pil
    assert img is not None  # codec.read decodes images only
    return img


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL RGB image -> uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def tensor_to_pil(x: Tensor) -> Image.Image:
    """uint8 (or integer-valued) tensor (3, H, W) -> PIL RGB image."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected one image (3, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError("pixels are not integers: quantize before writing an image")
        x = x.clamp(0, 255).to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).cpu().numpy(), "RGB")


def read_image(path: str | Path, data: bytes | None = None) -> Tensor:
    """Read any image file (or its bytes ``data``) as uint8 pixels (3, H, W)."""
    return codec.read(path, data).pixels


def write_png(path: str | Path, x: Tensor) -> Path:
    """Write uint8 pixels (3, H, W) as a PNG, atomically (no half-written file on interruption)."""
    if x.dtype != torch.uint8:
        tensor_to_pil(x)  # refuses non-integral pixels with a clear message
        x = x.clamp(0, 255).to(torch.uint8)
    return codec.write_atomic(path, codec.encode_png(x.cpu()))


_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
            "hamming": Image.Resampling.HAMMING}


def resize_center_crop(img: Image.Image, size: int, crop_pct: float = 0.875,
                       interpolation: str = "bicubic") -> Image.Image:
    """timm's evaluation transform on 8-bit pixels: resize the shorter side to
    floor(size / crop_pct) with ``interpolation``, then center-crop ``size`` x ``size``."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    if interpolation not in _FILTERS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(_FILTERS)}")
    scale = math.floor(size / crop_pct)
    img = TF.resize(img, scale, interpolation=InterpolationMode(interpolation))
    return TF.center_crop(img, [size, size])


def load_for_model(path: str | Path, config, data: bytes | None = None) -> Tensor:
    """The original x0 a model sees: the file (or its bytes ``data``), resized and center-cropped per
    ``config``; uint8 (3, S, S)."""
    image = read_pil(path, data)
    return pil_to_tensor(resize_center_crop(image, config.input_size, config.crop_pct, config.interpolation))
