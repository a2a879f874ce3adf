"""The lattice-aware quantizer (``lattice``): the integer cost it walks in, BP's step it reuses, and
verified files within its budget."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from advimage.attacks import get
from advimage.boundary_walk import boundary_step
from advimage.distortion import distortion
from advimage.quantize import quantize_lattice, quantize_scaled, spec
from advimage.quantize.lattice import (
    _proximal_step,
    envelope_prox,
    integer_cost,
    integer_walk,
    lattice_walk,
    proximal_walk,
)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-6, 6)))
def test_integer_cost_is_the_interpolation_of_the_integer_squares(t):
    levels = np.arange(0, 8)
    expected = np.interp(np.abs(t), levels, levels ** 2).sum()  # linear interpolation of k² at the integers
    got = float(integer_cost(torch.from_numpy(t)[None])[0])
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    k = np.round(t)
    assert float(integer_cost(torch.from_numpy(k)[None])[0]) == pytest.approx((k ** 2).sum())
    assert got >= (t ** 2).sum() - 1e-9  # chords of a convex function lie above it

@settings(max_examples=60, deadline=None)
@given(st.floats(-4.5, 4.5), st.floats(0.01, 0.6))
def test_envelope_prox_is_the_minimizer_on_a_fine_grid(v, tau):
    """prox of τ f against brute force: min over b on a 1e-4 grid of ½(b - v)² + τ f(b)."""
    b = np.arange(-6, 6, 1e-4)
    levels = np.arange(0, 8)
    objective = 0.5 * (b - v) ** 2 + tau * np.interp(np.abs(b), levels, levels ** 2)
    got = float(envelope_prox(torch.tensor([[v]], dtype=torch.float64), tau)[0, 0])
    assert got == pytest.approx(b[objective.argmin()], abs=2e-4)


def test_envelope_prox_snaps_to_the_lattice_by_hand():
    v = torch.tensor([[0.05, -0.3, 1.05, 1.15, 1.25, 1.5, 2.4]])
    # τ = 0.1: |v| <= 0.1 -> 0; (0.1, 1.1) -> |v| - 0.1; [1.1, 1.3] -> 1; (1.3, 2.3) -> |v| - 0.3; [2.3, 2.5] -> 2
    expected = torch.tensor([[0.0, -0.2, 0.95, 1.0, 1.0, 1.2, 2.0]])
    assert torch.allclose(envelope_prox(v, 0.1), expected, atol=1e-6)
    per_image = envelope_prox(torch.tensor([[0.5], [0.5]]), torch.tensor([0.1, 0.6]))
    assert torch.allclose(per_image, torch.tensor([[0.4], [0.0]]))


def test_proximal_step_against_brute_force_in_two_dimensions():
    """min ½||δ' - δ||² + τ Σ f(δ') s.t. L + gᵀ(δ' - δ) <= -κ, on a 0.002 grid of the plane."""
    x0 = torch.full((1, 2), 100.0)
    cases = [((0.3, 0.2), (1.0, 0.5), 0.4, 0.1, 0.2),  # constraint active: μ > 0
             ((1.2, -0.4), (0.2, -1.0), -2.0, 0.2, 0.1),  # far inside: the prox alone
             ((0.0, 0.0), (-1.0, 3.0), 0.5, 0.05, 0.3)]
    grid = np.arange(-3, 3, 0.002)
    b1, b2 = np.meshgrid(grid, grid, indexing="ij")
    levels = np.arange(0, 8)
    f = lambda t: np.interp(np.abs(t), levels, levels ** 2)  # noqa: E731
    for delta, grad, loss, tau, kappa in cases:
        d, g = np.array(delta), np.array(grad)
        objective = 0.5 * ((b1 - d[0]) ** 2 + (b2 - d[1]) ** 2) + tau * (f(b1) + f(b2))
        feasible = loss + g[0] * (b1 - d[0]) + g[1] * (b2 - d[1]) <= -kappa
        i = np.where(feasible, objective, np.inf).argmin()
        expected = np.array([b1.flat[i], b2.flat[i]])
        got = _proximal_step(x0, torch.tensor([delta]), torch.tensor([grad]), torch.tensor([loss]), tau,
                             torch.tensor([kappa]), bisections=50)
        assert np.allclose(got[0].numpy(), expected, atol=5e-3), (delta, got, expected)


def test_boundary_step_by_hand():
    """Origin 0, normal e1. Adversarial (1, 1), γ = 0.8: stays on the tangent plane r = 1 at norm 0.8√2,
    i.e. (1, √0.28). Not adversarial (0, 1), γ = 0.5: moves along -e1 to the sphere of radius 2."""
    ghat = torch.tensor([[1.0, 0.0]])
    origin = torch.zeros(1, 2)
    out = boundary_step(torch.tensor([[1.0, 1.0]]), origin, ghat, torch.tensor([True]), 0.8)
    assert torch.allclose(out, torch.tensor([[1.0, math.sqrt(0.28)]]), atol=1e-6)
    inside = boundary_step(torch.tensor([[0.0, 1.0]]), origin, ghat, torch.tensor([False]), 0.5)
    assert torch.allclose(inside, torch.tensor([[-math.sqrt(3.0), 1.0]]), atol=1e-6)
    # hyperplane farther than γ||δ||: shrink along the normal, (2, 0.1) -> 0.5 * ||δ|| * e1
    far = boundary_step(torch.tensor([[2.0, 0.1]]), origin, ghat, torch.tensor([True]), 0.5)
    assert torch.allclose(far, torch.tensor([[0.5 * math.hypot(2.0, 0.1), 0.0]]), atol=1e-6)


def _integer_optimum(w: torch.Tensor, margin: float, x0: torch.Tensor) -> float:
    """min Σ k² over integer k with w·k >= margin, within [0, 255]: greedy on gain per marginal cost
    |w_i| / (2|k_i| + 1) (exact for the LP relaxation; the integer optimum is at most one step less)."""
    w, x0 = w.double().flatten(), x0.double().flatten()
    k = torch.zeros_like(w)
    gain = 0.0
    while gain < margin:
        up = torch.where(torch.sign(w) >= 0, x0 + k < 255, x0 + k > 0) & (w != 0)
        eff = torch.where(up, w.abs() / (2 * k.abs() + 1), torch.zeros_like(w))
        i = int(eff.argmax())
        k[i] += torch.sign(w[i])
        gain += float(w[i].abs())
    return float(k.pow(2).sum())


def _binary_linear_case(seed: int):
    """A binary linear model just right of its boundary at x0, BP's floats, and the integer optimum."""
    from conftest import BinaryLinear

    model = BinaryLinear()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(60, 196, (1, 3, 8, 8), generator=g).float()
    model.b.data = (-(x0.flatten(1) @ model.w) + 0.3 + 0.5 * float(torch.rand(1, generator=g)))[0]
    y = model(x0).argmax(1)
    res = get("bp")(model, x0, y, steps=40)
    logit_margin = float(model(x0)[0, y] - model(x0)[0, 1 - y])
    w_margin = (model.w if y.item() == 1 else -model.w).view_as(x0)  # d(margin)/dx, so k must go along -w_margin
    return model, x0, y, res, _integer_optimum(-w_margin, logit_margin, x0)


@pytest.mark.parametrize("walks", [None, (("prox", 30),), (("int", 30),)])
def test_lattice_reaches_the_integer_optimum_of_a_binary_linear_model(walks):
    """Binary linear model: the cheapest adversarial file is known (greedy, above). The lattice files
    (any walk) cost at most one ±1 change more than it, and never more than scaled rounding of the
    same floats."""
    for seed in range(6):
        model, x0, y, res, optimum = _binary_linear_case(seed)
        q = quantize_lattice(model, x0, res.x_adv, y, walks=walks)
        s = quantize_scaled(model, x0, res.x_adv, y)
        assert q.success.all() and model(q.pixels.float()).argmax(1).item() != y.item()
        cost = float((q.pixels.float() - x0).pow(2).sum())
        assert optimum <= cost <= optimum + 1
        assert cost <= float((s.pixels.float() - x0).pow(2).sum())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["irls", "prox", "int"]), st.integers(1, 12), st.integers(5, 40))
