"""The adaptive attack (thesis §8.5): classifier and detector fooled at once, on linear models
whose answers are known."""

from __future__ import annotations

import torch

from advimage.attacks import get as get_attack
from advimage.criteria import Misclassification
from advimage.detect.adaptive import DetectorGuard, Undetected
from advimage.quantize import run as run_quantizer
from conftest import BinaryLinear


def _detector(model: BinaryLinear, x: torch.Tensor):
    """A linear detector d·x whose direction mixes −w (the classifier's weights) with an orthogonal
    v: a plain attack on class-1 images (along −w) raises its score; τ just above the originals'."""
    g = torch.Generator().manual_seed(5)
    w = -model.w / model.w.norm()
    v = torch.randn(w.shape, generator=g)
    v = v - (v @ w) * w
    d = w + v / v.norm()

    def score(z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1) @ d
    tau = float(score(x).max()) + 0.5
    return score, tau


def test_undetected_loss_is_negative_exactly_on_success():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5], [0.0, 3.0, -0.5], [5.0, 0.0, -2.0]])
    crit = Undetected(Misclassification(torch.tensor([0, 0, 0, 0])), weight=2.0)
    # rows: classifier not fooled; fooled but detected; fooled and undetected; neither
    assert crit.success(logits).tolist() == [False, False, True, False]
    assert ((crit.loss(logits) < 0) == crit.success(logits)).all()
    assert crit.loss(logits)[1] == 1.0 and crit.loss(logits)[2] == -1.0  # 2 · (s − τ) against −3
    assert crit.subset(torch.tensor([2])).success(logits[2:3]).tolist() == [True]


def test_joint_attack_fools_a_linear_detector_that_catches_the_plain_one(linear_problem):
    model, x, y = linear_problem
    x, y = x[y == 1], y[y == 1]
    score, tau = _detector(model, x)
    top = int(score(x).argmax())  # the image whose original sits just below τ
    x, y = x[top:top + 1], y[top:top + 1]
    pgd = get_attack("pgd")
    plain = pgd(model, x, y, steps=40)
    plain_file = run_quantizer("gina", model, x, plain.x_adv, y, steps=4).pixels.float()
    assert plain.success.all() and (score(plain.x_adv) > tau).all()  # the plain attack is caught
    assert (model(plain_file).argmax(1) != y).all() and (score(plain_file) > tau).all()

    guard = DetectorGuard(model, score, tau)
    crit = Undetected(Misclassification(y))
    adv = pgd(guard, x, crit, steps=40)
    assert adv.success.all() and (score(adv.x_adv) < tau).all() and (model(adv.x_adv).argmax(1) != y).all()
    q = run_quantizer("gina", guard, x, adv.x_adv, crit, steps=4)
    file = q.pixels.float()
    fooled, hidden = model(file).argmax(1) != y, score(file) < tau
    assert q.success.all() and fooled.all() and hidden.all()  # the joint file passes both
    assert (file - x).norm() > (plain_file - x).norm()  # at the price of a larger distortion
