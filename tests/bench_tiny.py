"""The tiny test model of the benchmark tests, importable by Ray workers too (``imports=("bench_tiny",)``
with this folder on PYTHONPATH). ``ADVIMAGE_TINY_DELAY`` (seconds per forward) slows it down so that
a run can be interrupted midway; same weights, same results."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import advimage.models as models
from advimage.images import load_for_model
from advimage.models import ModelConfig, PixelClassifier

TINY = "tiny_bench_net"
BUILDS = {"n": 0}


class _Net(nn.Module):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8 * 4, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.1))
        self.delay = delay

    def forward(self, x):
        if self.delay:
            time.sleep(self.delay)
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


def register_tiny(delay: float = 0.0) -> None:
    """Register the tiny test model (a subprocess may register it again with a slow forward)."""
    cfg = dict(input_size=32, crop_pct=1.0, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
               std=(0.25, 0.25, 0.25), num_classes=5)
    models.MODELS.unregister(TINY)  # a second call replaces the first (the registry refuses silent overwrites)

    @models.register(TINY)
    def _tiny() -> PixelClassifier:
        """Test model: two small convolutions, 5 classes, 32 px (the benchmark tests)."""
        BUILDS["n"] += 1
        return PixelClassifier(_Net(delay), ModelConfig(name=TINY, **cfg), [f"class{i}" for i in range(5)])


register_tiny(float(os.environ.get("ADVIMAGE_TINY_DELAY", "0")))


def make_image_set(root: Path) -> Path:
    """8 smooth 40x40 PNGs in ``root`` labelled with the tiny model's prediction (two of them
    wrongly), plus a corrupt file and a missing one (``labels.csv``)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    rows = []
    model = models.load_model(TINY, device="cpu")
    for i in range(8):
        c = rng.uniform(40, 215, (3, 1, 1))
        a = rng.uniform(-40, 40, (3, 1, 1))
        img = np.clip(c + a * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0, 1) * yy)), 0, 255)
        path = root / f"img{i}.png"
        Image.fromarray(np.rint(img).astype(np.uint8).transpose(1, 2, 0)).save(path)
        pred = int(model.predict(load_for_model(path, model.config)[None].float()))
        label = (pred + 1) % 5 if i in (2, 5) else pred  # two misclassified originals
        rows.append((path.name, label))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    rows.insert(3, ("broken.png", 1))
    rows.append(("missing.png", 0))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label"])
        w.writerows(rows)
    return root
