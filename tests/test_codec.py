"""The codec: a verified file is decoded once per row, whatever the verification paths."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from test_pipelines import _photo, _pixel_model


@pytest.fixture
def photo_items(tmp_path, tiny_registered):
    from advimage import codec
    from advimage.data import ImageItem

    out = []
    for i, hw in enumerate([(45, 60), (50, 44)]):
        path = tmp_path / f"p{i}.png"
        path.write_bytes(codec.encode_png(_photo(*hw, seed=10 + i)))
        out.append(ImageItem(path, None))
    return out


def _count_opens(monkeypatch) -> list[bytes]:
    """Patch Pillow's ``Image.open`` (every decoder of the package goes through it): the bytes of
    each in-memory file it opens while the engine verifies a row (a quantizer's JPEG front may
    encode and decode the same pixels during the attack: not verification)."""
    from advimage import engine

    seen: list[bytes] = []
    verifying = [False]
    real_open, real_verify = Image.open, engine._verify

    def counting(fp, *args, **kwargs):
        if verifying[0] and isinstance(fp, io.BytesIO):
            seen.append(fp.getvalue())
        return real_open(fp, *args, **kwargs)

    def verify(*args, **kwargs):
        verifying[0] = True
        try:
            return real_verify(*args, **kwargs)
        finally:
            verifying[0] = False

    monkeypatch.setattr(Image, "open", counting)
    monkeypatch.setattr(engine, "_verify", verify)
    return seen


@pytest.mark.parametrize("victims", [None, "pil-bicubic,torch-bilinear-noaa,pil-lanczos+jpeg:90"])
def test_a_verified_file_is_decoded_once(photo_items, monkeypatch, victims):
    from advimage.engine import Settings, run_batch

    settings = Settings(attack="bp", steps=40, margin=0.5, **({"victims": victims} if victims else {}))
    seen = _count_opens(monkeypatch)
    rows = [r for r in run_batch(_pixel_model(), photo_items, settings) if r.data is not None]
    assert rows and all(r.verified_paths for r in rows)
    for r in rows:
        assert sum(d == r.data for d in seen) == 1, r.file  # before the codec's Decoded: 3, and 2 + one per pipeline


def test_decoded_matches_pillow_for_png_jpeg_and_npy():
    import numpy as np
    import torch

    from advimage import codec

    x = _photo(21, 30)
    for data, suffix in ((codec.encode_png(x), ".png"), (codec.encode_jpeg(x, 80), ".jpg")):
        d = codec.decode_file(data, suffix)
        with Image.open(io.BytesIO(data)) as img:  # what decode did before: Pillow, convert("RGB")
            ref = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        assert d.pixels.dtype == torch.uint8 and torch.equal(d.pixels, ref) and d.data == data
        assert d.pil is not None and torch.equal(torch.from_numpy(np.array(d.pil)).permute(2, 0, 1), ref)
    assert torch.equal(codec.decode(codec.encode_png(x)), x)
    f = codec.decode_file(codec.encode_npy(x.float() + 0.25))
    assert f.is_array and f.pil is None and torch.equal(f.pixels, x.float() + 0.25)


def test_read_refuses_what_is_no_image(tmp_path):
    from advimage import codec
    from advimage.images import ImageReadError, read_image

    assert ImageReadError is codec.ImageReadError
    path = tmp_path / "x.npy"
    path.write_bytes(codec.encode_npy(_photo(8, 8).float()))
    with pytest.raises(ImageReadError, match="x.npy: not an image"):
        read_image(path)
    with pytest.raises(ImageReadError, match="no such file"):
        codec.read(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        codec.decode_file(codec.encode_png(_photo(8, 8))[:60], name="cut.png")


def test_verification_inputs_equal_the_separate_decodes():
    """The one-decode inputs are those of decoding the bytes once per path, as before."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from advimage import codec, verify
    from advimage import pipelines as P

    config = SimpleNamespace(input_size=32, crop_pct=0.875, interpolation="bicubic")
    data = codec.encode_png(_photo(45, 60))
    file = codec.decode_file(data, ".png")
    paths = ("model", "float", "pil", "pil-lanczos", "pil-lanczos+jpeg:90", "torch-bilinear-noaa", "bilg")
    got = verify.model_inputs(file, config, paths)
    with Image.open(io.BytesIO(data)) as img:
        pil = img.convert("RGB")
    assert torch.equal(got["pil"], verify.eval_pil(pil, config))
    assert torch.equal(got["float"], verify.eval_float(file.pixels.float(), config))
    # 45 x 60 -> shorter side 36 (36 x 48) -> centre 32 x 32 at (2, 8), by Pillow itself
    lanczos = np.asarray(pil.resize((48, 36), Image.Resampling.LANCZOS))[2:34, 8:40]
    assert torch.equal(got["pil-lanczos"], torch.from_numpy(lanczos.copy()).permute(2, 0, 1).float())
    for spec in ("pil-lanczos+jpeg:90", "torch-bilinear-noaa"):
        assert torch.equal(got[spec], P.parse(spec).model_input(data, config))