def test_lattice_never_costs_more_than_scaled_rounding_of_the_same_floats(seed, walk, walk_steps, bp_steps):
    """The guarantee of :func:`quantize_lattice`, on any machine: its file is adversarial wherever
    scaled rounding of the attack's floats is, and its integer cost Σ k² is never higher, for any walk
    and budget (a short or unlucky walk can end on a costlier file: then the plain one is kept)."""
    model, x0, y, _, _ = _binary_linear_case(seed % 50)
    res = get("bp")(model, x0, y, steps=bp_steps)
    q = quantize_lattice(model, x0, res.x_adv, y, walks=((walk, walk_steps),))
    s = quantize_scaled(model, x0, res.x_adv, y)
    assert (q.success | ~s.success).all()
    assert ((model(q.pixels.float()).argmax(1) != y) == q.success).all()
    cost_q = (q.pixels.float() - x0).pow(2).flatten(1).sum(1)
    cost_s = (s.pixels.float() - x0).pow(2).flatten(1).sum(1)
    assert (cost_q[s.success] <= cost_s[s.success]).all()


@pytest.mark.parametrize("name, walk_checks, gradients",
                         [("lattice", 1, 31), ("lattice-prox", 2, 46), ("lattice-int", 1, 50)])
def test_lattice_files_are_adversarial_and_the_budget_is_counted(multiclass_problem, name, walk_checks, gradients):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    q = spec(name).run(model, x, res.x_adv, y)
    assert q.pixels.dtype == torch.uint8 and q.suffix == ".png"
    ok = q.success
    assert ok.all()
    assert ((model(q.pixels.float()).argmax(1) != y) == ok).all()
    assert spec(name).gradients == gradients  # the walks' steps and one pruning round
    assert (q.gradients == spec(name).gradients).all()
    assert (q.forwards <= walk_checks + 10 + 10 + 8).all()


