"""The JPEG transform J against libjpeg (through Pillow and jpeglib) on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

jpeglib = pytest.importorskip("jpeglib")
skdata = pytest.importorskip("skimage.data")

from advimage.jpeg.transform import (  # noqa: E402  (after the skips)
    apply_j,
    block_dct,
    channel_steps,
    from_dct,
    pad_to_blocks,
    quant_tables,
    rgb_to_ycbcr,
    to_dct,
)

PHOTOS = ("chelsea", "coffee", "astronaut")
SIZES = ((96, 128), (77, 101))  # a multiple of 8 and not


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(getattr(skdata, name)()[: size[0], : size[1]])


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].double()


def pillow_coefficients(a: np.ndarray, quality: int, tmp_path) -> np.ndarray:
    """Coefficients libjpeg stores (Pillow encoder, 4:4:4, default JDCT_ISLOW), read with jpeglib."""
    path = tmp_path / "ref.jpg"
    Image.fromarray(a).save(path, format="JPEG", quality=quality, subsampling=0)
    jpeg = jpeglib.read_dct(str(path))
    return np.stack([jpeg.Y, jpeg.Cb, jpeg.Cr]), np.asarray(jpeg.qt)


@pytest.mark.parametrize("quality", [1, 10, 25, 50, 75, 90, 95, 100])
def test_quant_tables_equal_libjpeg(quality, tmp_path):
    a = photo("chelsea", (16, 16))
    _, qt = pillow_coefficients(a, quality, tmp_path)
    assert np.array_equal(quant_tables(quality).numpy(), qt)
    with Image.open(tmp_path / "ref.jpg") as im:  # Pillow's own view of the tables (natural order)
        assert np.array_equal(quant_tables(quality)[0].numpy().ravel(), np.array(im.quantization[0]))
        assert np.array_equal(quant_tables(quality)[1].numpy().ravel(), np.array(im.quantization[1]))


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("quality", [10, 50, 75, 90])
def test_round_J_matches_libjpeg_islow(name, size, quality, tmp_path):
    """round(to_dct(x)) vs libjpeg's islow coefficients: equal up to rare +-1 at rounding boundaries.

    libjpeg rounds YCbCr to integers before a 13-bit fixed-point DCT; J is exact and linear.
    """
    a = photo(name, size)
    ref, _ = pillow_coefficients(a, quality, tmp_path)
    ours = to_dct(as_tensor(a), quality).round()[0].numpy()
    assert ours.shape == ref.shape == (3, -(-size[0] // 8), -(-size[1] // 8), 8, 8)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.02


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("quality", [90, 100])
def test_dct_and_quantizer_match_libjpeg_float(name, quality, tmp_path):
    """Block DCT + division by the steps vs libjpeg's JDCT_FLOAT fed with the same YCbCr samples.

    At quality 100 (steps of 1) the integer colour conversion dominates the mismatch of the
    full pipeline, so this isolates the DCT and quantization stage.
    """
    a = photo(name, (77, 101))
    ycc = torch.floor(rgb_to_ycbcr(as_tensor(a)) + 0.5).clamp(0, 255)
    im = jpeglib.from_spatial(ycc[0].permute(1, 2, 0).numpy().astype(np.uint8), in_color_space=jpeglib.JCS_YCbCr)
    im.samp_factor = np.array([[1, 1], [1, 1], [1, 1]])
    im.write_spatial(str(tmp_path / "f.jpg"), qt=quality, dct_method=jpeglib.JDCT_FLOAT)
    jpeg = jpeglib.read_dct(str(tmp_path / "f.jpg"))
    ref = np.stack([jpeg.Y, jpeg.Cb, jpeg.Cr])
    steps = channel_steps(quality, dtype=torch.float64)[None, :, None, None]
    ours = (block_dct(pad_to_blocks(ycc - 128)) / steps).round()[0].numpy()
    diff = np.abs(ours - ref)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), quality=st.integers(1, 100), seed=st.integers(0, 2**16))
def test_inverse_is_identity(h, w, quality, seed):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 255
    X = to_dct(x, quality)
    assert X.shape == (2, 3, -(-h // 8), -(-w // 8), 8, 8)
    assert torch.allclose(from_dct(X, quality, (h, w)), x, atol=1e-9)
    assert torch.allclose(to_dct(from_dct(X, quality), quality), X, atol=1e-9)


def test_affine_structure_and_padding():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 13, 21, generator=g).double(), torch.randn(1, 3, 13, 21, generator=g).double()
    assert torch.allclose(apply_j(a + 2 * b, 75), apply_j(a, 75) + 2 * apply_j(b, 75), atol=1e-9)
    x = torch.rand(1, 3, 13, 21, generator=g).double() * 255
    assert torch.allclose(to_dct(x, 75), apply_j(x - 128, 75))
    padded = torch.cat([x, x[..., -1:, :].expand(-1, -1, 3, -1)], dim=2)  # replicate last row to 16
    padded = torch.cat([padded, padded[..., -1:].expand(-1, -1, -1, 3)], dim=3)  # and last column to 24
    assert torch.allclose(to_dct(x, 75), to_dct(padded, 75))
    # a flat grey image has only a DC term in Y, and nothing in chroma
    flat = to_dct(torch.full((1, 3, 8, 8), 200.0, dtype=torch.float64), 100)
    assert flat[0, 0, 0, 0, 0, 0].item() == pytest.approx((200 - 128) * 8)
    assert flat.abs().flatten()[1:].max() < 1e-9


def test_gradient_flows():
    x = (torch.rand(1, 3, 16, 16) * 255).requires_grad_(True)
    from_dct(to_dct(x, 50), 50).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x), atol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="quality"):
        quant_tables(0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        to_dct(torch.zeros(3, 8, 8), 90)
    with pytest.raises(ValueError, match="coefficients"):
        from_dct(torch.zeros(1, 3, 8, 8), 90)
