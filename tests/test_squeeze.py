"""Squeezing defenses (thesis §5.3.2, Xu et al. 2018): bit depth, median smoothing (against scipy),
BPDA gradients, model specs, the feature-squeezing detector and the squeezing experiment end to end."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from advimage import defenses
from advimage.defenses.feature_squeezing import FeatureSqueezingDetector, threshold_at_fpr
from advimage.defenses.squeeze import (
    BitDepth,
    BitDepthDefense,
    MedianDefense,
    MedianSmoothing,
    bit_depth,
    median_filter,
)
from bench_tiny import TINY, make_image_set


def photo(size: int = 48) -> torch.Tensor:
    """scikit-image's astronaut, resized: float pixels (1, 3, size, size)."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    img = Image.fromarray(skdata.astronaut()).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()


# -- bit depth ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_bit_depth_levels(bits):
    x = torch.arange(256.0)
    q = bit_depth(x, bits)
    levels = 2 ** bits - 1
    expected = torch.tensor([round(v / 255 * levels) * 255 / levels for v in range(256)])  # the formula
    assert torch.allclose(q, expected, atol=1e-4)
    assert len(q.unique()) == levels + 1 and q.min() == 0 and q.max() == 255
    assert bool(((q - x).abs() <= 255 / levels / 2 + 1e-4).all())  # rounding to the nearest level


def test_bit_depth_known_values_and_identity_at_8_bits():
    assert bit_depth(torch.tensor([0.0, 18.0, 19.0, 127.0, 128.0, 255.0]), 3).tolist() == pytest.approx(
        [0, 0, 255 / 7, 3 * 255 / 7, 4 * 255 / 7, 255])
    x = torch.randint(0, 256, (2, 3, 5, 5)).float()
    assert torch.equal(bit_depth(x, 8), x)
    assert torch.equal(bit_depth(torch.tensor([-3.0, 300.0]), 1), torch.tensor([0.0, 255.0]))


# -- median smoothing --------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 5), h=st.integers(5, 12), w=st.integers(5, 12), seed=st.integers(0, 2**31 - 1),
       integer=st.booleans())
def test_median_equals_scipy_reflect(k, h, w, seed, integer):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64) * 255
    if integer:  # many ties
        x = (x / 32).round() * 32
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="reflect")
    assert np.array_equal(median_filter(x, k).numpy(), ref)


def test_median_on_a_photo_matches_scipy():
    x = photo()
    for k in (2, 3):
        ref = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="reflect")
        assert np.array_equal(median_filter(x, k).numpy(), ref)


def test_median_bad_inputs():
    with pytest.raises(ValueError, match="median window"):
        median_filter(torch.zeros(1, 3, 4, 4), 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        median_filter(torch.zeros(3, 4, 4), 2)
    with pytest.raises(ValueError, match="too large"):
        median_filter(torch.zeros(1, 3, 2, 2), 7)


# -- BPDA gradients ----------------------------------------------------------------------------
@pytest.mark.parametrize("squeezer", [BitDepth(3), MedianSmoothing(2), MedianSmoothing(3)])
def test_bpda_identity_gradient_and_exact_value(squeezer):
    x = (torch.rand(2, 3, 9, 9, dtype=torch.float64) * 255).requires_grad_(True)
    out = squeezer(x)
    assert torch.equal(out.detach(), squeezer.squeeze(x.detach()))  # forward: exactly the squeezer
    g = torch.randn_like(x)
    out.backward(g)
    assert torch.equal(x.grad, g)  # backward: identity


def test_other_backwards():
    x = (torch.rand(1, 3, 6, 6) * 255).requires_grad_(True)
    BitDepth(3, backward="exact")(x).sum().backward()
    assert torch.count_nonzero(x.grad) == 0  # the obfuscated gradient BPDA works around
    x.grad = None
    MedianSmoothing(3, backward="exact")(x).sum().backward()
    assert x.grad.sum().item() == pytest.approx(x.numel())  # each output's gradient goes to one input pixel
    assert not MedianSmoothing(2, backward="none")(x).requires_grad
    with pytest.raises(ValueError, match="unknown backward"):
        BitDepth(3, backward="cubic")


def test_defended_classifier_forward_and_gradient(tiny_model):
    x = (torch.rand(2, 3, 16, 16) * 255).requires_grad_(True)
    d = defenses.create("median", tiny_model, size=3)
    assert isinstance(d, MedianDefense) and d.model is tiny_model and d.squeezer.size == 3
    assert torch.allclose(d(x), tiny_model(median_filter(x.detach(), 3)))
    d(x).sum().backward()
    g_def = x.grad.clone()
    x.grad = None
    xs = median_filter(x.detach(), 3).requires_grad_(True)
    tiny_model(xs).sum().backward()
    assert torch.allclose(g_def, xs.grad)  # BPDA: the model's gradient at the squeezed point
    b = defenses.create("bits", tiny_model, bits=4)
    assert isinstance(b, BitDepthDefense) and b.squeezer.bits == 4


# -- model specs -------------------------------------------------------------------------------
def test_specs_build_squeezing_defenses(tiny_registered):
    from advimage.models.protocol import Classifier
    from advimage.specs import load_classifier

    m = load_classifier(f"{tiny_registered}+bits:3", device="cpu")
    assert isinstance(m, BitDepthDefense) and m.squeezer.bits == 3 and isinstance(m, Classifier)
    m = load_classifier(f"{tiny_registered}+median:3+bits:5", device="cpu")
    assert isinstance(m, BitDepthDefense) and isinstance(m.model, MedianDefense) and m.model.squeezer.size == 3
    x = torch.full((1, 3, 32, 32), 100.0)
    assert m.predict(x).shape == (1,) and m.config.name == "tiny-test" and m.class_name(2) == "class2"
    assert set(defenses.names()) >= {"bits", "median", "jpeg", "random-resize"}


@pytest.mark.parametrize("suffix, message", [
    ("+bits:0", r"bit depth \(\+bits:B\) must be an integer 1\.\.8, got '0'"),
    ("+bits:9", "bit depth"),
    ("+bits:2.5", "bit depth"),
    ("+median:abc", r"median window \(\+median:K\) must be an integer 2\.\.64, got 'abc'"),
    ("+median:1", "median window"),
])
def test_bad_specs_are_refused_before_building(tiny_registered, suffix, message):
    from advimage.bench.runner import ConfigError, check_names
    from advimage.specs import check, load_classifier

    with pytest.raises(ValueError, match=message):
        check(tiny_registered + suffix)
    with pytest.raises(ValueError, match=message):
        load_classifier(tiny_registered + suffix, device="cpu")
    with pytest.raises(ConfigError, match="bad model"):
        check_names([tiny_registered + suffix], ["bp"])
    name, arg = suffix[1:].split(":")
    with pytest.raises(ValueError, match=message.split(" ")[0]):  # the factories refuse it too
        defenses.get(name)(torch.nn.Identity(), arg)


# -- the detector ------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(scores=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=200),
       fpr=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.5]))
