"""Shared fixtures: small models with known closed-form answers, bundled photos."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

# 2 threads (CI's cores) unless ADVIMAGE_TEST_THREADS says otherwise: the suite must pass with 1 and 2
torch.set_num_threads(int(os.environ.get("ADVIMAGE_TEST_THREADS", max(1, min(2, torch.get_num_threads())))))


class BinaryLinear(nn.Module):
    """Two-class linear classifier on pixels: logits = [0, w·x + b].

    The minimal L2 perturbation (ignoring the [0, 255] box) moving x across the boundary
    has norm |w·x + b| / ||w||, so its distortion (eq. 6.2) is that over sqrt(n).
    """

    def __init__(self, shape=(3, 8, 8), seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # small weights keep the logits moderate, so that softmax-based losses do not saturate
        w = 0.01 * torch.randn(math.prod(shape), generator=g, dtype=torch.float64)
        self.w = nn.Parameter(w.float(), requires_grad=False)
        self.b = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)

    def optimal_distortion(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return s.abs() / self.w.norm() / math.sqrt(x[0].numel())


@pytest.fixture
def linear_problem():
    """A binary linear model and integer images far from the box edges, with labels = prediction."""
    model = BinaryLinear()
    g = torch.Generator().manual_seed(1)
    base = torch.randint(110, 146, (6, 3, 8, 8), generator=g).double()
    w = model.w.double()
    n = base[0].numel()
    # move each image along w so that its optimal distortion is d_target, on alternating sides
    d_target = torch.tensor([0.3, -0.5, 0.8, -1.0, 1.5, -2.0], dtype=torch.float64)
    s_now = base.flatten(1) @ w
    shift = (d_target * math.sqrt(n) * w.norm() - s_now) / w.norm().square()
    x = (base + shift.view(-1, 1, 1, 1) * w.view(1, 3, 8, 8)).round().clamp(0, 255).float()
    y = model(x).argmax(1)
    return model, x, y


class LinearMulticlass(nn.Module):
    """Ten-class affine classifier on (N, 3, 16, 16) pixels, scaled so that typical adversarial
    distortions are a fraction of a pixel, as for ImageNet networks."""

    def __init__(self, seed: int = 0, shape=(3, 16, 16), classes: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, math.prod(shape), generator=g) * 0.05, requires_grad=False)
        self.bias = nn.Parameter(torch.randn(classes, generator=g), requires_grad=False)

    def forward(self, x):
        return (x.flatten(1) - 127.5) @ self.weight.T + self.bias


@pytest.fixture
def multiclass_problem():
    """LinearMulticlass, 8 integer images and their predicted labels."""
    model = LinearMulticlass().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (8, 3, 16, 16), generator=g).float()
    return model, x, model(x).argmax(1)


class TinyConvNet(nn.Module):
    """A small random CNN on pixels (N, 3, H, W) -> 10 logits, deterministic from its seed."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x / 255.0 - 0.5)


@pytest.fixture
def tiny_model():
    return TinyConvNet().eval()


class _NormalizedLinear(nn.Module):
    """Ten-class affine map on normalized (N, 3, 32, 32) input, for the registered test model."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(10, 3 * 32 * 32, generator=g) * 6.0, requires_grad=False)
        self.bias = nn.Parameter(torch.randn(10, generator=g) * 20, requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def build_tiny_classifier(**_):
    """Test model: a normalized linear layer, 10 classes, 32 px (the CLI tests)."""
    from advimage.models import ModelConfig, PixelClassifier

    config = ModelConfig(name="tiny-test", input_size=32, crop_pct=1.0, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=10)
    return PixelClassifier(_NormalizedLinear(), config, [f"class{i}" for i in range(10)])


@pytest.fixture
def tiny_registered():
    """Registers ``tiny-test`` in the model registry for CLI tests."""
    from advimage.models import register

    register("tiny-test")(build_tiny_classifier)
    return "tiny-test"
