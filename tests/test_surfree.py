"""SurFree (and the HopSkipJump baseline) on a tiny linear model with a closed-form optimum.

For a 2-class linear model with logits (z, -z), z = w·(x - 128), the smallest L2 perturbation
reaching the boundary is |z| / ||w||, i.e. d* = |z| / (||w|| sqrt(n)) in eq. (6.2) units.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advimage.attacks import registry
from advimage.attacks.base import BudgetExceeded
from advimage.attacks.surfree import LabelOracle, dct_matrix, surfree, zigzag_mask
from advimage.distortion import distortion

torch.set_num_threads(1)

SHAPE = (3, 16, 16)
N_PIX = 3 * 16 * 16


class Linear2(nn.Module):
    """Two classes split by a smooth (low-frequency) hyperplane through the mid-grey image."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = F.interpolate(torch.randn(1, 3, 4, 4, generator=g), size=SHAPE[1:], mode="bilinear",
                          align_corners=False).flatten()
        self.register_buffer("w", w / w.norm())
        self.calls: list[int] = []

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).double() - 128) @ self.w.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        z = self.margin(x).float()
        return torch.stack([z, -z], 1)

    def optimum(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form d* (eq. 6.2 units) of each image."""
        return (self.margin(x).abs() / math.sqrt(N_PIX)).float()


def make_data(model: Linear2, n: int = 8, d_target: float = 8.0, seed: int = 1):
    """Integer images at distance ≈ d_target from the boundary, half of each class."""
    g = torch.Generator().manual_seed(seed)
    base = 128 + torch.randint(-40, 41, (n, N_PIX), generator=g).double()
    side = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n)], dtype=torch.float64)
    x = base + side[:, None] * d_target * math.sqrt(N_PIX) * model.w.double()[None, :]
    x = x.round().clamp(0, 255).float().view(n, *SHAPE)
    y = model(x).argmax(1)
    model.calls.clear()
    return x, y


@pytest.fixture(scope="module")
def setup():
    model = Linear2()
    x, y = make_data(model)
    return model, x, y


def check_valid(model: Linear2, x, y, res, budget: int) -> None:
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert torch.equal(res.x_adv, res.x_adv.round()), "x_adv must be integer-valued"
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 255
    assert res.queries.dtype == torch.long and res.queries.shape == (x.shape[0],)
    assert int(res.queries.max()) <= budget
    assert int(res.gradients.sum()) == 0 and int(res.forwards.sum()) == 0
    # success is verified: the returned images do fool the model, as integer images
    pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)  # failures return the (correctly classified) original
    assert torch.allclose(res.distortion[res.success], distortion(res.x_adv, x)[res.success])


def test_registered():
    assert registry.get("surfree") is surfree


def test_success_budget_integer(setup):
    model, x, y = setup
    model.calls.clear()
    res = surfree(model, x, y, steps=300, seed=0)
    check_valid(model, x, y, res, 300)
    assert bool(res.success.all())
    assert int(res.queries.min()) == 300  # the budget is used up, never exceeded
    # one batched forward per round: at most `steps` calls, never more rows than images
    calls = model.calls[:-1]  # the last call is check_valid's
    assert len(calls) <= 300 and max(calls) <= x.shape[0]


@pytest.mark.parametrize("budget", [1, 2, 5, 13, 50])
def test_small_budgets(setup, budget):
    model, x, y = setup
    res = surfree(model, x, y, steps=budget, seed=0)
    check_valid(model, x, y, res, budget)
    if budget >= 13:
        assert bool(res.success.all())


def test_distortion_decreases_to_optimum(setup):
    model, x, y = setup
    dstar = model.optimum(x)
    ratios = []
    for budget in (100, 400, 1000):
        res = surfree(model, x, y, steps=budget, seed=0)
        assert bool(res.success.all())
        ratios.append(res.distortion / dstar)
    means = [float(r.mean()) for r in ratios]
    assert means[0] > means[1] > means[2], means
    assert bool((ratios[-1] >= 0.999).all()), "cannot beat the closed-form optimum"
    assert float(ratios[-1].median()) <= 1.45 and float(ratios[-1].max()) <= 1.6, ratios[-1]


def test_deterministic(setup):
    model, x, y = setup
    a = surfree(model, x, y, steps=150, seed=3)
    b = surfree(model, x, y, steps=150, seed=3)
    c = surfree(model, x, y, steps=150, seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_chunked_batches(setup):
    model, x, y = setup
    model.calls.clear()
    res = surfree(model, x, y, steps=120, seed=0, batch_size=3)
    assert max(model.calls) <= 3
    check_valid(model, x, y, res, 120)
    assert bool(res.success.all())


def test_misclassified_inputs(setup):
    model, x, y = setup
    y2 = y.clone()
    y2[:3] = 1 - y2[:3]  # these originals are already "adversarial"
    res = surfree(model, x, y2, steps=100, seed=0)
    assert bool(res.success.all())
    assert torch.equal(res.x_adv[:3], x[:3])
    assert torch.equal(res.distortion[:3], torch.zeros(3))
    assert res.queries[:3].tolist() == [1, 1, 1]
    assert int(res.queries[3:].min()) == 100


def test_targeted_and_start_from_batch_image():
    # a strongly biased model: noise never crosses the boundary, so the start must come from
    # another image of the batch whose label is the target
    model = Linear2()
    x, y = make_data(model, n=6, d_target=25.0)
    target = 1 - y
    res = surfree(model, x, target, steps=400, targeted=True, seed=0)
    assert bool(res.success.all())
    assert bool((model(res.x_adv).argmax(1) == target).all())
    assert bool((res.distortion < 2.0 * model.optimum(x)).all())


def test_x_init_and_failed_init():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(x.shape[0]), torch.zeros(x.shape[0])], 1)

    x = torch.full((2, *SHAPE), 100.0)
    y = torch.zeros(2, dtype=torch.long)
    res = surfree(Constant(), x, y, steps=500, seed=0, init_attempts=20)
    assert not bool(res.success.any())
    assert torch.equal(res.x_adv, x) and torch.equal(res.distortion, torch.zeros(2))
    assert res.queries.tolist() == [21, 21]  # 1 (original) + 20 failed starts, then gave up


def test_bad_inputs(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="shape"):
        surfree(model, x[0], y, steps=10)
    with pytest.raises(ValueError, match="y must have shape"):
        surfree(model, x, y[:3], steps=10)
    with pytest.raises(TypeError, match="float"):
        surfree(model, x.to(torch.uint8), y, steps=10)
    with pytest.raises(ValueError, match="steps"):
        surfree(model, x, y, steps=0)
    with pytest.raises(ValueError, match="x_init"):
        surfree(model, x, y, steps=10, x_init=x[:2])


def test_oracle_budget_and_quantization():
    model = Linear2()
    y = torch.zeros(2, dtype=torch.long)
    oracle = LabelOracle(model, y, max_queries=2)
    xq = torch.full((2, *SHAPE), 127.6)
    xi, adv, pred = oracle(xq, torch.arange(2))
    assert torch.equal(xi, torch.full_like(xq, 128.0))
    oracle(xq, torch.arange(2), counted=torch.tensor([True, False]))
    assert oracle.queries.tolist() == [2, 1]
    with pytest.raises(BudgetExceeded):
        oracle(xq, torch.arange(2))


def test_dct_basis():
    c = dct_matrix(16)
    assert torch.allclose(c @ c.T, torch.eye(16), atol=1e-5)
    m = zigzag_mask(16, 16, (0.0, 0.5))
    assert int(m.sum()) == 128 and m[0, 0] == 1 and m[15, 15] == 0


def test_hsj_baseline(setup):
    pytest.importorskip("foolbox")
    from advimage.attacks.decision_baseline import hsj

    model, x, y = setup
    res = hsj(model, x[:4], y[:4], steps=400, seed=0)
    assert registry.get("hsj") is hsj
    check_valid(model, x[:4], y[:4], res, 400)
    assert bool(res.success.all())


def test_sync_free_path(setup, monkeypatch):
    """The GPU code path (directions drawn for every row, then selected) on CPU."""
    import advimage.attacks.surfree as sf

    model, x, y = setup
    monkeypatch.setattr(sf, "SYNC_FREE", True)
    res = sf.surfree(model, x, y, steps=600, seed=0)
    check_valid(model, x, y, res, 600)
    assert bool(res.success.all())
    assert float((res.distortion / model.optimum(x)).median()) <= 1.8
