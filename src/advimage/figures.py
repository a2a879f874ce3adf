"""Pictures people look at: original | adversarial | amplified perturbation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def amplify(x_adv: Tensor, x0: Tensor) -> tuple[np.ndarray, float]:
    """Perturbation x_adv - x0 shown around mid-gray, scaled so its largest value spans the range.

    x_adv, x0: (3, H, W) pixels. Returns an (H, W, 3) uint8 array and the amplification factor.
    """
    diff = x_adv.double() - x0.double()
    peak = float(diff.abs().max())
    gain = 127.0 / peak if peak > 0 else 1.0
    img = (128 + gain * diff).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return img, gain


def save_comparison(path: str | Path, x0: Tensor, x_adv: Tensor, original_title: str, adversarial_title: str) -> Path:
    """Write a 3-panel PNG: original, adversarial, perturbation amplified. x0, x_adv: (3, H, W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pert, gain = amplify(x_adv, x0)
    panels = [
        (x0.to(torch.uint8).permute(1, 2, 0).cpu().numpy(), original_title),
        (x_adv.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy(), adversarial_title),
        (pert, f"perturbation x{gain:.0f}" if gain > 1 else "perturbation (none)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6), dpi=100)
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
