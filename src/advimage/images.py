"""Reading and writing real images: any Pillow format -> uint8 (3, H, W) tensor, PNG out.

Reading converts grayscale, palette, RGBA/LA (alpha dropped, as timm/torchvision loaders do),
CMYK and 16-bit images to 8-bit RGB. Truncated or non-image files and decompression bombs
raise :class:`ImageReadError` with the path and the reason.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


class ImageReadError(OSError):
    """A file could not be read as an image (missing, corrupt, truncated, not an image, too large)."""


def _to_rgb8(img: Image.Image) -> np.ndarray:
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


def read_pil(path: str | os.PathLike[str], data: bytes | None = None) -> Image.Image:
    """Open and fully decode an image with Pillow as 8-bit RGB, or raise ImageReadError.

    data: the file's bytes, decoded instead of opening ``path`` (which then only names it in errors).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                img.load()
                return Image.fromarray(_to_rgb8(img), "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{path}: refused, image too large (decompression bomb guard): {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from exc


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
    return pil_to_tensor(read_pil(path, data))


def write_png(path: str | Path, x: Tensor) -> Path:
    """Write uint8 pixels (3, H, W) as a PNG, atomically (no half-written file on interruption)."""
    from .codec import encode_png, write_atomic

    if x.dtype != torch.uint8:
        tensor_to_pil(x)  # refuses non-integral pixels with a clear message
        x = x.clamp(0, 255).to(torch.uint8)
    return write_atomic(path, encode_png(x.cpu()))


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
