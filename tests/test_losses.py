import pytest
import torch

from advimage.losses import adversarial_loss, best_other_logit, is_adversarial


def test_untargeted_margin_matches_hand_computation():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, 1.0]])
    labels = torch.tensor([0, 0])
    # image 0: 3.0 - 2.5; image 1: 0.0 - 4.0 (already adversarial, negative)
    assert torch.allclose(adversarial_loss(logits, labels), torch.tensor([0.5, -4.0]))
    vals, cls = best_other_logit(logits, labels)
    assert cls.tolist() == [2, 1] and vals.tolist() == [2.5, 4.0]


def test_targeted_margin_negative_iff_prediction_is_target():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, 1.0]])
    target = torch.tensor([2, 1])
    loss = adversarial_loss(logits, target, targeted=True)
    assert torch.allclose(loss, torch.tensor([0.5, -3.0]))
    assert ((loss < 0) == is_adversarial(logits, target, targeted=True)).all()


def test_sign_is_the_success_criterion_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g)
    labels = torch.randint(0, 10, (200,), generator=g)
    assert ((adversarial_loss(logits, labels) < 0) == is_adversarial(logits, labels)).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected logits"):
        adversarial_loss(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