@pytest.mark.parametrize("walk, sensitivity", [(lattice_walk, 1), (proximal_walk, 300)])
def test_walks_lower_the_integer_cost_on_a_cnn(tiny_model, walk, sensitivity):
    """On a non-linear model both walks keep adversarial floats of lower Σ f(δ) than BP's. ×300 on the
    first layer makes the model pixel-sensitive (d ≈ 3 instead of ≈ 90), where entries of δ are of
    the order of the prox's τ."""
    tiny_model.net[0].weight.data *= sensitivity
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=g).float()
    y = tiny_model(x).argmax(1)
    res = get("bp")(tiny_model, x, y, steps=40)
    walked, oracle = walk(tiny_model, x, res.x_adv, y, steps=20)
    ok = res.success
    assert (tiny_model(walked).argmax(1)[ok] != y[ok]).all()
    assert (integer_cost(walked - x)[ok] <= integer_cost(res.x_adv - x)[ok]).all()
    assert (integer_cost(walked - x)[ok] < integer_cost(res.x_adv - x)[ok]).float().mean() >= 0.5
    assert (oracle.gradients == 20).all()


def test_integer_walk_keeps_verified_integral_files_cheaper_than_scaled_rounding(tiny_model):
    """The integer walk's output, where it found one, is an integral image that fools the model (its
    success was taken there, not at a float); on a pixel-sensitive CNN these files cost less in total
    than scaled rounding of the same floats (measured 0.97-0.98)."""
    tiny_model.net[0].weight.data *= 300
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (8, 3, 32, 32), generator=g).float()
        y = tiny_model(x).argmax(1)
        res = get("bp")(tiny_model, x, y, steps=40)
        walked, oracle = integer_walk(tiny_model, x, res.x_adv, y, steps=20)
        found = (walked != res.x_adv).flatten(1).any(1)
        assert found.sum() >= 6
        assert torch.equal(walked[found], walked[found].round())
        assert (tiny_model(walked[found]).argmax(1) != y[found]).all()
        assert (oracle.gradients == 20).all() and (oracle.forwards == 1).all()
        s = quantize_scaled(tiny_model, x, res.x_adv, y)
        both = found & s.success
        assert distortion(walked[both], x[both]).sum() < 0.99 * s.distortion[both].sum()


def test_floats_that_never_fool_fall_back_and_errors(multiclass_problem):
    model, x, y = multiclass_problem
    q = quantize_lattice(model, x, x, y, walk_steps=3)  # u = 0: no file fools, reported as failures
    assert not q.success.any()
    with pytest.raises(ValueError, match="differ in shape"):
        quantize_lattice(model, x, x[:, :, :8], y)
    with pytest.raises(ValueError, match="steps"):
        lattice_walk(model, x, x, y, steps=0)
    with pytest.raises(ValueError, match="unknown walk"):
        quantize_lattice(model, x, x, y, walks=(("newton", 3),))
    with pytest.raises(ValueError, match="tau"):
        proximal_walk(model, x, x, y, tau=0.0)


