"""CGBA and CGBA-H on the tiny linear model of the SurFree tests, whose optimum is known in closed form.

For a 2-class linear model with logits (z, -z), z = w·(x - 128), the smallest L2 perturbation
reaching the boundary is |z| / ||w||, i.e. d* = |z| / (||w|| sqrt(n)) in eq. (6.2) units.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advimage.attacks import registry
from advimage.attacks.cgba import _CGBA, cgba, cgba_h, image_seeds
from advimage.attacks.surfree import dct_matrix
from advimage.criteria import Margin, Misclassification
from test_surfree import SHAPE, Linear2, check_valid, make_data

torch.set_num_threads(1)

ATTACKS = [cgba, cgba_h]
IDS = ["cgba", "cgba_h"]


@pytest.fixture(scope="module")
def setup():
    model = Linear2()
    x, y = make_data(model)
    return model, x, y


def test_registered():
    for name, fn in zip(IDS, ATTACKS):
        s = registry.spec(name)
        assert s.run is fn and s.black_box and s.budget == "queries" and s.seeded and s.labels_only
        assert {"sigma", "tol", "dim_reduction", "initial_queries", "bs_steps", "max_scan"} <= set(s.defaults)
        assert "CGBA" in s.reference
    assert registry.spec("cgba_h").reference.startswith("CGBA-H")


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_success_budget_integer(setup, attack):
    model, x, y = setup
    model.calls.clear()
    res = attack(model, x, y, steps=300, seed=0)
    check_valid(model, x, y, res, 300)
    assert bool(res.success.all())
    assert res.queries.tolist() == [300] * x.shape[0]  # every row uses its budget, never more
    # one batched forward per round: at most `steps` calls, never more rows than images
    calls = model.calls[:-1]  # the last call is check_valid's
    assert len(calls) <= 300 and max(calls) <= x.shape[0]


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
@pytest.mark.parametrize("budget", [1, 2, 5, 13, 50, 77])
def test_small_budgets(setup, attack, budget):
    model, x, y = setup
    res = attack(model, x, y, steps=budget, seed=0)
    check_valid(model, x, y, res, budget)
    assert res.queries.tolist() == [budget] * x.shape[0]
    if budget >= 13:
        assert bool(res.success.all())


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_approaches_the_optimum(setup, attack):
    model, x, y = setup
    dstar = model.optimum(x)
    ratios = []
    for budget in (100, 300, 1000):
        res = attack(model, x, y, steps=budget, seed=0)
        assert bool(res.success.all())
        ratios.append(res.distortion / dstar)
    means = [float(r.mean()) for r in ratios]
    assert means[0] > means[1] > means[2], means
    assert bool((ratios[-1] >= 0.999).all()), "cannot beat the closed-form optimum"
    # a few hundred queries: within 35% of the optimum; 1000 queries: within 10% on every image
    assert float(ratios[1].max()) <= 1.35, ratios[1]
    assert float(ratios[2].max()) <= 1.10, ratios[2]


def test_beats_surfree_on_a_flat_boundary(setup):
    # the normal is all CGBA needs on a hyperplane; SurFree's random directions are slower
    from advimage.attacks.surfree import surfree

    model, x, y = setup
    a = cgba(model, x, y, steps=500, seed=0).distortion
    b = surfree(model, x, y, steps=500, seed=0).distortion
    assert bool((a < b).all())


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_deterministic(setup, attack):
    model, x, y = setup
    a = attack(model, x, y, steps=150, seed=3)
    b = attack(model, x, y, steps=150, seed=3)
    c = attack(model, x, y, steps=150, seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_batched_equals_per_image(setup, attack):
    """Per-image generators: an image's attack does not depend on its batch (on this batch-
    independent model, whose noise starts all succeed before the batch-original fallback)."""
    model, x, y = setup
    whole = attack(model, x, y, steps=200, seed=1)
    chunks = attack(model, x, y, steps=200, seed=1, batch_size=3)
    assert torch.equal(whole.x_adv, chunks.x_adv) and torch.equal(whole.queries, chunks.queries)
    perm = torch.tensor([5, 2, 7, 0])
    part = attack(model, x[perm], y[perm], steps=200, seed=1)
    assert torch.equal(part.x_adv, whole.x_adv[perm])
    for i in (1, 6):
        one = attack(model, x[i:i + 1], y[i:i + 1], steps=200, seed=1)
        assert torch.equal(one.x_adv[0], whole.x_adv[i])


def test_image_seeds():
    x = torch.rand(3, *SHAPE) * 255
    s = image_seeds(x, 0)
    assert len(set(s)) == 3 and image_seeds(x[[2, 0]], 0) == [s[2], s[0]]
    assert image_seeds(x, 1) != s and all(0 <= v < 2 ** 63 for v in s)


def test_chunked_batches_forward_size(setup):
    model, x, y = setup
    model.calls.clear()
    res = cgba(model, x, y, steps=120, seed=0, batch_size=3)
    assert max(model.calls) <= 3
    check_valid(model, x, y, res, 120)


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_misclassified_inputs(setup, attack):
    model, x, y = setup
    y2 = y.clone()
    y2[:3] = 1 - y2[:3]  # these originals are already "adversarial"
    res = attack(model, x, y2, steps=100, seed=0)
    assert bool(res.success.all())
    assert torch.equal(res.x_adv[:3], x[:3])
    assert torch.equal(res.distortion[:3], torch.zeros(3))
    assert res.queries[:3].tolist() == [1, 1, 1]
    assert res.queries[3:].tolist() == [100] * 5


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_targeted_far_from_the_boundary(attack):
    # far from the boundary: noise around x_o never crosses it, random images half of the time
    model = Linear2()
    x, y = make_data(model, n=6, d_target=25.0)
    target = 1 - y
    res = attack(model, x, target, steps=400, targeted=True, seed=0)
    assert bool(res.success.all())
    assert bool((model(res.x_adv).argmax(1) == target).all())
    assert bool((res.distortion < 1.3 * model.optimum(x)).all())


class Bright(nn.Module):
    """Class 1 iff the mean pixel exceeds 200: the optimum from mean m < 200 is a uniform shift,
    d* = 200 - m (no clipping); noise around a dark image or a random image never gets there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1).mean(1) - 200.0
        return torch.stack([-z, z], 1)


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_start_from_a_batch_original(attack):
    g = torch.Generator().manual_seed(0)
    base = torch.randint(-20, 21, (4, *SHAPE), generator=g).float()
    x = (base + torch.tensor([170.0, 230.0, 175.0, 235.0]).view(4, 1, 1, 1)).clamp(0, 255)
    model = Bright()
    y = model(x).argmax(1)
    assert y.tolist() == [0, 1, 0, 1]
    dstar = 200.0 - x[[0, 2]].flatten(1).mean(1)
    res = attack(model, x, y, steps=300, seed=0)
    assert bool(res.success.all())
    ratio = res.distortion[[0, 2]] / dstar  # the dark ones started from a bright original
    assert bool((ratio >= 0.999).all()) and bool((ratio <= 1.1).all()), ratio
    alone = attack(model, x[:1], y[:1], steps=300, seed=0, init_attempts=20)  # no bright original
    assert not bool(alone.success.any()) and alone.queries.tolist() == [21]


