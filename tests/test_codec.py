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


@pytest.mark.parametrize("victims, today", [(None, 3), ("pil-bicubic,torch-bilinear-noaa,pil-lanczos+jpeg:90", 5)])
def test_decodes_per_verified_row(photo_items, monkeypatch, victims, today):
    from advimage.engine import Settings, run_batch

    settings = Settings(attack="bp", steps=40, margin=0.5, **({"victims": victims} if victims else {}))
    seen = _count_opens(monkeypatch)
    rows = [r for r in run_batch(_pixel_model(), photo_items, settings) if r.data is not None]
    assert rows and all(r.verified_paths for r in rows)
    for r in rows:
        assert sum(d == r.data for d in seen) == today, r.file
