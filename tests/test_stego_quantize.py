"""Steganographic quantization (thesis Ch. 8, §8.3): costs, the generic argmin, GINA's lattices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advimage import quantize as Q
from advimage.attacks import get
from advimage.oracle import LossOracle
from advimage.quantize import admissible_bounds, quantize_at, quantize_spatial, stego
from advimage.quantize.spatial import argmin_costs


@st.composite
def problems(draw):
    """Integer covers, float adversarial samples near them, gradients, quadratic weights."""
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (2, 3, 6, 6), generator=g).float()
    xa = (x0 + 3 * torch.randn(x0.shape, generator=g)).clamp(0, 255)
    grad = torch.randn(x0.shape, generator=g)
    weight = torch.exp(2 * torch.randn(x0.shape, generator=g))
    return x0, xa, grad, weight


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from([1, 2, 3, 4]), st.floats(0.0, 1e3))
def test_quadratic_closed_form_equals_generic_argmin(problem, df, lam):
    """Eq. 8.14 (closed form, rounding then clipping) = eq. 8.13 (argmin over the d_f + 1 values)."""
    x0, xa, grad, weight = problem
    low, high = admissible_bounds(xa - x0, df)
    lam_t = torch.full((2,), lam)
    closed = quantize_at(x0, grad, low, high, lam_t, weight)
    generic = argmin_costs(x0, grad, low, high, lam_t, lambda k: weight * k * k)
    assert torch.equal(closed, generic)


@settings(max_examples=40, deadline=None)
@given(problems(), st.sampled_from([1, 3]), st.lists(st.floats(0.0, 1e3), min_size=2, max_size=6))
def test_linear_loss_of_the_solution_is_non_increasing_in_lambda(problem, df, lams):
    """Larger λ never raises the linearized loss gᵀk (for any cost, GINA's asymmetric ones too):
    the sign of eq. 8.13 is the one that pushes k along −∇L."""
    x0, xa, grad, weight = problem
    low, high = admissible_bounds(xa - x0, df)
    mu = torch.randn(x0.shape)
    for costs in (lambda k: weight * k * k, stego.gina_costs(weight, mu), lambda k: weight * k.abs()):
        previous = None
        for lam in sorted(lams):
            k = argmin_costs(x0, grad, low, high, torch.full((2,), lam), costs) - x0
            lin = (grad * k).flatten(1).sum(1)
            if previous is not None:
                assert (lin <= previous + 1e-4).all()
            previous = lin


def test_loss_of_quantized_image_is_non_increasing_in_lambda(linear_problem):
    """On a linear model the linearization is exact, so L_adv(x_q(λ)) itself cannot rise with λ."""
    model, x, y = linear_problem
    res = get("bp")(model, x, y, steps=40)
    weight = stego.mipod_cost(x)
    low, high = admissible_bounds(res.x_adv - x, 3)
    _, grad, _ = LossOracle(model, y).loss_and_grad(res.x_adv)
    losses = []
    for lam in np.geomspace(1e-3, 1e4, 30):
        xq = quantize_at(x, grad, low, high, torch.full((len(x),), float(lam)), weight)
        logits = model(xq)
        losses.append(logits.gather(1, y[:, None])[:, 0] - logits.gather(1, 1 - y[:, None])[:, 0])
    losses = torch.stack(losses)
    assert (losses[1:] <= losses[:-1] + 1e-4).all()
    assert (losses[-1] < 0).all()  # the far end of the admissible set is adversarial here


def test_unit_costs_reproduce_the_chapter7_quantizer(multiclass_problem):
    """With w(ℓ) = ℓ² the generic path (eq. 8.13) is the smart quantizer of Ch. 7, image for image."""
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    for df in (1, 3):
        smart = Q.run("smart", model, x, res.x_adv, y, df=df, steps=12)
        generic = quantize_spatial(model, x, res.x_adv, y, df=df, steps=12, costs=lambda k: k * k)
        assert torch.equal(smart.pixels, generic.pixels)
        assert torch.equal(smart.success, generic.success)


def test_hill_cost_is_conseals_per_channel():
    import conseal
    from skimage import data

    img = data.astronaut()[100:164, 200:264]
    x0 = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    rho = stego.hill_cost(x0)
    for c in range(3):
        plus, minus = conseal.hill.compute_cost_adjusted(img[..., c])
        ref = np.minimum(np.minimum(plus, minus), stego.WET_COST)
        np.testing.assert_allclose(rho[0, c].numpy(), ref, rtol=1e-5)
    assert (rho > 0).all()


def test_mipod_variance_follows_the_paper():
    """σ² = the DCT-polynomial fit of the Wiener residual's local variance (MiPOD eqs. 24-26),
    computed here with a direct least-squares fit on one pixel (the residual from conseal's
    MATLAB-compatible wiener2, which scipy's Wiener filter does not reproduce at the borders)."""
    import conseal
    import scipy.fft
    from skimage import data

    img = data.coffee()[50:90, 60:100, 1].astype(np.float64)
    x0 = torch.from_numpy(np.stack([img] * 3))[None].float()
    var = stego.mipod_variance(x0)[0, 0].double().numpy()
    residual = img - conseal.mipod.wiener2(img, (2, 2))
    # the residual's local fit on the 9x9 block centred at (20, 20): project out the 45
    # low-frequency 2-D DCT basis images, the remaining energy over the 81 - 45 dof
    p, degree = 9, 9
    block = np.pad(residual, 4, mode="symmetric")[20:29, 20:29]
    basis = []
    for a in range(degree):
        for b in range(degree - a):
            e = np.zeros((p, p))
            e[a, b] = 1
            basis.append(scipy.fft.idctn(e, norm="ortho").flatten(order="F"))
    G = np.stack(basis, 1)
    v = block.flatten(order="F")
    fit = G @ np.linalg.lstsq(G, v, rcond=None)[0]
    expected = max(np.sum((v - fit) ** 2) / (p * p - G.shape[1]), stego.MIPOD_FLOOR)
    assert var[20, 20] == pytest.approx(expected, rel=1e-3)
    assert (var >= stego.MIPOD_FLOOR).all()


def test_lattices_partition_the_image_green_first():
    masks = stego.lattice_masks((3, 6, 8))
    assert len(masks) == 12
    total = torch.stack(masks).sum(0)
    assert torch.equal(total, torch.ones(3, 6, 8, dtype=total.dtype))
    channels = [int(m.any(2).any(1).nonzero()[0]) for m in masks]
    assert channels == [1] * 4 + [0] * 4 + [2] * 4


def test_neighbour_mean_counts_spatial_and_colour_neighbours():
    k = torch.zeros(1, 3, 3, 3)
    k[0, 1, 0, 1] = 2.0   # green, above the centre
    k[0, 1, 1, 0] = -1.0  # green, left of the centre
    k[0, 0, 1, 1] = 3.0   # red, co-located with the centre
    done = torch.zeros(3, 3, 3, dtype=torch.bool)
    done[1] = True        # all of green is done
    mu = stego.neighbour_mean(k, done)
    # centre of green: its 4 green neighbours are done (2, -1, 0, 0); red is not done
    assert mu[0, 1, 1, 1].item() == pytest.approx(0.25)
    # centre of red: only the co-located green pixel (0) is done
    assert mu[0, 0, 1, 1].item() == 0.0
    done[0] = True
    mu = stego.neighbour_mean(k, done)
    # centre of blue: co-located red 3 and green 0
    assert mu[0, 2, 1, 1].item() == pytest.approx(1.5)


def test_gina_costs_discount_changes_that_agree_with_the_neighbours():
    weight = torch.full((1, 3, 1, 2), 2.0)
    mu = torch.tensor([0.5, -0.5]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    costs = stego.gina_costs(weight, mu)
    plus = costs(torch.ones(1, 3, 1, 2))
    assert plus[0, 0, 0].tolist() == pytest.approx([2 / 9, 2.0])
    assert costs(torch.zeros(1, 3, 1, 2)).abs().sum() == 0
    no_mu = stego.gina_costs(weight, torch.zeros_like(mu))
    assert torch.equal(no_mu(-torch.ones(1, 3, 1, 2)), weight)


def test_gina_visits_all_twelve_lattices_in_order(multiclass_problem, monkeypatch):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    seen = []
    original = stego._lattice_search

    def spy(oracle, x0, k, grad, low, high, mask, *args):
        seen.append(mask.clone())
        return original(oracle, x0, k, grad, low, high, mask, *args)
    monkeypatch.setattr(stego, "_lattice_search", spy)
    out = stego.quantize_gina(model, x, res.x_adv, y, df=1, steps=8, rounds=1)
    assert len(seen) == 12
    for got, expected in zip(seen, stego.lattice_masks(tuple(x.shape))):
        assert torch.equal(got, expected)
    # every lattice carries changes: the loss is spread over the 12 of them
    fooled = out.success & (model(x).argmax(1) == y)
    assert fooled.sum() >= 4
    k = out.pixels.float() - x
    for mask in seen:
        assert (k[fooled][:, mask] != 0).any()


@pytest.mark.parametrize("name", ["hill", "mipod", "gina"])
@pytest.mark.parametrize("df", [1, 3])
def test_stego_quantizers_keep_the_attack_adversarial(multiclass_problem, name, df):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=40)
    out = Q.run(name, model, x, res.x_adv, y, df=df, steps=10)
    assert out.pixels.dtype == torch.uint8
    assert torch.equal(out.success, model(out.pixels.float()).argmax(1) != y)
    assert out.success[res.success].all()
    low, high = admissible_bounds(res.x_adv - x, df)
    k = out.pixels.float() - x
    ok = res.success & (model(x).argmax(1) == y)
    assert ((k >= low) & (k <= high))[ok].all()
    assert int(out.gradients.max()) == 1


def test_gina_costs_more_l2_than_the_chapter7_quantizer(multiclass_problem):
    """Spreading the loss over 12 lattices with stego costs moves more pixels (Table 8.3's trend)."""
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=40)
    smart = Q.run("smart", model, x, res.x_adv, y, df=1, steps=18)
    gina = Q.run("gina", model, x, res.x_adv, y, df=1, steps=10)
    both = smart.success & gina.success
    assert both.sum() >= 4
    l2 = lambda q: (q.pixels.float() - x).flatten(1).norm(dim=1)[both].mean()  # noqa: E731
    assert l2(gina) > l2(smart)


def test_registered_and_described():
    for name in ("hill", "mipod", "gina"):
        spec = Q.spec(name)
        assert spec.suffix == ".png" and spec.gradients == 1
    assert math.isclose(stego.GINA_DISCOUNT, 9.0)
