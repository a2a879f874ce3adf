"""Distortion measures in pixel units ([0, 255])."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def distortion(x: Tensor, x0: Tensor) -> Tensor:
    """Eq. (6.2): ``||x - x0||_2 / sqrt(n)`` per image, in pixel units.

    x, x0: (N, C, H, W) pixels in [0, 255] (any dtype). Returns (N,) float32.
    """
    diff = x.double() - x0.double()
    n = diff[0].numel()
    return (diff.flatten(1).norm(dim=1) / math.sqrt(n)).float()


def psnr(x: Tensor, x0: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for 8-bit images, (N,); ``inf`` where identical."""
    d = distortion(x, x0).double()
    out = 20 * torch.log10(255.0 / d)
    return torch.where(d > 0, out, torch.full_like(out, float("inf"))).float()
