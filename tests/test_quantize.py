"""Spatial smart quantization (thesis §7.2): properties and behaviour."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advimage.attacks import get
from advimage.distortion import distortion
from advimage.quantize import admissible_bounds, lambda_c, quantize_at, round_pixels
from advimage.quantize import quantize_spatial as quantize

DFS = [0, 1, 2, 3, 5]


@st.composite
def problems(draw):
    """Original integer pixels, a float adversarial sample near them and a gradient."""
    seed = draw(st.integers(0, 2**31 - 1))
    spread = draw(st.floats(0.01, 4.0))
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (2, 3, 4, 4), generator=g).float()
    xa = (x0 + spread * torch.randn(x0.shape, generator=g)).clamp(0, 255)
    grad = torch.randn(x0.shape, generator=g)
    return x0, xa, grad


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(DFS + [math.inf]), st.floats(0.0, 1e4))
def test_quantized_pixels_are_integers_in_range_and_within_df(problem, df, lam):
    x0, xa, grad = problem
    low, high = admissible_bounds(xa - x0, df)
    xq = quantize_at(x0, grad, low, high, torch.full((2,), lam))
    assert torch.equal(xq, xq.round())
    assert xq.min() >= 0 and xq.max() <= 255
    if math.isfinite(df):
        assert ((xq - xa).abs() <= (df + 1) / 2 + 1e-4).all()


@settings(max_examples=60, deadline=None)
@given(problems(), st.floats(0.0, 1e4))
def test_df0_is_rounding(problem, lam):
    x0, xa, grad = problem
    low, high = admissible_bounds(xa - x0, 0)
    xq = quantize_at(x0, grad, low, high, torch.full((2,), lam))
    # df = 0 keeps [u] (eq. 7.8), u = xa - x0; it equals round(xa) except at exact halves,
    # where round-half-to-even may pick the other neighbour
    assert torch.equal(xq, (x0 + (xa - x0).round()).clamp(0, 255))
    assert ((xq - xa).abs() <= 0.5).all()


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(DFS + [math.inf]), st.floats(0.0, 1e3), st.floats(1.0, 10.0))
def test_distortion_is_non_decreasing_in_lambda(problem, df, lam, factor):
    x0, xa, grad = problem
    low, high = admissible_bounds(xa - x0, df)
    d1 = distortion(quantize_at(x0, grad, low, high, torch.full((2,), lam)), x0)
    d2 = distortion(quantize_at(x0, grad, low, high, torch.full((2,), lam * factor)), x0)
    assert (d2 >= d1 - 1e-6).all()


@settings(max_examples=40, deadline=None)
@given(st.floats(-300, 300, allow_nan=False), st.sampled_from(DFS))
def test_each_pixel_has_df_plus_one_choices(u, df):
    ut = torch.tensor([u])  # float32, as pixels are
    low, high = admissible_bounds(ut, df)
    choices = int(high - low) + 1
    # an integer u has one fewer floor/ceil choice for odd df
    assert choices == df + 1 or (df % 2 == 1 and float(ut).is_integer() and choices == df)


def test_lambda_c_cancels_the_linearized_loss():
    # eq. (7.16): with q = -λ_c g / 2 - u, L + q·g = 0
    g = torch.Generator().manual_seed(0)
    grad, u = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    loss = torch.tensor([-0.5, 0.2, 1.0])
    lc = lambda_c(loss, grad, u)
    q = -lc.view(-1, 1, 1, 1) * grad / 2 - u
    raw = 2 * (loss - (u * grad).flatten(1).sum(1)) / grad.flatten(1).pow(2).sum(1)
    pos = raw > 0
    assert pos.any() and (~pos).any()
    assert torch.allclose((loss + (q * grad).flatten(1).sum(1))[pos], torch.zeros(int(pos.sum())), atol=1e-4)
    # where eq. 7.16 is not positive, the scale of a step as long as the perturbation is used
    fallback = 2 * u.flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1)
    assert torch.allclose(lc[~pos], fallback[~pos])


@pytest.fixture
def attacked(multiclass_problem):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=50)
    assert res.success.all()
    return model, x, y, res


def test_smart_quantization_keeps_images_adversarial_where_rounding_fails(attacked):
    model, x, y, res = attacked
    rounded_fools = model(round_pixels(res.x_adv).float()).argmax(1) != y
    q = quantize(model, x, res.x_adv, y, df=1)
    assert q.pixels.dtype == torch.uint8
    pred = model(q.pixels.float()).argmax(1)
    assert ((pred != y) == q.success).all()
    assert q.success.all() and not rounded_fools.all()
    assert (q.distortion <= 1.6 * res.distortion).all()
    assert (q.forwards <= 10).all() and (q.gradients == 1).all()
    assert ((q.pixels.float() - res.x_adv).abs() <= 1.0 + 1e-4).all()


def test_quantize_accepts_unit_range_outputs_of_other_libraries(attacked):
    model, x, y, res = attacked
    q255 = quantize(model, x, res.x_adv, y)
    q1 = quantize(model, (x / 255), res.x_adv / 255, y, scale=255)
    assert torch.equal(q1.pixels, q255.pixels)
    with pytest.raises(ValueError, match="scale=255"):
        quantize(model, x, res.x_adv / 255, y)


def test_already_misclassified_original_is_returned_unchanged(attacked):
    model, x, y, res = attacked
    wrong = (y + 1) % 10
    q = quantize(model, x, res.x_adv, wrong)
    assert q.success.all()
    assert torch.equal(q.pixels.float(), x)


def test_failure_is_reported(attacked):
    model, x, y, res = attacked
    # the original itself is not adversarial and df = 0 leaves no freedom to fix that
    q = quantize(model, x, x, y, df=0)
    assert not q.success.any() and torch.isnan(q.lam).all()


def test_shape_mismatch_and_bad_df_are_refused(attacked):
    model, x, y, res = attacked
    with pytest.raises(ValueError, match="differ in shape"):
        quantize(model, x, res.x_adv[:, :, :8], y)
    with pytest.raises(ValueError, match="df"):
        quantize(model, x, res.x_adv, y, df=1.5)


def test_sample_within_a_hair_of_the_boundary_is_still_quantized():
    """λ_c is tiny when x0 nearly touches the boundary; 100 λ_c would not move a single pixel."""
    from conftest import BinaryLinear

    model = BinaryLinear()
    x = torch.full((1, 3, 8, 8), 128.0)
    model.b.data = -(x.flatten(1) @ model.w)[0] + 1e-4  # logit 1e-4: class 1, barely
    y = model(x).argmax(1)
    res = get("bp")(model, x, y, steps=20)
    assert res.success.all() and res.distortion[0] < 1e-3
    q = quantize(model, x, res.x_adv, y, df=1)
    assert q.success.all()
    assert (model(q.pixels.float()).argmax(1) != y).all()
    assert q.distortion[0] <= math.sqrt(2 / x[0].numel()) + 1e-6  # at most two pixels moved by one level


def test_pruning_keeps_the_image_adversarial_and_never_adds_distortion(multiclass_problem):
    from advimage.quantize import spec
    from advimage.quantize.prune import prune

    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    q = quantize(model, x, res.x_adv, y)
    p = spec("smart-prune").run(model, x, res.x_adv, y)
    assert torch.equal(p.success, q.success)
    ok = p.success
    assert (model(p.pixels.float()).argmax(1)[ok] != y[ok]).all()
    assert (p.distortion[ok] <= q.distortion[ok] + 1e-6).all()
    # every pruned pixel went back to the original; no new change appears
    kq, kp = q.pixels.float() - x, p.pixels.float() - x
    assert ((kp == 0) | (kp == kq)).all()
    assert (p.gradients <= 3).all()
    # the bisection undoes nothing when nothing can be undone: an image one change away from the boundary
    pruned, undone, oracle = prune(model, x[ok][:1], q.pixels[ok][:1].float(), y[ok][:1], steps=8)
    assert int(oracle.forwards.max()) <= 8 and int(undone[0]) >= 0