def test_x_init_is_the_first_start(setup):
    model, x, y = setup
    start = x.flip(0)  # images 7..0: the opposite class at every position
    model.calls.clear()
    res = cgba(model, x, y, steps=2, seed=0, x_init=start)  # the original, then x_init
    assert bool(res.success.all()) and torch.equal(res.x_adv, start)


def test_failed_init():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(x.shape[0]), torch.zeros(x.shape[0])], 1)

    x = torch.full((2, *SHAPE), 100.0)
    y = torch.zeros(2, dtype=torch.long)
    for attack in ATTACKS:
        res = attack(Constant(), x, y, steps=500, seed=0, init_attempts=20)
        assert not bool(res.success.any())
        assert torch.equal(res.x_adv, x) and torch.equal(res.distortion, torch.zeros(2))
        assert res.queries.tolist() == [21, 21]  # 1 (original) + 20 failed starts, then gave up


def test_directions_in_the_low_frequency_block(setup):
    model, x, y = setup
    run = _CGBA(model, x[:3], y[:3], 10, False, image_seeds(x[:3], 0), "cgba", 4, 30, 1.0, 0.002, 20, 40, 100, None)
    run.rows = [0, 1, 2]
    u = run._directions()
    assert u.shape == (3, math.prod(SHAPE))
    assert torch.allclose(u.norm(dim=1), torch.ones(3), atol=1e-5)
    c = dct_matrix(16)
    coeff = c @ u.view(3, *SHAPE) @ c.T  # forward 2-D DCT
    inside = coeff[..., :4, :4].flatten(1).norm(dim=1)
    assert torch.allclose(inside, torch.ones(3), atol=1e-5)  # nothing outside the 4 x 4 block


