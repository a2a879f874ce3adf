"""Reading odd images, refusing bad ones, writing PNGs, the model's crop."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from advimage.images import ImageReadError, read_image, resize_center_crop, write_png
from advimage.samples import sample_array


@pytest.fixture
def rgb():
    g = np.random.default_rng(0)
    return g.integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "RGB"])
def test_modes_become_rgb_uint8(tmp_path, rgb, mode):
    img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    x = read_image(path)
    assert x.dtype == torch.uint8 and x.shape == (3, 20, 30)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(x.permute(1, 2, 0).numpy(), expected)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)
    x = read_image(path)
    assert x[:, 0, :].tolist() == [[0, 128, 255]] * 3


def test_truncated_file_is_reported(tmp_path, rgb):
    path = tmp_path / "t.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(path)


def test_non_image_and_missing_files_are_reported(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(path)


def test_png_roundtrip_is_exact(tmp_path):
    x = torch.randint(0, 256, (3, 17, 23), dtype=torch.uint8)
    path = write_png(tmp_path / "sub" / "x.png", x)
    assert torch.equal(read_image(path), x)
    assert not list((tmp_path / "sub").glob("*.part"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_writing_non_integer_pixels_is_refused(tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        write_png(tmp_path / "x.png", torch.full((3, 4, 4), 10.5))


def test_crop_equals_timm_eval_transform():
    import timm.data

    img = Image.fromarray(sample_array("coffee"))
    ours = np.asarray(resize_center_crop(img, 224, 0.875, "bicubic"))
    tf = timm.data.create_transform(input_size=224, crop_pct=0.875, interpolation="bicubic", is_training=False)
    # timm ends with ToTensor + Normalize; undo them to compare 8-bit pixels
    t = tf(img)
    mean = torch.tensor(timm.data.IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(timm.data.IMAGENET_DEFAULT_STD).view(3, 1, 1)
    theirs = ((t * std + mean) * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
    assert ours.shape == (224, 224, 3)
    assert np.array_equal(ours, theirs)
