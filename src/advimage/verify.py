"""Verification of written files through the victim's real pipelines, independent of the
attacked layers: the file's bytes are decoded once by Pillow (:class:`advimage.codec.Decoded`)
and classified the ways users meet.

* ``model``: the decoded pixels as they are (files written at the model's resolution);
* ``float``: torchvision's ``resize`` (shorter side, the model's interpolation, antialias) and
  ``center_crop`` on the decoded *float tensor*: the pipeline ``torch-<f>`` (f: the model's
  interpolation, :func:`victim_pipeline`);
* ``pil``: torchvision's ``Resize`` + ``CenterCrop`` on the decoded *PIL image* (Pillow's
  resampling, 8-bit rounding after the resize: what timm's and torchvision's default eval
  transforms do), then to a tensor: the pipeline ``pil-<f>``;
* a pipeline spec (:mod:`advimage.pipelines`: ``pil-lanczos``, ``cv2-area``, ``torch-bicubic-noaa``,
  ``pil-bicubic+jpeg:90``, a §9.3 downscaler, ...): that pipeline's real libraries on the bytes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import codec, pipelines
from .resize import RESIZE_METHODS, EvalTransform

PATHS = ("model", "float", "pil")


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name if name in ("bicubic", "bilinear", "nearest") else "bicubic")


def eval_float(x: Tensor, config) -> Tensor:
    """torchvision's eval transform on float pixels (3, H, W) -> (3, S, S) float."""
    import torchvision.transforms.functional as TF

    short = math.floor(config.input_size / config.crop_pct)
    x = TF.resize(x.float(), [short], interpolation=_interp(config.interpolation), antialias=True)
    return TF.center_crop(x, [config.input_size, config.input_size])


def eval_pil(img: Image.Image, config) -> Tensor:
    """torchvision's eval transform on a PIL image (Pillow resize, 8-bit) -> (3, S, S) float."""
    import torchvision.transforms.functional as TF

    short = math.floor(config.input_size / config.crop_pct)
    img = TF.center_crop(TF.resize(img, [short], interpolation=_interp(config.interpolation)),
                         [config.input_size, config.input_size])
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()


def victim_pipeline(path: str, config) -> str | None:
    """The deployed pipeline (:mod:`advimage.pipelines`) of victim path ``pil`` or ``float`` for a
    model of ``config``: ``pil-<f>`` / ``torch-<f>`` with its interpolation f (bicubic, bilinear);
    None for another interpolation (nearest: :func:`eval_pil` / :func:`eval_float` themselves)."""
    if config.interpolation not in ("bicubic", "bilinear"):
        return None
    return f"{'pil' if path == 'pil' else 'torch'}-{config.interpolation}"


def model_inputs(file: codec.Decoded, config, paths: tuple[str, ...]) -> dict[str, Tensor | None]:
    """What each verification path feeds the model for one decoded file: {path: (3, S, S) or None}
    (None: a PIL path on a ``.npy`` file)."""
    x = file.pixels
    out: dict[str, Tensor | None] = {}
    for p in paths:
        if p == "model":
            out[p] = x.float()
        elif p in ("float", "pil") and (spec := victim_pipeline(p, config)) is not None:
            # the victim's pipeline by its own library (a .npy file has no PIL image)
            out[p] = None if file.is_array and p == "pil" else pipelines.parse(spec).model_input(file, config)
        elif p == "float":
            out[p] = eval_float(x.float(), config)
        elif p == "pil":
            out[p] = None if file.pil is None else eval_pil(file.pil, config)
        elif _is_pipeline(p):  # a deployed pipeline (advimage.pipelines), through its own library
            out[p] = None if file.is_array else pipelines.parse(p).model_input(file, config)
        elif p in RESIZE_METHODS:  # a downscaler (thesis §9.3) or another resize, on the float pixels
            out[p] = EvalTransform(config.input_size, config.crop_pct, p)(x.float()[None])[0]
        else:
            raise ValueError(f"unknown verification path {p!r}; valid: {', '.join(PATHS + RESIZE_METHODS)}")
    return out


def _is_pipeline(path: str) -> bool:
    try:
        pipelines.parse(path)
    except pipelines.PipelineError:
        return False
    return True