def test_bad_inputs(setup):
    model, x, y = setup
    for attack in ATTACKS:
        with pytest.raises(ValueError, match="shape"):
            attack(model, x[0], y, steps=10)
        with pytest.raises(ValueError, match="y must have shape"):
            attack(model, x, y[:3], steps=10)
        with pytest.raises(TypeError, match="float"):
            attack(model, x.to(torch.uint8), y, steps=10)
        with pytest.raises(ValueError, match="steps"):
            attack(model, x, y, steps=0)
        with pytest.raises(ValueError, match="dim_reduction"):
            attack(model, x, y, steps=10, dim_reduction=0)
        with pytest.raises(ValueError, match="dim_reduction"):
            attack(model, x, y, steps=10, dim_reduction=2.5)
        for bad in (dict(initial_queries=0), dict(bs_steps=0), dict(max_scan=0), dict(init_attempts=0)):
            with pytest.raises(ValueError, match=">= 1"):
                attack(model, x, y, steps=10, **bad)
        for bad in (dict(sigma=0.0), dict(sigma=float("nan")), dict(tol=-1.0), dict(tol=float("inf"))):
            with pytest.raises(ValueError, match="sigma and tol"):
                attack(model, x, y, steps=10, **bad)
        with pytest.raises(ValueError, match="x_init"):
            attack(model, x, y, steps=10, x_init=x[:2])
        with pytest.raises(ValueError, match="batch_size"):
            attack(model, x, y, steps=10, batch_size=0)
        with pytest.raises(TypeError, match="label criterion"):
            attack(model, x, Margin(Misclassification(y), 1.0), steps=10)
    with pytest.raises(TypeError, match="no parameter"):
        registry.spec("cgba").settings(theta_max=30.0)


def test_engine_runs_both(tmp_path):
    """Through the benchmark runner: integer files, verified, the budget recorded per row."""
    from advimage.bench import run_benchmark
    from bench_tiny import TINY, make_image_set

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (tmp_path / "images").mkdir()
        images = make_image_set(tmp_path / "images")
        res = run_benchmark(images, TINY, attacks="cgba:60,cgba_h:60", out=tmp_path / "run", seed=0,
                            batch_size=4, gallery=0, progress=False)
    finally:
        torch.set_num_threads(n)
    ok = [r for r in res.rows if not r["error"]]
    attacked = [r for r in ok if r["prediction"] == r["label"]]
    assert {r["attack"] for r in attacked} == {"cgba:60", "cgba_h:60"}
    assert all(0 < r["queries"] <= 60 and r["gradients"] == 0 for r in attacked)
    assert all(r["success"] == (r["adv_label"] != r["label"]) for r in attacked)  # measured on the files
    assert sum(r["success"] for r in attacked) >= len(attacked) // 2


@pytest.mark.parametrize("attack", ATTACKS, ids=IDS)
def test_sync_free_path_gives_the_same_result(setup, monkeypatch, attack):
    """The GPU code path (every row's state updated every round, no host sync) on CPU."""
    import advimage.attacks.cgba as cg

    model, x, y = setup
    ref = attack(model, x, y, steps=250, seed=0)
    monkeypatch.setattr(cg, "SYNC_FREE", True)
    res = attack(model, x, y, steps=250, seed=0)
    check_valid(model, x, y, res, 250)
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.queries, ref.queries)
