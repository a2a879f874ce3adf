"""Attacks against closed-form optima and their budgets."""

import math

import pytest
import torch

from advimage.attacks import BudgetExceeded, LossOracle, get, names
from advimage.attacks.base import check_inputs

WHITE_BOX = ["bp", "cw", "ddn", "fgsm", "ifgsm", "pgd"]
# CW2 (small Adam steps) and DDN (norm shrinking from 255) converge more slowly here than BP or PGD2
BUDGET = {"cw": 200, "ddn": 100}


@pytest.mark.parametrize("name,steps,params", [
    ("bp", 100, {}),
    ("pgd", 100, {}),
    ("ddn", 100, {"quantize": False}),
    ("cw", 300, {}),
])
def test_best_effort_reaches_linear_optimum(linear_problem, name, steps, params):
    model, x, y = linear_problem
    res = get(name)(model, x, y, steps=steps, **params)
    optimum = model.optimal_distortion(x)
    assert res.success.all()
    ratio = res.distortion / optimum
    assert (ratio >= 1 - 1e-3).all(), "an attack cannot beat the closed-form optimum"
    assert (ratio <= 1.05).all(), ratio


def test_fgsm_reaches_its_own_linear_optimum(linear_problem):
    # FGSM moves every pixel by ±ε: on a linear model the smallest working ε is |s| / ||w||_1
    model, x, y = linear_problem
    res = get("fgsm")(model, x, y, steps=30)
    s = (x.flatten(1) @ model.w + model.b).abs()
    eps_star = s / model.w.abs().sum()
    assert res.success.all()
    assert ((res.distortion / eps_star) <= 1.05).all()


def test_ddn_quantized_output_is_integer(linear_problem):
    model, x, y = linear_problem
    res = get("ddn")(model, x, y, steps=50)
    assert torch.equal(res.x_adv, res.x_adv.round())


@pytest.mark.parametrize("name", WHITE_BOX)
@pytest.mark.parametrize("steps", [2, 7, 20])
def test_gradient_budget_is_counted_and_kept(multiclass_problem, name, steps):
    model, x, y = multiclass_problem
    calls = {"n": 0}
    original_forward = model.forward

    def counting_forward(inp):
        calls["n"] += 1
        return original_forward(inp)

    model.forward = counting_forward
    res = get(name)(model, x, y, steps=steps)
    budget = 1 if name == "fgsm" else steps
    assert (res.gradients <= budget).all() and (res.gradients >= 1).all()
    assert res.gradients.shape == (x.shape[0],)
    # every model call is accounted for, as a gradient or a forward pass
    assert calls["n"] == int(res.gradients[0] + res.forwards[0])
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 255


@pytest.mark.parametrize("name", WHITE_BOX)
def test_attacks_fool_a_multiclass_model_and_report_true_distortion(multiclass_problem, name):
    model, x, y = multiclass_problem
    res = get(name)(model, x, y, steps=BUDGET.get(name, 40))
    pred = model(res.x_adv).argmax(1)
    assert ((pred != y) == res.success).all()
    assert res.success.float().mean() >= 0.75
    d = (res.x_adv - x).flatten(1).norm(dim=1) / math.sqrt(x[0].numel())
    assert torch.allclose(d[res.success], res.distortion[res.success], atol=1e-4)


@pytest.mark.parametrize("name,params", [("bp", {}), ("pgd", {}), ("ddn", {}), ("cw", {"lr": 0.01})])
def test_targeted_attacks_reach_the_target(multiclass_problem, name, params):
    # targets here lie 2-9 pixels away: CW2 needs CW's original learning rate to get that far
    model, x, y = multiclass_problem
    target = (y + 3) % 10
    res = get(name)(model, x, target, steps=BUDGET.get(name, 60), targeted=True, **params)
    pred = model(res.x_adv).argmax(1)
    assert (pred[res.success] == target[res.success]).all()
    assert res.success.float().mean() >= 0.75


@pytest.mark.parametrize("name", WHITE_BOX)
def test_misclassified_originals_cost_no_distortion(multiclass_problem, name):
    model, x, y = multiclass_problem
    wrong = (y + 1) % 10
    res = get(name)(model, x, wrong, steps=10)
    assert res.success.all()
    assert torch.equal(res.distortion, torch.zeros_like(res.distortion))


def test_oracle_refuses_to_exceed_its_budget(multiclass_problem):
    model, x, y = multiclass_problem
    oracle = LossOracle(model, y, max_gradients=2)
    oracle.loss_and_grad(x)
    oracle.loss_and_grad(x)
    with pytest.raises(BudgetExceeded):
        oracle.loss_and_grad(x)


def test_unknown_attack_lists_valid_names():
    with pytest.raises(KeyError, match="valid attacks: .*bp"):
        get("nope")
    assert set(WHITE_BOX) <= set(names())


def test_inputs_are_checked():
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        check_inputs(torch.zeros(2, 8, 8), y)
    with pytest.raises(TypeError, match="float"):
        check_inputs(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), y)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        check_inputs(torch.full((2, 3, 8, 8), 300.0), y)
