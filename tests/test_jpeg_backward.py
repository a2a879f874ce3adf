"""The gradient of a JPEG re-encode: ``jpeg.transform.soft_roundtrip`` and ``--jpeg-backward cubic``.

References: the transform ``J`` of :mod:`advimage.jpeg.transform` (itself tested against libjpeg),
Pillow's real encoder, and closed-form properties of the cubic rounding's derivative.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as skdata

from advimage import pipelines as P
from advimage.jpeg.transform import from_dct, soft_roundtrip, to_dct


def _chelsea(h: int = 96, w: int = 128) -> torch.Tensor:
    """A real photo (scikit-image's chelsea), cropped: float (1, 3, h, w) in [0, 255]."""
    return torch.from_numpy(skdata.chelsea()[:h, :w].copy()).permute(2, 0, 1)[None].double()


def _pillow_420(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Pillow's default re-encode (4:2:0) of integer pixels (1, 3, H, W), decoded by Pillow."""
    buf = io.BytesIO()
    Image.fromarray(x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()).save(buf, "JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)[None].double()


def test_444_is_the_cubic_rounding_through_j():
    """4:4:4: J^-1(round X + (X - round X)^3), X computed by to_dct (RGB padded first, then J)."""
    x = _chelsea(45, 61)  # sizes not multiples of 8
    X = to_dct(x, 75)
    r = X.round()
    ref = from_dct(r + (X - r) ** 3, 75, (45, 61))
    assert torch.allclose(soft_roundtrip(x, 75), ref, atol=1e-9)


def test_gradient_vanishes_on_coefficients_that_sit_on_integers():
    """d/dX of round X + (X - round X)^3 is 3 (X - round X)^2: zero where X is an integer."""
    k = torch.randint(-20, 21, (1, 3, 6, 8, 8, 8), generator=torch.Generator().manual_seed(0)).double()
    x = from_dct(k, 90).requires_grad_(True)  # its coefficients are exactly the integers k
    (g,) = torch.autograd.grad((soft_roundtrip(x, 90) * torch.randn_like(x)).sum(), x)
    assert g.abs().max() < 1e-9
    # half-way between integers, the derivative is 3/4: the gradient is 3/4 of the identity's
    x = from_dct(k + 0.5, 90).requires_grad_(True)
    w = torch.randn_like(x)
    (g,) = torch.autograd.grad((soft_roundtrip(x, 90) * w).sum(), x)
    assert torch.allclose(g, 0.75 * w, atol=1e-8)


def test_420_chroma_is_shared_by_2x2_pixels_and_luma_is_the_444_one():
    x = _chelsea(46, 62)
    out = soft_roundtrip(x, 90, subsampling=True)
    ycc = torch.einsum("ij,njhw->nihw", torch.tensor([[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5],
                                                     [0.5, -0.418687589, -0.081312411]], dtype=x.dtype), out)
    chroma = ycc[:, 1:]
    assert torch.allclose(chroma[..., 0::2, 0::2], chroma[..., 1::2, 1::2], atol=1e-9)
    assert torch.allclose(chroma[..., 0::2, 0::2], chroma[..., 0::2, 1::2], atol=1e-9)
    luma = lambda t: torch.einsum("j,njhw->nhw", torch.tensor([0.299, 0.587, 0.114], dtype=t.dtype), t)  # noqa: E731
    assert torch.allclose(luma(out), luma(soft_roundtrip(x, 90)), atol=1e-9)


@pytest.mark.parametrize("quality", [75, 90])
def test_420_is_closer_to_pillows_reencode_than_the_identity_or_444(quality):
    """The stand-in's value is near libjpeg's (through Pillow) where the identity is not."""
    x = _chelsea()
    real = _pillow_420(x, quality)
    rms = lambda a: float((a - real).pow(2).mean().sqrt())  # noqa: E731
    e420, e444, eid = rms(soft_roundtrip(x, quality, subsampling=True)), rms(soft_roundtrip(x, quality)), rms(x)
    assert e420 < 0.6 * eid and e420 < e444, (e420, e444, eid)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), seed=st.integers(0, 2**16))
def test_any_size_keeps_its_shape_and_is_finite(h, w, seed):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 255
    for sub in (False, True):
        out = soft_roundtrip(x, 85, subsampling=sub)
        assert out.shape == x.shape and torch.isfinite(out).all()


# -- the pipelines' +jpeg stage -------------------------------------------------------------------
CONFIG = type("C", (), dict(input_size=32, crop_pct=0.875, interpolation="bilinear"))()


def test_pipeline_cubic_backward_keeps_the_real_value_and_takes_the_soft_gradient():
    x = (_chelsea(45, 60).float() + 0.3).requires_grad_(True)
    g = torch.randn(1, 3, 32, 32)
    ident = P.parse("torch-bilinear+jpeg:90").front(CONFIG)
    cubic = P.parse("torch-bilinear+jpeg:90").front(CONFIG, jpeg_backward="cubic")
    y_id, y_cu = ident(x), cubic(x)
    assert torch.equal(y_id, y_cu)  # the value is Pillow's real re-encode either way
    (g_cu,) = torch.autograd.grad((y_cu * g).sum(), x)
    # reference: autograd through the stand-in, then the resize
    x2 = x.detach().clone().requires_grad_(True)
    ref = P.parse("torch-bilinear").front(CONFIG)(soft_roundtrip(x2, 90, subsampling=True))
    (g_ref,) = torch.autograd.grad((ref * g).sum(), x2)
    assert torch.allclose(g_cu, g_ref, atol=1e-5)
    (g_id,) = torch.autograd.grad((ident(x) * g).sum(), x)
    assert not torch.allclose(g_cu, g_id, atol=1e-3)
    with pytest.raises(P.PipelineError, match="JPEG backward"):
        P.parse("torch-bilinear+jpeg:90").front(CONFIG, jpeg_backward="sigmoid")


def test_settings_record_and_refuse_jpeg_backward():
    from advimage.engine import Settings

    explicit = Settings(victims="pil-bicubic,pil-bicubic+jpeg:90", jpeg_backward="identity")
    assert "jpeg_backward" not in explicit.identity()  # stores made before the option keep their hash
    assert explicit.plan.jpeg_backward == "identity"
    s = Settings(victims="pil-bicubic,pil-bicubic+jpeg:90", jpeg_backward="cubic")
    assert s.identity()["jpeg_backward"] == "cubic" and s.plan.jpeg_backward == "cubic"
    with pytest.raises(ValueError, match="valid: identity, cubic"):
        Settings(victims="pil-bicubic+jpeg:90", jpeg_backward="exact")
    with pytest.raises(ValueError, match=r"\+jpeg:Q"):  # nothing to shape: refused, not ignored
        Settings(victims="pil-bicubic,torch-bilinear", jpeg_backward="cubic")
    with pytest.raises(ValueError, match=r"\+jpeg:Q"):
        Settings(jpeg_backward="cubic")
    with pytest.raises(ValueError, match="black box"):
        Settings(attack="surfree", quantizers=("scaled",), victims="pil-bicubic+jpeg:90", jpeg_backward="cubic")


@pytest.mark.parametrize("kw, expected", [
    (dict(victims="common"), "cubic"),  # a gradient through pil-bicubic+jpeg:90
    (dict(victims="pil-bicubic,torch-bilinear+jpeg:95"), "cubic"),
    (dict(victims="resizes"), "identity"),  # no re-encode: nothing to shape
    (dict(), "identity"),
    (dict(victims="pil-bicubic"), "identity"),
    (dict(attack="surfree", steps=500, quantizers=("scaled",), victims="common"), "identity"),  # no gradient
])
def test_default_backward_is_cubic_where_a_gradient_meets_a_reencode(kw, expected):
    """Left out, jpeg_backward resolves at construction, so stores record the backward that ran; the
    default and the explicit choice are the same settings (same hash, same plan)."""
    from advimage.bench.store import settings_hash
    from advimage.engine import Settings

    s = Settings(**kw)
    assert s.jpeg_backward == expected and s.plan.jpeg_backward == expected
    explicit = Settings(**kw, jpeg_backward=expected)
    assert settings_hash(s.identity()) == settings_hash(explicit.identity())
    if expected == "cubic":
        other = Settings(**kw, jpeg_backward="identity")
        assert settings_hash(other.identity()) != settings_hash(s.identity())


@pytest.mark.parametrize("flags, expected", [([], "cubic"), (["--jpeg-backward", "identity"], "identity"),
                                             (["--jpeg-backward", "cubic"], "cubic")])
def test_cli_settings_take_the_resolved_default(flags, expected):
    from advimage.cli import _validate, build_parser

    args = build_parser().parse_args(["attack", "x.png", "--victims", "common", *flags])
    assert _validate(args).plan.jpeg_backward == expected


def test_engine_attacks_through_the_cubic_backward(tmp_path, tiny_registered):
    """The engine's attacked classifier carries the option, and its files are verified as ever."""
    from advimage import codec
    from advimage.data import ImageItem
    from advimage.engine import Settings, attacked_model, run_batch
    from advimage.models import load_model

    model = load_model("tiny-test")
    path = tmp_path / "p.png"
    path.write_bytes(codec.encode_png(_chelsea(45, 60)[0].byte()))
    s = Settings(attack="bp", steps=30, victims="pil-bicubic,torch-bilinear+jpeg:90", jpeg_backward="cubic",
                 quantizers=("scaled",))
    attacked = attacked_model(model, s)
    assert [f.jpeg_backward for f in attacked.fronts] == ["cubic", "cubic"]
    (row,) = run_batch(model, [ImageItem(path, None)], s)
    assert row.status in ("fooled", "failed", "misclassified")
    if row.status == "fooled":
        for spec in s.victims:
            x = P.parse(spec).model_input(row.data, model.config)
            assert int(model(x[None]).argmax(1)) != row.label
