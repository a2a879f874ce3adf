"""The DCT-domain smart quantizer (thesis Sect. 7.3) on a tiny conv net and 24x24 images."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("jpeglib")

from advimage.attacks.base import LossOracle
from advimage.distortion import distortion
from advimage.jpeg.io import decode, write_coefficients
from advimage.jpeg.transform import apply_j, decode_like_libjpeg, to_dct
from advimage.losses import adversarial_loss, is_adversarial
from advimage.quantize.base import critical_lambda
from advimage.quantize.jpeg import JpegQuantizeResult, admissible_bounds, lambda_grid, quantize_jpeg

N, SIZE, CLASSES = 12, 24, 4


class TinyNet(nn.Module):
    """Pixels in [0, 255] -> 4 logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(),
                                 nn.Linear(8 * (SIZE // 4) ** 2, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 127.5 - 1)


def minimal_attack(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, step: float = 2.0) -> torch.Tensor:
    """Small normalized gradient steps until each image just crosses the boundary (float x_adv)."""
    x = x0.clone()
    for _ in range(1000):
        x.requires_grad_(True)
        loss = adversarial_loss(model(x), y)
        (g,) = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            done = (loss < 0).view(-1, 1, 1, 1)
            if bool(done.all()):
                break
            x = torch.where(done, x, (x - step * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 255))
    return x.detach()


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = TinyNet().eval()
    g = torch.Generator().manual_seed(1)
    small = torch.rand(N, 3, 6, 6, generator=g) * 255
    x0 = nn.functional.interpolate(small, size=SIZE, mode="bilinear", align_corners=False).round()
    y = model(x0).argmax(1)
    x_adv = minimal_attack(model, x0, y)
    assert bool(is_adversarial(model(x_adv), y).all())
    return model, x0, x_adv, y


def file_pixels(r: JpegQuantizeResult, size) -> torch.Tensor:
    """Write every result as a file, decode it with Pillow: float (N, 3, H, W)."""
    import tempfile
    from pathlib import Path

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(r.coefficients.shape[0]):
            path = Path(tmp) / f"{i}.jpg"
            write_coefficients(path, r.coefficients[i], r.quality, size=size)
            out.append(decode(path))
    return torch.stack(out).float()


def check_file_truth(model, x0, y, r: JpegQuantizeResult, quality, targeted=False):
    size = tuple(x0.shape[-2:])
    hb, wb = -(-size[0] // 8), -(-size[1] // 8)
    assert r.coefficients.dtype == torch.int32 and r.coefficients.shape == (len(x0), 3, hb, wb, 8, 8)
    assert r.pixels.shape == x0.shape and r.success.dtype == torch.bool and r.quality == quality
    # the file is the truth: pixels are the decoded file, success is the model's verdict on it
    px = file_pixels(r, size)
    assert torch.equal(px, r.pixels)
    assert torch.equal(is_adversarial(model(px), y, targeted), r.success)
    assert torch.allclose(r.distortion, distortion(px, x0))


def check_contract(model, x0, x_adv, y, r: JpegQuantizeResult, quality, df, n, targeted=False):
    check_file_truth(model, x0, y, r, quality, targeted)
    # protocol 7.4.1: plain JPEG of x0 kept when it already fools the model
    plain = r.lam == 0
    assert torch.equal(r.coefficients[plain], to_dct(x0[plain].double(), quality).round().int())
    assert bool((r.forwards[plain] == 1).all()) and bool((r.gradients[plain] == 0).all())
    # otherwise: coefficients in the admissible set of eq. 7.8 around X_a
    lo, hi = admissible_bounds(to_dct(x_adv[~plain].double(), quality), df)
    xq = r.coefficients[~plain].double()
    assert bool((xq >= lo).all()) and bool((xq <= hi).all())
    # budget: 1 gradient, n + 3 forwards at most
    assert bool((r.gradients <= 1).all()) and bool((r.forwards <= n + 3).all())
    assert bool((r.forwards >= 1).all())


@pytest.mark.parametrize("quality", [50, 90])
@pytest.mark.parametrize("df", [0, 1, 2, math.inf])
def test_contract(setup, quality, df):
    model, x0, x_adv, y = setup
    r = quantize_jpeg(model, x0, x_adv, y, quality=quality, df=df, n=10)
    check_contract(model, x0, x_adv, y, r, quality, df, 10)


def test_smart_quantization_beats_rounding(setup):
    """Rounding X_a (d_f = 0) erases the just-adversarial perturbation; d_f = 1 keeps it (Fig. 7.10)."""
    model, x0, x_adv, y = setup
    rounded = quantize_jpeg(model, x0, x_adv, y, quality=90, df=0)
    smart = quantize_jpeg(model, x0, x_adv, y, quality=90, df=1)
    assert rounded.success.float().mean() <= 0.25
    assert smart.success.float().mean() >= 0.9
    # distortion is of the order of the JPEG compression itself
    plain = decode_like_libjpeg(to_dct(x0.double(), 90).round(), 90)
    assert smart.distortion.mean() < 1.5 * distortion(plain, x0).mean() + distortion(x_adv, x0).mean()


@settings(max_examples=12, deadline=None)
@given(quality=st.integers(30, 100), df=st.sampled_from([0, 1, 2, 3, math.inf]), n=st.integers(1, 12))
def test_contract_property(setup, quality, df, n):
    model, x0, x_adv, y = setup
    r = quantize_jpeg(model, x0[:6], x_adv[:6], y[:6], quality=quality, df=df, n=n)
    check_contract(model, x0[:6], x_adv[:6], y[:6], r, quality, df, n)


def test_lowest_lambda_is_kept(setup):
    """Every smaller lambda of the grid (eqs. 7.24-7.25) decodes to a non-adversarial image."""
    model, x0, x_adv, y = setup
    quality, df, n = 75, 1, 10
    r = quantize_jpeg(model, x0, x_adv, y, quality=quality, df=df, n=n)
    searched = (r.lam > 0) & r.success
    assert searched.sum() >= N // 2
    x0s, xas, ys = x0[searched].double(), x_adv[searched].double(), y[searched]
    loss, g, _ = LossOracle(model, ys).loss_and_grad(xas.float())
    grid = lambda_grid(critical_lambda(loss.double(), xas - x0s, g.double()), n)
    kept = (grid - r.lam[searched, None].double()).abs().argmin(1)
    assert torch.allclose(grid.gather(1, kept[:, None]).squeeze(1).float(), r.lam[searched], rtol=1e-5)
    lo, hi = admissible_bounds(to_dct(xas, quality), df)
    jg = apply_j(g.double(), quality)
    for i in range(n + 1):
        lam = grid[:, i].view(-1, 1, 1, 1, 1, 1)
        xq = torch.minimum(torch.maximum((to_dct(x0s, quality) - lam / 2 * jg).round(), lo), hi)  # eq. 7.23
        fooled = is_adversarial(model(decode_like_libjpeg(xq, quality)), ys)
        below = i < kept
        assert not bool((fooled & below).any())
        assert bool(fooled[kept == i].all())


def test_plain_jpeg_already_adversarial(setup):
    model, x0, x_adv, _ = setup
    y_wrong = (model(x0).argmax(1) + 1) % CLASSES  # every compressed original "fools" these labels...
    plain_pred = model(decode_like_libjpeg(to_dct(x0.double(), 90).round(), 90)).argmax(1)
    keep = plain_pred != y_wrong
    r = quantize_jpeg(model, x0[keep], x_adv[keep], y_wrong[keep], quality=90)
    assert bool(r.success.all()) and bool((r.lam == 0).all())
    assert bool((r.forwards == 1).all()) and bool((r.gradients == 0).all())
    assert torch.equal(r.coefficients, to_dct(x0[keep].double(), 90).round().int())


def test_targeted(setup):
    model, x0, x_adv, y = setup
    target = model(x_adv).argmax(1)  # the class the untargeted attack reached
    r = quantize_jpeg(model, x0, x_adv, target, quality=90, targeted=True)
    check_contract(model, x0, x_adv, target, r, 90, 1, 10, targeted=True)
    assert r.success.float().mean() >= 0.8


def test_non_multiple_of_8(setup):
    model, x0, x_adv, y = setup
    # the net pools to a fixed size, so crop and pad back to keep its input size
    crop = (slice(None), slice(None), slice(0, 21), slice(0, 19))
    pad = nn.ReplicationPad2d((0, SIZE - 19, 0, SIZE - 21))
    wrapped = nn.Sequential(pad, model)
    y2 = wrapped(x0[crop]).argmax(1)
    xa = minimal_attack(wrapped, x0[crop], y2)
    r = quantize_jpeg(wrapped, x0[crop], xa, y2, quality=80, df=1)
    check_contract(wrapped, x0[crop], xa, y2, r, 80, 1, 10)
    assert r.coefficients.shape[2:4] == (3, 3)


def test_file_verdict_wins(setup, monkeypatch):
    """If the in-graph decoder disagreed with the file, the file's pixels are re-queried (1 forward)."""
    import importlib

    qj = importlib.import_module("advimage.quantize.jpeg")

    model, x0, x_adv, y = setup
    honest = quantize_jpeg(model, x0, x_adv, y, quality=90)
    monkeypatch.setattr(qj, "decode_like_libjpeg", lambda c, q, s: decode_like_libjpeg(c, q, s).mul(0.5).round())
    fooled = quantize_jpeg(model, x0, x_adv, y, quality=90)
    check_file_truth(model, x0, y, fooled, 90)  # still the file's truth
    assert bool((fooled.forwards >= 2).all()) and bool((fooled.forwards <= 10 + 3).all())
    assert not torch.equal(fooled.success, honest.success)


def test_helpers():
    lam = lambda_grid(torch.tensor([2.0, 5.0]), 10)
    assert lam.shape == (2, 11)
    assert torch.allclose(lam[:, 0], torch.tensor([0.02, 0.05]))
    assert torch.allclose(lam[:, -1], torch.tensor([200.0, 500.0]))
    assert bool((lam[:, 1:] > lam[:, :-1]).all())
    xa = torch.tensor([0.3, 1.7, -2.5, 4.0])
    for df in range(5):
        lo, hi = admissible_bounds(xa, df)
        count = hi - lo + 1
        assert torch.equal(count[:3], torch.full((3,), df + 1.0))  # d_f + 1 choices (non-integer X_a)
        assert bool((lo <= xa.floor()).all()) if df % 2 else bool((lo <= xa.round()).all())
    lo, hi = admissible_bounds(xa, 1)
    assert torch.equal(lo, xa.floor()) and torch.equal(hi, xa.ceil())
    assert torch.isinf(admissible_bounds(xa, math.inf)[1]).all()
    g = torch.zeros(1, 3, 8, 8)
    assert critical_lambda(torch.tensor([-0.1]), torch.ones(1, 3, 8, 8), g).item() == 1.0  # zero gradient
    with pytest.raises(ValueError, match="df"):
        admissible_bounds(xa, -1)


def test_bad_input(setup):
    model, x0, x_adv, y = setup
    with pytest.raises(ValueError, match="quality"):
        quantize_jpeg(model, x0, x_adv, y, quality=0)
    with pytest.raises(ValueError, match="x_adv"):
        quantize_jpeg(model, x0, x_adv[:, :, :8], y)
    with pytest.raises(ValueError, match="y must"):
        quantize_jpeg(model, x0, x_adv, y[:2])
    with pytest.raises(ValueError, match="n must"):
        quantize_jpeg(model, x0, x_adv, y, n=0)
