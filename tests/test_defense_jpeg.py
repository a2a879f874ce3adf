"""JPEG compression as a defense front-end (Sect. 7.4.7) and BPDA through it (Table 7.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("jpeglib")

from advimage import defenses
from advimage.attacks.base import LossOracle
from advimage.defenses.jpeg import JpegCompression, JpegDefense, jpeg_compress
from advimage.jpeg.io import compress
from advimage.losses import is_adversarial
from advimage.quantize.jpeg import quantize_jpeg

SIZE, CLASSES = 24, 4


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(),
                                 nn.Linear(8 * (SIZE // 4) ** 2, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 127.5 - 1)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(1)
    x0 = nn.functional.interpolate(torch.rand(12, 3, 6, 6, generator=g) * 255, size=SIZE, mode="bilinear",
                                   align_corners=False).round()
    return model, x0


def pgd2(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 20) -> torch.Tensor:
    """Plain L2 PGD (eps in pixel units of eq. 6.2), gradients through ``model`` (BPDA if defended)."""
    oracle = LossOracle(model, y, max_gradients=steps)
    radius = eps * x0[0].numel() ** 0.5
    x = x0.clone()
    for _ in range(steps):
        _, g, _ = oracle.loss_and_grad(x)
        x = x - 2.5 * radius / steps * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        d = x - x0
        d = d * (radius / d.flatten(1).norm(dim=1).clamp_min(radius)).view(-1, 1, 1, 1)
        x = (x0 + d).clamp(0, 255)
    return x


def test_registry():
    assert "jpeg" in defenses.names()
    model = TinyNet()
    d = defenses.create("jpeg", model, quality=60)
    assert isinstance(d, JpegDefense) and d.quality == 60 and d.model is model
    assert defenses.get("jpeg") is not None
    with pytest.raises(defenses.UnknownDefenseError, match="valid defenses: .*jpeg"):
        defenses.get("nope")


def test_forward_is_real_compression(setup):
    model, x0 = setup
    x = x0 + torch.rand_like(x0) - 0.5  # float input: rounded before compression
    d = JpegDefense(model, quality=75)
    expected = model(compress(x.round().clamp(0, 255).to(torch.uint8), 75).float())
    assert torch.equal(d(x), expected)
    # the batched engine approximates it (its encoder is the exact J, libjpeg's is fixed-point)
    torch_out = jpeg_compress(x, 75, engine="torch")
    pil_out = jpeg_compress(x, 75)
    # (~0.5% of coefficients off by one step, each moving a whole block by a few pixel levels)
    err_torch, err_pil = (torch_out - x.round()).pow(2).mean().sqrt(), (pil_out - x.round()).pow(2).mean().sqrt()
    assert abs(err_torch - err_pil) < 0.1 * err_pil
    assert (torch_out - pil_out).abs().mean() < 0.25 * (pil_out - x.round()).abs().mean()


@pytest.mark.parametrize("backward", ["identity", "cubic"])
def test_bpda_gradients(setup, backward):
    model, x0 = setup
    x = x0.clone().requires_grad_(True)
    reformer = JpegCompression(quality=50, backward=backward)
    out = reformer(x)
    assert torch.equal(out.detach(), jpeg_compress(x0, 50))  # the value is the true JPEG
    w = torch.randn_like(x0)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    if backward == "identity":
        assert torch.equal(grad, w)
    else:
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert grad.norm() < w.norm()  # damps what JPEG erases


def test_no_backward():
    x = (torch.rand(1, 3, 8, 8) * 255).requires_grad_(True)
    assert not JpegCompression(90, backward="none")(x).requires_grad
    with pytest.raises(ValueError, match="backward"):
        JpegCompression(90, backward="straight")
    with pytest.raises(ValueError, match="quality"):
        JpegCompression(0)
    with pytest.raises(ValueError, match="engine"):
        JpegCompression(90, engine="gpu")


def test_pgd_bpda_beats_the_defense(setup):
    """PGD2 with BPDA through JPEG (Table 7.1): the defended model is fooled on its own input."""
    model, x0 = setup
    defended = JpegDefense(model, quality=75)
    with torch.no_grad():
        y = defended(x0).argmax(1)
    x_adv = pgd2(defended, x0, y, eps=6.0)
    with torch.no_grad():
        fooled = is_adversarial(defended(x_adv), y)
    assert fooled.float().mean() >= 0.75
    with pytest.raises(RuntimeError):  # without BPDA there is no gradient to follow
        pgd2(JpegDefense(model, quality=75, backward="none"), x0, y, eps=6.0, steps=1)


def test_jpeg_quantized_adversarials_survive_same_quality(setup):
    """Table 7.2: images quantized at JPEG q stay adversarial behind a JPEG-q reformer."""
    model, x0 = setup
    with torch.no_grad():
        y = model(x0).argmax(1)
    x_adv = pgd2(model, x0, y, eps=3.0)
    r = quantize_jpeg(model, x0, x_adv, y, quality=75, df=1)
    assert r.success.float().mean() >= 0.75
    with torch.no_grad():
        survived = is_adversarial(JpegDefense(model, quality=75)(r.pixels), y)
    assert survived[r.success].float().mean() >= 0.75