def test_threshold_at_fpr_is_the_smallest_allowed(scores, fpr):
    s = torch.tensor(scores, dtype=torch.float64)
    t = threshold_at_fpr(s, fpr)
    assert float((s > t).double().mean()) <= fpr + 1e-12
    lower = s[s < t]
    if lower.numel():  # any smaller calibration score would flag more than fpr
        assert float((s > lower.max()).double().mean()) > fpr


def test_detector_fpr_on_its_calibration_set(tiny_model):
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.interpolate(torch.rand(60, 3, 4, 4, generator=g) * 255, size=16, mode="bilinear",
                                           align_corners=False).round()
    det = FeatureSqueezingDetector(tiny_model, batch_size=16)
    assert det.names == ["bits:5", "median:2"]
    with pytest.raises(RuntimeError, match="fit"):
        det.detect(base)
    det.fit(base)
    flags = det.detect(base)
    assert flags.dtype == torch.bool and flags.shape == (60,)
    assert flags.double().mean() <= 0.05
    # the score is the largest squeezer's L1 distance between softmax outputs
    per = det.squeezer_scores(base[:4])
    p0 = tiny_model(base[:4]).softmax(-1)
    p1 = tiny_model(median_filter(base[:4], 2)).softmax(-1)
    assert torch.allclose(per[:, 1], (p1 - p0).abs().sum(-1), atol=1e-6)
    assert torch.equal(det.score(base[:4]), per.amax(1))
    assert bool((det.score(base) <= 2).all())
    with pytest.raises(ValueError, match="at least one squeezer"):
        FeatureSqueezingDetector(tiny_model, squeezers=[])


def test_detector_on_a_photo_flags_a_noisy_copy(tiny_model):
    x = photo(16)
    det = FeatureSqueezingDetector(tiny_model, squeezers=[BitDepth(1)], fpr=0.0).fit(x)
    assert not bool(det.detect(x)[0])
    assert det.score(x).item() == pytest.approx(det.threshold)


# -- the experiment end to end on a tiny model -------------------------------------------------
def test_adaptive_params_parsing():
    from advimage.experiments.squeezing import parse_params

    assert parse_params("kappa=0.05, runs=5,mode=x") == {"kappa": 0.05, "runs": 5, "mode": "x"}
    assert parse_params("") == {}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_params("kappa")


def test_squeezing_experiment_end_to_end(tmp_path, capsys):
    from advimage.cli import main
    from advimage.images import read_image

    (tmp_path / "set").mkdir()
    images = make_image_set(tmp_path / "set")
    out = tmp_path / "run"
    rc = main(["experiment", "squeezing", str(images), "--model", TINY, "--limit", "5", "--steps", "10",
               "--fgsm-steps", "8", "--calibration", "3", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["defenses"] == ["bits:3", "median:2"] and s["calibration"] == 3
    assert set(s["adaptive"]) == {"bits:3", "median:2"} and "bp" in s["detection"]
    assert (out / "table.md").read_text().startswith(TINY)
    import csv

    rows = list(csv.DictReader(open(out / "rows.csv")))
    files = [r for r in rows if r["file"]]
    assert files, "some attack must have written a verified file"
    from advimage.models import load_model
    from advimage.specs import load_classifier

    model = load_model(TINY, device="cpu")
    for r in files:  # every verdict re-checked on the file read back here
        x = read_image(r["file"]).float()[None]
        assert int(model.predict(x)) == int(r["pred_none"])
        if r["source"].startswith("adaptive@"):
            d = r["source"].split("@")[1]
            assert int(load_classifier(f"{TINY}+{d}", device="cpu").predict(x)) != int(r["label"])
    assert math.isfinite(s["threshold"])
    with pytest.raises(SystemExit) as e:
        main(["experiment", "squeezing", str(images), "--model", TINY, "--defenses", "bits:0", "--out", str(out)])
    assert e.value.code == 2 and re.search("bad --model/--defenses", capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:
        main(["experiment", "squeezing", str(images), "--model", TINY, "--adaptive-params", "nope=1",
              "--out", str(out)])
    assert e.value.code == 2 and re.search("adaptive-params", capsys.readouterr().err)
