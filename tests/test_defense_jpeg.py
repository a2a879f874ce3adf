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


@pytest.fixture(scope="module")
def chelsea_jpeg(tmp_path_factory):
    """skimage's chelsea (300x451, not a multiple of 8), and per quality: libjpeg's file (Pillow's
    4:4:4 encoder) decoded by jpeglib, and its DCT coefficients read by jpeglib."""
    import jpeglib
    import numpy as np

    from advimage.codec import encode_jpeg

    skdata = pytest.importorskip("skimage.data")
    img = skdata.chelsea()
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    out = {}
    for q in (100, 90, 75):
        path = tmp_path_factory.mktemp("jpg") / f"chelsea{q}.jpg"
        path.write_bytes(encode_jpeg(x, q))
        pixels = torch.from_numpy(jpeglib.read_spatial(str(path)).spatial.astype(np.float64)).permute(2, 0, 1)
        d = jpeglib.read_dct(str(path))
        coeffs = torch.from_numpy(np.stack([d.Y, d.Cb, d.Cr]).astype(np.float64))
        out[q] = (pixels[None], coeffs[None])
    return x[None].double(), out


@pytest.mark.parametrize("quality", [100, 90, 75])
def test_float_reformer_decoder_matches_libjpeg(chelsea_jpeg, quality):
    """The float inverse (dequantize, inverse DCT, YCbCr -> RGB, no rounding) of libjpeg's own
    coefficients, rounded, is within one level of jpeglib's decode on over 99% of the pixels."""
    from advimage.jpeg.transform import from_dct

    x, files = chelsea_jpeg
    ref, coeffs = files[quality]
    ours = from_dct(coeffs, quality, tuple(x.shape[-2:])).round().clamp(0, 255)
    diff = (ours - ref).abs()
    assert float((diff <= 1).double().mean()) > 0.99
    assert float(diff.max()) <= 2


@pytest.mark.parametrize("quality", [100, 90, 75])
def test_float_reformer_against_libjpeg_round_trip(chelsea_jpeg, quality):
    """End to end, the float reformer distorts the photo as much as libjpeg's round trip (within
    10%) and lands near it (RMSE < 1.5 levels, most pixels within one level)."""
    from advimage.defenses.jpeg import jpeg_float
    from advimage.distortion import distortion

    x, files = chelsea_jpeg
    ref, _ = files[quality]
    out = jpeg_float(x, quality)
    d_float, d_lib = float(distortion(out, x)[0]), float(distortion(ref, x)[0])
    assert abs(d_float - d_lib) < 0.1 * d_lib
    assert float(distortion(out, ref)[0]) < 1.5
    assert float(((out.round().clamp(0, 255) - ref).abs() <= 1).double().mean()) > 0.85
    rounded = jpeg_float(x, quality, rounded=True)
    assert torch.equal(rounded, out.round().clamp(0, 255))


def test_float_reformer_keeps_floats():
    """No rounding or clipping: a sub-level change of the input moves the output (quality 100),
    and the output is not integral; bad shapes and qualities are refused."""
    from advimage.defenses.jpeg import jpeg_float

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, 16, 16, generator=g) * 200 + 20).round().double()
    out = jpeg_float(x, 100)
    assert not torch.equal(out, out.round())
    assert float((out - x).abs().max()) < 3  # quality 100: steps of 1 on orthonormal coefficients
    assert not torch.equal(jpeg_float(x + 0.3, 100), out)
    assert torch.equal(jpeg_compress(x + 0.3, 100), jpeg_compress(x, 100))  # the real one rounds it away
    with pytest.raises(ValueError, match="quality"):
        jpeg_float(x, 0)
    with pytest.raises(ValueError, match="expected"):
        jpeg_float(x[:, :2], 90)
