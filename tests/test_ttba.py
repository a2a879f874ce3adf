"""TtBA on tiny models: budget, integer adversarials, the closed-form optimum, seeds, bad parameters.

Two linear 2-class models with a closed-form optimum d* (eq. 6.2 units): conftest's
``BinaryLinear`` (8x8, random high-frequency weights, d* from 0.27 to 1.96) and SurFree's
``Linear2`` (16x16, a smooth low-frequency hyperplane, d* about 8).
"""

from __future__ import annotations

import pytest
import torch

from advimage.attacks import names, registry
from advimage.attacks.ttba import bridge_weight, default_dim_reduction, ttba
from advimage.criteria import Margin, Misclassification
from test_surfree import Linear2, check_valid, make_data

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def smooth():
    model = Linear2()
    x, y = make_data(model)
    return model, x, y


def check_result(model, x, y, res, budget: int) -> None:
    """Within budget, integer-valued in [0, 255], adversarial wherever success is reported."""
    assert res.queries.dtype == torch.long and res.queries.shape == (x.shape[0],)
    assert int(res.queries.max()) <= budget
    assert torch.equal(res.x_adv, res.x_adv.round())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 255
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    assert bool((res.distortion[~res.success] == 0).all())


def test_registered():
    s = registry.spec("ttba")
    assert "ttba" in names()
    assert s.run is ttba and s.black_box and s.budget == "queries" and s.seeded and s.labels_only
    assert s.defaults["ratio"] == pytest.approx(2 / 3) and s.defaults["initial_queries"] == 30
    assert s.defaults["bridge_tol"] == 1e-3 and s.defaults["dim_reduction"] is None
    assert "TtBA" in s.reference


def test_listed_by_the_cli(capsys):
    from advimage.cli import main

    assert main(["attacks"]) == 0
    assert "ttba" in capsys.readouterr().out


def test_bridge_weight_two_thirds():
    k = torch.tensor([0.0, 0.05, 0.1, 0.15, 0.2, 0.6, 0.999])
    w = bridge_weight(k)
    assert torch.allclose(w[[0, 1, 2]], 0.9 * k[[0, 1, 2]])           # small k_bridge: 0.9 k
    assert torch.allclose(w[[4, 5, 6]], (2 / 3) * k[[4, 5, 6]])       # the two-third rule
    assert float(w[2]) < float(w[3]) < float(w[4])                   # linear, continuous in between
    assert bridge_weight(torch.tensor([0.6]), ratio=0.5).item() == pytest.approx(0.3)
    assert default_dim_reduction(224) == 4 and default_dim_reduction(32) == 1


@pytest.mark.parametrize("budget", [1, 2, 7, 40, 300])
def test_budget_and_integer_on_the_linear_problem(linear_problem, budget):
    model, x, y = linear_problem
    res = ttba(model, x, y, steps=budget, seed=0)
    check_result(model, x, y, res, budget)
    assert res.queries.tolist() == [budget] * x.shape[0]  # every row uses its budget, never more
    if budget >= 40:
        assert bool(res.success.all())


def test_multiclass_batched_forwards(multiclass_problem):
    model, x, y = multiclass_problem
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, inp: calls.append(int(inp[0].shape[0])))
    try:
        res = ttba(model, x, y, steps=250, seed=0)
    finally:
        hook.remove()
    check_result(model, x, y, res, 250)
    assert bool(res.success.all())
    assert len(calls) <= 250 and max(calls) <= x.shape[0]  # one query per image per forward


def test_tiny_model_that_never_flips(tiny_model):
    # this random CNN predicts one class for every random image: no start is found, the attack
    # gives up after init_attempts queries and returns the originals
    x = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0)).float()
    y = tiny_model(x).argmax(1)
    res = ttba(tiny_model, x, y, steps=500, seed=0, init_attempts=30)
    check_result(tiny_model, x, y, res, 500)
    assert not bool(res.success.any()) and torch.equal(res.x_adv, x)
    assert res.queries.tolist() == [31] * 3  # the original, then 30 failed starts


def test_approaches_the_optimum_on_binary_linear(linear_problem):
    """Measured (seeds 0-4, default f = 1 on 8x8): mean ratio to d* 1.77-1.80 at 300 queries and
    1.33-1.37 at 1000, worst image 1.53-1.72 (the smallest d* = 0.27, a quarter of a pixel quantum
    RMS). Bounds: 1000 queries, mean <= 1.45 and every image <= 1.8. They can fail: with k = k_bridge
    (ratio 1) the mean at 1000 is 2.02, and CGBA (f = 4, a low-frequency normal that misses these
    weights) stays at 2.9."""
    model, x, y = linear_problem
    dstar = model.optimal_distortion(x)
    ratios = []
    for budget in (300, 1000):
        res = ttba(model, x, y, steps=budget, seed=0)
        assert bool(res.success.all())
        ratios.append(res.distortion / dstar)
    assert float(ratios[0].mean()) > float(ratios[1].mean())
    assert bool((ratios[1] >= 0.999).all()), "cannot beat the closed-form optimum"
    assert float(ratios[1].mean()) <= 1.45, ratios[1]
    assert float(ratios[1].max()) <= 1.8, ratios[1]
    with_k_bridge = ttba(model, x, y, steps=1000, seed=0, ratio=1.0).distortion / dstar
    assert float(with_k_bridge.mean()) > float(ratios[1].mean())  # the two-third rule helps here


