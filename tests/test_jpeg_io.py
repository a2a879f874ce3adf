"""Coefficient files: lossless writing, reading back, decoding, and plain compression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

jpeglib = pytest.importorskip("jpeglib")
skdata = pytest.importorskip("skimage.data")

from advimage.jpeg.io import (  # noqa: E402  (after the skips)
    clamp_coefficients,
    compress,
    decode,
    read_coefficients,
    roundtrip,
    write_coefficients,
)
from advimage.jpeg.transform import decode_like_libjpeg, quant_tables, to_dct  # noqa: E402


def photo(name: str, h: int, w: int) -> torch.Tensor:
    a = getattr(skdata, name)()[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def jpeglib_pixels(path) -> torch.Tensor:
    return torch.from_numpy(jpeglib.read_spatial(str(path)).spatial.copy()).permute(2, 0, 1)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
@pytest.mark.parametrize("size", [(64, 96), (61, 90)])
@pytest.mark.parametrize("quality", [10, 60, 90, 100])
def test_photo_coefficients_roundtrip(name, size, quality, tmp_path):
    x = photo(name, *size)
    coeffs = clamp_coefficients(to_dct(x, quality).round()).int()[0]
    path = tmp_path / "a.jpg"
    write_coefficients(path, coeffs, quality, size=size)
    back = read_coefficients(path)
    assert back.size == size
    assert torch.equal(back.coefficients, coeffs)
    assert torch.equal(back.tables, quant_tables(quality).int())
    with Image.open(path) as im:
        assert im.size == (size[1], size[0]) and im.mode == "RGB"
        assert [(h, v) for _, h, v, _ in im.layer] == [(1, 1)] * 3  # 4:4:4
    pillow = decode(path)
    assert pillow.shape == (3, *size) and pillow.dtype == torch.uint8
    assert torch.equal(pillow, jpeglib_pixels(path))
    # the batched decoder emulation is bit-exact with libjpeg's islow decoder
    assert torch.equal(decode_like_libjpeg(coeffs[None], quality, size)[0].to(torch.uint8), pillow)


@settings(max_examples=20, deadline=None)
@given(hb=st.integers(1, 3), wb=st.integers(1, 3), quality=st.integers(1, 100), seed=st.integers(0, 2**16),
       spread=st.sampled_from([3, 40, 1023]))
def test_arbitrary_coefficients_written_exactly(hb, wb, quality, seed, spread, tmp_path_factory):
    """Any baseline-range integers are written as they are (no DCT, no re-quantization)."""
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.randint(-spread, spread + 1, (3, hb, wb, 8, 8), generator=g, dtype=torch.int32)
    path = tmp_path_factory.mktemp("w") / "r.jpg"
    write_coefficients(path, coeffs, quality)
    back = read_coefficients(path)
    assert torch.equal(back.coefficients, coeffs)
    assert back.size == (8 * hb, 8 * wb)
    assert decode(path).shape == (3, 8 * hb, 8 * wb)


@settings(max_examples=20, deadline=None)
@given(quality=st.integers(40, 100), seed=st.integers(0, 2**16), spread=st.just(1),
       name=st.sampled_from(["chelsea", "coffee", "astronaut"]))
def test_perturbed_coefficients_decode_alike(quality, seed, spread, name, tmp_path_factory):
    """Quantizer-like files (photo coefficients + small integer changes): Pillow, jpeglib's libjpeg
    and the batched emulation decode them to the same pixels.

    Not for wild coefficients (e.g. +-2 steps of 50 at quality 40): samples far outside
    [0, 255] overflow differently in libjpeg 6b (table wrap), libjpeg-turbo's C and its SIMD IDCT.
    """
    g = torch.Generator().manual_seed(seed)
    coeffs = to_dct(photo(name, 27, 35), quality).round().int()
    coeffs = clamp_coefficients(coeffs + torch.randint(-spread, spread + 1, coeffs.shape, generator=g).int())
    path = tmp_path_factory.mktemp("p") / "p.jpg"
    write_coefficients(path, coeffs[0], quality, size=(27, 35))
    assert torch.equal(read_coefficients(path).coefficients, coeffs[0])
    pillow = decode(path)
    assert torch.equal(pillow, jpeglib_pixels(path))
    assert torch.equal(roundtrip(coeffs, quality, (27, 35))[0], pillow)
    assert torch.equal(decode_like_libjpeg(coeffs, quality, (27, 35))[0].to(torch.uint8), pillow)


def test_roundtrip_batch_and_kept_files(tmp_path):
    x = torch.cat([photo("coffee", 40, 44), photo("chelsea", 40, 44)])
    coeffs = to_dct(x, 75).round().int()
    px = roundtrip(coeffs, 75, (40, 44), directory=tmp_path)
    assert px.shape == (2, 3, 40, 44) and px.dtype == torch.uint8
    assert torch.equal(px[1], decode(tmp_path / "1.jpg"))
    assert roundtrip(coeffs[:0], 75, (40, 44)).shape == (0, 3, 40, 44)


@pytest.mark.parametrize("quality", [50, 90])
def test_compress_is_pillow_444(quality):
    x = torch.cat([photo("astronaut", 48, 56), photo("coffee", 48, 56)]).to(torch.uint8)
    out = compress(x, quality)
    assert out.shape == x.shape and out.dtype == torch.uint8
    err = (out.float() - x.float()).pow(2).mean().sqrt()
    assert 0 < err < 10
    # same quality, tables and sampling: our coefficient path decodes to nearly the same pixels
    ours = roundtrip(clamp_coefficients(to_dct(x.float(), quality).round()).int(), quality, (48, 56))
    ours_err = (ours.float() - x.float()).pow(2).mean().sqrt()
    assert abs(ours_err - err) < 0.05 * err
    assert ((ours.float() - out.float()).abs() > 2).float().mean() < 0.05


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="integers"):
        write_coefficients(tmp_path / "a.jpg", torch.full((3, 1, 1, 8, 8), 0.5), 90)
    with pytest.raises(ValueError, match="baseline"):
        write_coefficients(tmp_path / "a.jpg", torch.full((3, 1, 1, 8, 8), 2000), 90)
    with pytest.raises(ValueError, match="does not fit"):
        write_coefficients(tmp_path / "a.jpg", torch.zeros(3, 1, 1, 8, 8, dtype=torch.int32), 90, size=(9, 8))
    with pytest.raises(ValueError, match=r"\(3, Hb, Wb, 8, 8\)"):
        write_coefficients(tmp_path / "a.jpg", torch.zeros(1, 1, 8, 8, dtype=torch.int32), 90)
    with pytest.raises(ValueError, match="uint8"):
        compress(torch.zeros(1, 3, 8, 8), 90)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "sub.jpg", quality=90, subsampling=2)
    with pytest.raises(ValueError, match="4:4:4"):
        read_coefficients(tmp_path / "sub.jpg")
