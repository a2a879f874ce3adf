"""Deployed pipelines: spec strings, the real pipelines against their differentiable layers,
OpenCV's weights against OpenCV, the multi-pipeline classifier, sharing, and the engine's
``victims`` (files verified through every pipeline of the set)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from advimage import codec
from advimage import pipelines as P

CONFIG = SimpleNamespace(input_size=32, crop_pct=0.875)  # shorter side 36, centre 32 x 32
HAVE_CV2 = True
try:
    import cv2
except ImportError:  # pragma: no cover - cv2 is a dev dependency
    HAVE_CV2 = False


def _resizes() -> list[str]:
    return [r for r in P.resize_names() if HAVE_CV2 or not r.startswith("cv2-")]


def _photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random photo with some texture: uint8 (3, h, w)."""
    g = np.random.default_rng(seed)
    base = g.uniform(40, 215, (3, 1 + h // 8, 1 + w // 8))
    x = np.kron(base, np.ones((8, 8)))[:, :h, :w] + g.normal(0, 12, (3, h, w))
    return torch.from_numpy(np.clip(x, 0, 255).round().astype(np.uint8))


# -- spec strings ---------------------------------------------------------------------------------
def test_parse_canonical_order_and_fields():
    p = P.parse("torch-bicubic-noaa+jpeg:85+bf16+round")
    assert (p.resize, p.round, p.precision, p.jpeg) == ("torch-bicubic-noaa", True, "bf16", 85)
    assert p.library == "torch" and p.filter == "bicubic" and not p.antialias
    assert p.spec == "torch-bicubic-noaa+round+bf16+jpeg:85"
    assert P.parse(p.spec) == p
    assert P.parse("bilg").library == "thesis"


@pytest.mark.parametrize("spec, message", [
    ("pil-nearestish", "unknown resize"),
    ("torch-bicubic+sharpen", "unknown modifier"),
    ("torch-bicubic+round+round", "repeated"),
    ("pil-bicubic+jpeg:90+jpeg:80", "repeated"),
    ("pil-bicubic+round", "already gives 8-bit"),
    ("pil-bicubic+jpeg:0", "1..100"),
    ("", "non-empty"),
])
def test_parse_refuses_with_what_is_valid(spec, message):
    with pytest.raises(P.PipelineError, match=message):
        P.parse(spec)


def test_unknown_resize_lists_the_valid_ones():
    with pytest.raises(P.PipelineError) as exc:
        P.parse("magic")
    assert "pil-lanczos" in str(exc.value) and "torch-bilinear-noaa" in str(exc.value)


def test_resolve_sets_lists_and_repeats():
    assert P.resolve("common") == P.COMMON
    assert len(P.COMMON) == 13 and len(set(P.COMMON)) == 13
    assert P.resolve("pil-bicubic, torch-bilinear+round,pil-bicubic") == ("pil-bicubic", "torch-bilinear+round")
    with pytest.raises(P.PipelineError, match="set 'common' inside a list"):
        P.resolve("pil-bicubic,common")
    with pytest.raises(P.PipelineError, match="no pipeline"):
        P.resolve(" , ")
    assert all(P.parse(n).spec == n for n in P.names())
    assert all(P.describe(n) for n in P.COMMON)


# -- the layer equals the real pipeline ----------------------------------------------------------
@pytest.mark.parametrize("resize", _resizes())
@pytest.mark.parametrize("hw", [(45, 60), (70, 41), (36, 36), (20, 30)])  # down, portrait, same size, up
def test_front_equals_the_real_pipeline_bit_for_bit(resize, hw):
    img = _photo(*hw, seed=hw[0])
    data = codec.encode_png(img)
    p = P.parse(resize)
    real = p.model_input(data, CONFIG)
    layer = p.front(CONFIG)(img.float()[None])[0]
    assert real.shape == layer.shape == (3, 32, 32)
    tol = 1e-3 if p.library in ("torch", "thesis") else 0.0  # float maps: the same ops; 8-bit ones: exact
    assert (real - layer).abs().max() <= tol


def test_pil_pipeline_is_pillows_own_resize():
    """Independent of the project's resize code: Pillow's Image.resize then the crop."""
    img = _photo(50, 67)
    ref = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((48, 36), Image.Resampling.LANCZOS)
    ref_t = torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1).float()[:, 2:34, 8:40]
    layer = P.parse("pil-lanczos").front(CONFIG)(img.float()[None])[0]
    assert torch.equal(layer, ref_t)


@pytest.mark.skipif(not HAVE_CV2, reason="needs opencv-python-headless")
@pytest.mark.parametrize("filter", P.CV2_FILTERS)
@pytest.mark.parametrize("shape", [((90, 120), (36, 48)), ((64, 64), (32, 32)), ((30, 50), (36, 60))])
def test_cv2_weights_are_opencvs_float_resize(filter, shape):
    (H, W), (h, w) = shape
    x = np.random.default_rng(1).uniform(0, 255, (H, W, 3))
    ref = cv2.resize(x, (w, h), interpolation=P._cv2_flag(filter))
    kh, kw = P.cv2_weights(H, h, filter).numpy(), P.cv2_weights(W, w, filter).numpy()
    ours = np.stack([kh @ x[..., c] @ kw.T for c in range(3)], -1)
    assert np.abs(ours - ref).max() < 1e-9


@pytest.mark.skipif(not HAVE_CV2, reason="needs opencv-python-headless")
@pytest.mark.parametrize("filter", P.CV2_FILTERS)
def test_cv2_front_gradient_is_the_adjoint_of_opencvs_map(filter):
    """<A e, g> (A: cv2.resize in float64, then the crop) equals <e, backward(g)> for random e, g."""
    H, W = 45, 60
    x = _photo(H, W).float()[None].requires_grad_(True)
    front = P.parse(f"cv2-{filter}").front(CONFIG)
    g = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    (grad,) = torch.autograd.grad((front(x).double() * g).sum(), x)
    e = np.random.default_rng(2).normal(size=(H, W, 3))
    Ae = cv2.resize(e, (48, 36), interpolation=P._cv2_flag(filter))[2:34, 8:40]
    lhs = float((torch.from_numpy(Ae).permute(2, 0, 1) * g[0]).sum())
    rhs = float((torch.from_numpy(e).permute(2, 0, 1) * grad[0].double()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_round_is_straight_through_and_jpeg_is_bpda():
    x = (_photo(45, 60).float() + 0.3)[None].requires_grad_(True)
    g = torch.randn(1, 3, 32, 32)
    grads = {}
    for spec in ("torch-bilinear", "torch-bilinear+round", "torch-bilinear+jpeg:90"):
        y = P.parse(spec).front(CONFIG)(x)
        if "round" in spec:
            assert torch.equal(y, y.round())
        (grads[spec],) = torch.autograd.grad((y * g).sum(), x)
    # a linear resize has the same gradient everywhere: rounding and re-encode pass it through
    assert torch.allclose(grads["torch-bilinear+round"], grads["torch-bilinear"], atol=1e-6)
    assert torch.allclose(grads["torch-bilinear+jpeg:90"], grads["torch-bilinear"], atol=1e-6)


def test_jpeg_pipeline_reencodes_like_pillow_with_its_defaults():
    img = _photo(45, 60)
    data = codec.encode_png(img)
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=85)  # 4:2:0
    ref = P.parse("torch-bilinear").model_input(buf.getvalue(), CONFIG)
    assert torch.equal(P.parse("torch-bilinear+jpeg:85").model_input(data, CONFIG), ref)
    assert not torch.equal(P.parse("torch-bilinear").model_input(data, CONFIG), ref)


# -- the multi-pipeline classifier and sharing ------------------------------------------------------
def _pixel_model():
    from advimage.models import ModelConfig, PixelClassifier
    from conftest import _NormalizedLinear
    config = ModelConfig(name="tiny-test", input_size=32, crop_pct=0.875, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_classes=10)
    return PixelClassifier(_NormalizedLinear(), config, [f"class{i}" for i in range(10)])


def test_pipeline_classifier_runs_each_member_in_its_precision():
    from advimage.models.fast import fast_classifier

    model = _pixel_model()
    specs = ["pil-bicubic", "torch-bilinear-noaa", "pil-bicubic+bf16"]
    clf = P.PipelineClassifier(model, specs)
    x = _photo(45, 60).float()[None]
    out = clf(x)
    assert out.shape == (1, 3, 10)
    for k, s in enumerate(specs):
        crop = P.parse(s).front(model.config)(x)
        net = fast_classifier(model, precision=P.parse(s).precision)
        assert torch.allclose(out[:, k], net(crop), rtol=1e-5, atol=1e-3)  # batched matmuls round apart
    assert (out[:, 0] - out[:, 2]).abs().max() > 0.05  # bf16 really ran
    xs = x.unsqueeze(1).expand(-1, 3, -1, -1, -1)
    assert torch.allclose(clf.members(xs), out, rtol=1e-5, atol=1e-3)


def test_share_groups_near_identical_linear_maps():
    groups = P.share(P.COMMON, SimpleNamespace(input_size=224, crop_pct=0.875), (375, 500), tolerance=0.1)
    flat = [s for g in groups for s in g]
    assert sorted(flat) == sorted(P.COMMON)
    where = {s: i for i, g in enumerate(groups) for s in g}
    # rounding and precision do not change the linear map; torch's and Pillow's bicubic nearly agree
    assert where["torch-bicubic+round"] == where["torch-bicubic"] == where["pil-bicubic+bf16"] == where["pil-bicubic"]
    assert where["torch-bicubic"] != where["torch-bicubic-noaa"]  # antialias changes what noise survives
    assert [g for g in groups if "pil-bicubic+jpeg:90" in g] == [["pil-bicubic+jpeg:90"]]
    assert len(P.share(P.COMMON, SimpleNamespace(input_size=224, crop_pct=0.875), (375, 500), 0.0)) == 13 - 2


def test_front_distance_is_zero_for_modifiers_and_large_for_antialias():
    c = SimpleNamespace(input_size=224, crop_pct=0.875)
    assert P.front_distance("torch-bicubic", "torch-bicubic+round+bf16", c, (300, 400)) == 0.0
    assert P.front_distance("torch-bicubic", "torch-bicubic-noaa", c, (300, 400)) > 0.2  # 300 -> 256 only


# -- the engine ----------------------------------------------------------------------------------------
@pytest.fixture
def photo_items(tmp_path, tiny_registered):
    from advimage.data import ImageItem

    out = []
    for i, hw in enumerate([(45, 60), (50, 44)]):
        path = tmp_path / f"p{i}.png"
        path.write_bytes(codec.encode_png(_photo(*hw, seed=10 + i)))
        out.append(ImageItem(path, None))
    return out


VICTIMS = "pil-bicubic,torch-bilinear-noaa,pil-lanczos+jpeg:90" + (",cv2-area" if HAVE_CV2 else "")


def test_victims_files_fool_every_pipeline_checked_independently(photo_items):
    from advimage.engine import Settings, run_batch

    model = _pixel_model()
    settings = Settings(attack="bp", steps=40, victims=VICTIMS, margin=0.5)
    assert settings.victims == P.resolve(VICTIMS) and settings.query_paths == len(settings.victims)
    rows = run_batch(model, photo_items, settings)
    assert {r.status for r in rows} <= {"fooled", "failed", "misclassified"}
    fooled = [r for r in rows if r.status == "fooled"]
    assert fooled, [r.to_dict() for r in rows]
    for r in fooled:
        assert list(r.verified_paths) == list(settings.victims) and all(r.verified_paths.values())
        for spec in settings.victims:  # re-verify through each pipeline's real libraries
            x = P.parse(spec).model_input(r.data, model.config)
            assert int(model(x[None]).argmax(1)) != r.label, spec


def test_victims_identity_and_refusals(photo_items):
    from advimage.engine import Settings

    plain = Settings()
    assert "victims" not in plain.identity()  # earlier stores keep their hash
    s = Settings(victims="common")
    assert s.identity()["victims"] == list(P.COMMON) and s.verification_paths == P.COMMON
    for bad in (dict(size="model"), dict(downscaler="bilg"), dict(ensemble="avg"), dict(victim="float"),
                dict(aggregation="mean"), dict(share=-1.0)):
        with pytest.raises(ValueError):
            Settings(victims="pil-bicubic", **bad)
    with pytest.raises(P.PipelineError, match="unknown resize"):
        Settings(victims="pil-bicubic,pil-magic")


def test_black_box_victims_count_every_pipeline_as_a_query(photo_items):
    from advimage.engine import Settings, run_batch

    settings = Settings(attack="surfree", steps=200, victims="pil-bicubic,torch-bilinear-noaa")
    rows = run_batch(_pixel_model(), photo_items, settings)
    for r in rows:
        assert r.queries <= 200 and list(r.verified_paths) in ([], list(settings.victims))


def test_cli_pipelines_lists_and_attack_refuses_unknown(capsys, tmp_path):
    from advimage.cli import main

    assert main(["pipelines"]) == 0
    out = capsys.readouterr().out
    assert all(s in out for s in P.COMMON) and "common" in out and P.SYNTAX in out
    with pytest.raises(SystemExit) as exc:
        main(["attack", str(tmp_path), "--victims", "pil-magic", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "unknown resize 'pil-magic'" in capsys.readouterr().err


def test_max_gradient_through_one_member_equals_autograd_of_the_max():
    """The oracle backpropagates only the member attaining max_k L_k: same loss and gradient as
    autograd through every member."""
    from advimage.criteria import AllPaths, Misclassification
    from advimage.oracle import LossOracle

    model = _pixel_model()
    clf = P.PipelineClassifier(model, ["torch-bilinear", "torch-bilinear-noaa", "bilg"])
    x = torch.stack([_photo(45, 60, seed=s).float() for s in range(4)])
    crit = AllPaths(Misclassification(model(P.parse("torch-bilinear").front(model.config)(x)).argmax(1)))
    loss, grad, logits = LossOracle(clf, crit).loss_and_grad(x)
    xr = x.clone().requires_grad_(True)
    ref_loss = crit.loss(clf(xr))
    (ref_grad,) = torch.autograd.grad(ref_loss.sum(), xr)
    assert torch.allclose(loss, ref_loss.detach(), atol=1e-3)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * ref_grad.abs().max())


@pytest.mark.skipif(not HAVE_CV2, reason="needs opencv-python-headless")
def test_cli_victims_writes_files_that_opencv_and_pillow_misclassify(photo_items, tmp_path, capsys, tiny_registered):
    """End to end: the written file, read back from disk by OpenCV itself and by Pillow itself."""
    import json

    from advimage.cli import main
    from advimage.models import get

    out = tmp_path / "out"
    rc = main(["attack", str(photo_items[0].path), "--model", tiny_registered, "--steps", "40",
               "--victims", "cv2-linear,pil-lanczos+jpeg:95", "--out", str(out), "--json", "--no-figures"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(rows) == 1
    row = rows[0]
    assert row["verified_paths"] == {"cv2-linear": True, "pil-lanczos+jpeg:95": True}, row
    model = get(tiny_registered)  # the model the CLI loaded: input 32, crop_pct 1 (shorter side 32)
    bgr = cv2.imread(row["output"], cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    size = (32, round(32 * h / w)) if w <= h else (int(32 * w / h), 32)
    small = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)[..., ::-1]
    top, left = round((small.shape[0] - 32) / 2), round((small.shape[1] - 32) / 2)
    x = torch.from_numpy(np.ascontiguousarray(small[top:top + 32, left:left + 32])).permute(2, 0, 1).float()
    assert int(model(x[None]).argmax(1)) != row["label"]
    buf = io.BytesIO()
    Image.open(row["output"]).convert("RGB").save(buf, format="JPEG", quality=95)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    img = img.resize((int(32 * img.width / img.height), 32) if img.width >= img.height
                     else (32, int(32 * img.height / img.width)), Image.Resampling.LANCZOS)
    t, lt = round((img.height - 32) / 2), round((img.width - 32) / 2)
    x = torch.from_numpy(np.asarray(img)[t:t + 32, lt:lt + 32].copy()).permute(2, 0, 1).float()
    assert int(model(x[None]).argmax(1)) != row["label"]