def test_approaches_the_optimum_on_a_smooth_hyperplane(smooth):
    """Linear2, f = 4 (its normal lies in the low-frequency block): measured worst image 1.24-1.31x
    d* at 300 queries and 1.08-1.11x at 1000 (seeds 0-2). Bounds 1.4 and 1.15."""
    model, x, y = smooth
    dstar = model.optimum(x)
    r300 = ttba(model, x, y, steps=300, seed=0, dim_reduction=4).distortion / dstar
    r1000 = ttba(model, x, y, steps=1000, seed=0, dim_reduction=4).distortion / dstar
    assert bool((r1000 >= 0.999).all())
    assert float(r300.max()) <= 1.4 and float(r1000.max()) <= 1.15, (r300, r1000)


def test_deterministic(linear_problem):
    model, x, y = linear_problem
    a = ttba(model, x, y, steps=150, seed=3)
    b = ttba(model, x, y, steps=150, seed=3)
    c = ttba(model, x, y, steps=150, seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_batched_equals_per_image(smooth):
    model, x, y = smooth
    whole = ttba(model, x, y, steps=200, seed=1)
    chunks = ttba(model, x, y, steps=200, seed=1, batch_size=3)
    assert torch.equal(whole.x_adv, chunks.x_adv) and torch.equal(whole.queries, chunks.queries)
    one = ttba(model, x[5:6], y[5:6], steps=200, seed=1)
    assert torch.equal(one.x_adv[0], whole.x_adv[5])


def test_sync_free_path_gives_the_same_result(smooth, monkeypatch):
    """The GPU code path (every row's state updated every round, no host sync) on CPU."""
    import advimage.attacks.cgba as cg

    model, x, y = smooth
    ref = ttba(model, x, y, steps=250, seed=0)
    monkeypatch.setattr(cg, "SYNC_FREE", True)
    res = ttba(model, x, y, steps=250, seed=0)
    check_valid(model, x, y, res, 250)
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.queries, ref.queries)


def test_misclassified_inputs(smooth):
    model, x, y = smooth
    y2 = y.clone()
    y2[:3] = 1 - y2[:3]  # these originals are already "adversarial"
    res = ttba(model, x, y2, steps=100, seed=0)
    assert bool(res.success.all())
    assert torch.equal(res.x_adv[:3], x[:3]) and torch.equal(res.distortion[:3], torch.zeros(3))
    assert res.queries[:3].tolist() == [1, 1, 1] and res.queries[3:].tolist() == [100] * 5


def test_targeted_from_x_init(multiclass_problem):
    # the authors' targeted start: an image of the target class
    model, x, y = multiclass_problem
    target = y.roll(1)
    start = x.roll(1, 0)
    assert bool((model(start).argmax(1) == target).all()) and bool((target != y).all())
    res = ttba(model, x, target, steps=400, targeted=True, seed=0, x_init=start)
    assert res.success.all() and bool((model(res.x_adv).argmax(1) == target).all())
    assert int(res.queries.max()) <= 400 and torch.equal(res.x_adv, res.x_adv.round())
    assert bool((res.distortion < (start - x).flatten(1).norm(dim=1) / x[0].numel() ** 0.5).all())


def test_bad_parameters(smooth):
    model, x, y = smooth
    with pytest.raises(ValueError, match="shape"):
        ttba(model, x[0], y, steps=10)
    with pytest.raises(TypeError, match="float"):
        ttba(model, x.to(torch.uint8), y, steps=10)
    with pytest.raises(ValueError, match="steps"):
        ttba(model, x, y, steps=0)
    for bad in (0, 2.5, -1):
        with pytest.raises(ValueError, match="dim_reduction"):
            ttba(model, x, y, steps=10, dim_reduction=bad)
    for bad in (dict(initial_queries=0), dict(bs_steps=0), dict(init_attempts=0)):
        with pytest.raises(ValueError, match=">= 1"):
            ttba(model, x, y, steps=10, **bad)
    for bad in (dict(sigma=0.0), dict(sigma=float("nan")), dict(tol=-1.0), dict(tol=float("inf"))):
        with pytest.raises(ValueError, match="sigma and tol"):
            ttba(model, x, y, steps=10, **bad)
    for bad in (0.0, 0.5, float("nan")):
        with pytest.raises(ValueError, match="bridge_tol"):
            ttba(model, x, y, steps=10, bridge_tol=bad)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            ttba(model, x, y, steps=10, ratio=bad)
    with pytest.raises(ValueError, match="x_init"):
        ttba(model, x, y, steps=10, x_init=x[:2])
    with pytest.raises(ValueError, match="batch_size"):
        ttba(model, x, y, steps=10, batch_size=0)
    with pytest.raises(TypeError, match="label criterion"):
        ttba(model, x, Margin(Misclassification(y), 1.0), steps=10)
    with pytest.raises(TypeError, match="no parameter"):
        registry.spec("ttba").settings(max_scan=40)