def test_chained_walks_count_their_gradients(multiclass_problem):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    q = quantize_lattice(model, x, res.x_adv, y, walks=(("irls", 4), ("prox", 3)), prune_rounds_=0)
    assert q.success.all()
    assert (q.gradients == 7).all()
    assert (q.forwards <= 2 + 10 + 10).all()  # one check per walk, the scale search, its fallback


def test_lattice_files_cost_less_than_scaled_on_a_cnn(tiny_model):
    """The point of the walk: on a non-linear model its files cost less than scaled rounding of the
    same floats (in total over the images; the walk's floats are sparse, so the scale search must start
    near s = 1, not at a quantile of |u| that falls among the near-zero entries)."""
    tiny_model.net[0].weight.data *= 300  # pixel-sensitive: BP needs d ≈ 3, not ≈ 90 (saturated pixels)
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (8, 3, 32, 32), generator=g).float()
        y = tiny_model(x).argmax(1)
        res = get("bp")(tiny_model, x, y, steps=40)
        q = quantize_lattice(tiny_model, x, res.x_adv, y)
        s = quantize_scaled(tiny_model, x, res.x_adv, y)
        both = q.success & s.success
        assert both.sum() >= 6
        # measured 0.96-0.97; rounding the walked floats from start_scale's first trial gives 0.99-1.00
        assert q.distortion[both].sum() < 0.985 * s.distortion[both].sum()


def test_scale_search_starts_where_told(multiclass_problem):
    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    q = quantize_scaled(model, x, res.x_adv, y, steps=2, start=torch.full((len(x),), 3.0))
    # one forward checks x0, the only other trial is the start: s = 3 where it fooled the model
    assert torch.equal(q.lam[q.success], torch.full((int(q.success.sum()),), 3.0))


def test_auto_default_resolves_by_attack_and_budget():
    from advimage.engine import Settings

    assert Settings().quantizers == ("lattice-int",)  # bp, 100 gradients: the attack keeps 50
    assert Settings(steps=99).quantizers == ("lattice",)  # lattice-int would leave the attack fewer than its 50
    assert Settings(steps=61).quantizers == ("scaled",)  # the attack would keep fewer gradients than any walk
    assert Settings(steps=62).quantizers == ("lattice",)
    assert Settings(attack="surfree", steps=5000).quantizers == ("scaled",)  # black box: no gradient
    assert Settings(quantizers=("smart", "auto"), steps=80).quantizers == ("smart", "lattice")
    assert Settings(steps=100).attack_steps == 100 - spec("lattice-int").gradients == 50
    assert Settings(steps=80).attack_steps == 80 - spec("lattice").gradients


def test_the_walk_studys_linearized_optimum_is_exact_on_a_linear_model():
    """studies/lattice_walks.py's ``linear-opt``: on a linear model the linearization is the
    model, so its file fools it at the greedy integer optimum's cost (computed independently above)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
    from lattice_walks import linear_optimum

    for seed in range(4):
        model, x0, y, res, optimum = _binary_linear_case(seed)
        q = linear_optimum(model, x0, res.x_adv, y)
        assert q.success.all()
        assert float((q.pixels.float() - x0).pow(2).sum()) == pytest.approx(optimum, abs=1)


def test_the_walk_studys_integer_iterates_give_verified_files(multiclass_problem):
    """studies/lattice_walks.py's ``bp-int``: every file it reports adversarial is an
    integral image the model misclassifies, within its gradient count."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
    from lattice_walks import integer_iterates

    model, x, y = multiclass_problem
    res = get("bp")(model, x, y, steps=30)
    q = integer_iterates(model, x, res.x_adv, y, steps=12)
    assert q.success.all()
    pixels = q.pixels.float()
    assert ((model(pixels).argmax(1) != y) == q.success).all()
    expected = (pixels - x.round()).flatten(1).norm(dim=1) / math.sqrt(x[0].numel())
    assert torch.allclose(q.distortion, expected, rtol=1e-5)
    assert (q.gradients == 12).all()
