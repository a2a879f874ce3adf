"""Scaled rounding (``scaled``, ``scaled-prune``): the smallest adversarial scale, on models where it
is known independently."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advimage.attacks import get
from advimage.quantize import quantize_scaled, spec
from advimage.quantize.scaled import scaled_round, start_scale


def _smallest_scale_by_scan(model, x0, u, y, scales):
    """First scale of an increasing grid whose rounded image fools the binary linear model."""
    for s in scales:
        xq = scaled_round(x0, u, torch.tensor([s]))
        if model(xq).argmax(1).item() != y.item():
            return s
    return None


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.45))
def test_scale_found_is_the_smallest_adversarial_one_on_a_linear_model(seed, level):
    """Binary linear model, u = -c w: the loss of round(s u) is non-increasing in s, so success is
    monotone and a fine scan gives the smallest adversarial s independently of the search."""
    from conftest import BinaryLinear

    model = BinaryLinear()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(60, 196, (1, 3, 8, 8), generator=g).float()
    w = model.w.view(1, 3, 8, 8)
    model.b.data = (-(x0.flatten(1) @ model.w) + float(torch.rand(1, generator=g)) * 0.5 + 0.01)[0]  # class 1
    y = model(x0).argmax(1)
    sign = 1.0 if y.item() == 1 else -1.0
    u = -sign * level * w / w.abs().max()      # float perturbation along -∇(logit margin), |u| <= level
    u = (x0 + u) - x0  # the perturbation as the quantizer sees it (float32 rounding)
    q = quantize_scaled(model, x0, x0 + u, y, steps=40)
    assert q.success.all()
    s = float(q.lam[0])
    xq = q.pixels.float()
    assert torch.equal(xq, scaled_round(x0, u, q.lam))
    assert model(xq).argmax(1).item() != y.item()
    scan = _smallest_scale_by_scan(model, x0, u, y, torch.exp(torch.linspace(-3, 8, 4000)).tolist())
    assert scan is not None
    assert s <= scan * 1.01  # the grid step is 0.28%; the bisection ends far tighter than 1%


def test_scaled_beats_or_matches_smart_and_spends_no_gradient(multiclass_problem):
    from advimage.quantize import quantize_spatial

    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=50)
    q = quantize_scaled(model, x, res.x_adv, y)
    assert q.pixels.dtype == torch.uint8 and q.success.all()
    assert ((model(q.pixels.float()).argmax(1) != y) == q.success).all()
    assert (q.gradients == 0).all() and (q.forwards <= 10).all()
    smart = quantize_spatial(model, x, res.x_adv, y)
    # on a linear model BP's u is parallel to -w: thresholding |u| keeps the largest |w| entries,
    # which is what the linear optimum keeps, so scaled rounding cannot be far behind (or ahead)
    assert q.distortion.mean() <= 1.05 * smart.distortion.mean()


def test_scaled_prune_never_adds_distortion_and_stays_adversarial(multiclass_problem):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    q = spec("scaled").run(model, x, res.x_adv, y)
    p = spec("scaled-prune").run(model, x, res.x_adv, y)
    assert torch.equal(p.success, q.success)
    ok = p.success
    assert (model(p.pixels.float()).argmax(1)[ok] != y[ok]).all()
    assert (p.distortion[ok] <= q.distortion[ok] + 1e-6).all()
    kq, kp = q.pixels.float() - x, p.pixels.float() - x
    assert ((kp == 0) | (kp == kq)).all()
    assert (p.gradients <= 2).all()


def test_original_already_adversarial_and_failure_and_errors(multiclass_problem):
    model, x, y = multiclass_problem
    wrong = (y + 1) % 10
    q = quantize_scaled(model, x, x + 0.3, wrong)
    assert q.success.all() and torch.equal(q.pixels.float(), x)
    # u = 0: no scale moves a pixel, so nothing succeeds and the failure is reported
    f = quantize_scaled(model, x, x, y)
    assert not f.success.any() and torch.isnan(f.lam).all()
    with pytest.raises(ValueError, match="differ in shape"):
        quantize_scaled(model, x, x[:, :, :8], y)
    with pytest.raises(ValueError, match="steps"):
        quantize_scaled(model, x, x, y, steps=1)


def test_start_scale_keeps_the_top_quantile():
    u = torch.linspace(-1, 1, 3 * 10 * 10).view(1, 3, 10, 10)
    s = start_scale(u, 0.9)
    kept = (scaled_round(torch.full_like(u, 128), u, s) != 128).float().mean()
    assert 0.08 <= float(kept) <= 0.12
