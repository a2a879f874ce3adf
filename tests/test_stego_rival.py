"""Eq. 8.10's fixed rival class (``+rival:fixed``) against closed forms on a three-class linear model.

The model is built so that the two rules must differ: class 2 lies half-way between the true
class 0 and the class 1 the attack reached (w2 = (w0 + w1) / 2), with a bias that makes it beat
class 0 a little before class 1 does. Every number is recomputed here with numpy from the
model's weights (logits, c_a, the gradient of l_{c0} − l_{ca}, eq. 8.14's pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advimage import quantize as Q
from advimage.criteria import FixedRival, Margin, Misclassification, TargetedMisclassification, fix_rival
from advimage.quantize.grammar import QuantizerSpecError, Recipe, parse
from advimage.quantize.spatial import quantize_spatial
from advimage.quantize.stego import quantize_gina

SHAPE = (3, 16, 16)
N = 4
C_GAP = 0.2       # l2 − l0 = L1 / 2 + C_GAP, with L1 = l1 − l0: class 2 beats class 0 from L1 > −0.4 on
L1_START = -6.0   # L1 at x0: class 0 wins
L1_ATTACK = 0.5   # L1 at x_a: class 1 wins (l1 − l2 = 0.25 − 0.2 > 0)


class ThreeClass(nn.Module):
    """logits = W (x − 127.5) + b on pixels, W (3, n) float64 numpy kept for the references."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        n = int(np.prod(SHAPE))
        w0 = 0.01 * rng.standard_normal(n)
        v = 0.01 * rng.standard_normal(n)
        self.W = np.stack([w0, w0 + v, w0 + v / 2])
        self.b = np.array([0.0, 0.0, C_GAP])  # b2 − b1 / 2 = C_GAP
        self.v = v
        self.weight = nn.Parameter(torch.from_numpy(self.W), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(self.b), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double().flatten(1) - 127.5) @ self.weight.T + self.bias).float()

    def np_logits(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1) - 127.5) @ self.W.T + self.b


@pytest.fixture(scope="module")
def problem():
    """Model, integer x0 (L1 = −6 after rounding, about), float x_a on the segment x0 + s v (L1 = 0.5)."""
    model = ThreeClass()
    rng = np.random.default_rng(1)
    base = rng.integers(90, 166, (N, *SHAPE)).astype(np.float64)
    v = model.v
    x0 = np.empty_like(base)
    for i in range(N):
        l1 = (base[i].ravel() - 127.5) @ v
        x0[i] = np.round(base[i] + ((L1_START - l1) / (v @ v) * v).reshape(SHAPE))
    l1_x0 = (x0.reshape(N, -1) - 127.5) @ v
    s = (L1_ATTACK - l1_x0) / (v @ v)
    xa = x0 + s[:, None, None, None] * v.reshape(SHAPE)
    assert (np.abs(xa - x0) < 40).all() and (xa > 0).all() and (xa < 255).all()
    y = torch.zeros(N, dtype=torch.long)
    assert (model.np_logits(x0).argmax(1) == 0).all() and (model.np_logits(xa).argmax(1) == 1).all()
    return model, torch.from_numpy(x0).float(), torch.from_numpy(xa).float(), y


def np_quantized(x0: np.ndarray, xa: np.ndarray, g: np.ndarray, lam: np.ndarray, weight=None) -> np.ndarray:
    """Eq. 8.14 / 7.15 with df = 1: x0 + clip(round(−λ g / (2 w)), floor u, ceil u)."""
    u = xa - x0
    w = np.ones_like(u) if weight is None else weight
    k = np.round(-lam[:, None, None, None] * g / (2 * w))
    return x0 + np.clip(k, np.floor(u), np.ceil(u))


def test_fixed_rival_criterion_is_eq_8_10():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 2.0, 1.0]])
    crit = FixedRival(torch.tensor([0, 0]), torch.tensor([1, 2]))
    assert torch.equal(crit.loss(logits), torch.tensor([2.0, -1.0]))  # l_c0 − l_ca, not − max_{k≠c0}
    assert torch.equal(crit.success(logits), torch.tensor([False, True]))
    m = fix_rival(Margin(Misclassification(torch.tensor([0, 0])), 0.5), torch.tensor([1, 2]))
    assert isinstance(m, Margin) and m.kappa == 0.5 and isinstance(m.inner, FixedRival)
    assert torch.equal(m.success(logits), torch.tensor([False, True]))  # −1 ≤ −0.5
    with pytest.raises(TypeError, match="untargeted misclassification"):
        fix_rival(TargetedMisclassification(torch.tensor([1, 1])), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="must differ"):
        FixedRival(torch.tensor([0, 1]), torch.tensor([1, 1]))


def test_fixed_rival_smart_matches_closed_form_and_keeps_c_a(problem):
    """The file is eq. 8.14's image for g = ∇(l0 − l1) = w0 − w1 at its λ, and class c_a = 1 beats
    c0 there (eq. 8.11), while the plain rule stops as soon as class 2 does."""
    model, x0, xa, y = problem
    fixed = quantize_spatial(model, x0, xa, y, df=1, steps=20, rival="fixed")
    plain = quantize_spatial(model, x0, xa, y, df=1, steps=20)
    x0n, xan = x0.double().numpy(), xa.double().numpy()
    c_a = np.where(np.arange(3) == 0, -np.inf, model.np_logits(xan)).argmax(1)
    assert (c_a == 1).all()
    g = np.broadcast_to((model.W[0] - model.W[1]).reshape(SHAPE), x0n.shape)
    ref = np_quantized(x0n, xan, g, fixed.lam.double().numpy())
    np.testing.assert_array_equal(fixed.pixels.numpy(), ref.astype(np.uint8))
    lf = model.np_logits(fixed.pixels.double().numpy())
    lp = model.np_logits(plain.pixels.double().numpy())
    assert fixed.success.all() and plain.success.all()
    assert (lf[:, 1] > lf[:, 0]).all()                        # eq. 8.11: L(ℓ) < 0 for the fixed c_a
    assert (lp.argmax(1) == 2).all() and (lp[:, 1] < lp[:, 0]).all()  # plain: class 2 wins, c_a does not
    # the price of holding c_a: a larger λ and more distortion, on every image here
    assert (fixed.lam > plain.lam).all() and (fixed.distortion > plain.distortion).all()
    # same budget: one gradient, the same forwards
    assert torch.equal(fixed.gradients, plain.gradients) and torch.equal(fixed.forwards, plain.forwards)


def test_fixed_rival_with_costs_and_margin(problem):
    """Quadratic costs (MiPOD's) and a margin: eq. 8.14 with w, and l0 − l1 ≤ −κ on the file."""
    from advimage.quantize.stego import mipod_cost

    model, x0, xa, y = problem
    crit = Margin(Misclassification(y), 0.3)
    res = Q.run("mipod+rival:fixed", model, x0, xa, crit, df=1, steps=20)
    w = mipod_cost(x0).double().numpy()
    g = np.broadcast_to((model.W[0] - model.W[1]).reshape(SHAPE), w.shape)
    ref = np_quantized(x0.double().numpy(), xa.double().numpy(), g, res.lam.double().numpy(), w)
    np.testing.assert_array_equal(res.pixels.numpy(), ref.astype(np.uint8))
    logits = model.np_logits(res.pixels.double().numpy())
    ok = logits[:, 0] - logits[:, 1] <= -0.3
    assert np.array_equal(ok, res.success.numpy()) and ok.any()


def test_fixed_rival_gina_reaches_c_a(problem):
    model, x0, xa, y = problem
    fixed = quantize_gina(model, x0, xa, y, df=1, steps=8, rival="fixed")
    plain = quantize_gina(model, x0, xa, y, df=1, steps=8)
    lf = model.np_logits(fixed.pixels.double().numpy())
    assert np.array_equal(lf[:, 1] > lf[:, 0], fixed.success.numpy()) and fixed.success.any()
    assert plain.success.all()
    lp = model.np_logits(plain.pixels.double().numpy())
    assert (lp.argmax(1) != 0).all()
    # Q.run through the grammar is the same function
    via = Q.run("gina+rival:fixed", model, x0, xa, y, df=1, steps=8)
    assert torch.equal(via.pixels, fixed.pixels) and torch.equal(via.success, fixed.success)


def test_fixed_rival_refusals(problem):
    model, x0, xa, y = problem
    with pytest.raises(TypeError, match="untargeted misclassification"):
        quantize_spatial(model, x0, xa, torch.ones_like(y), targeted=True, rival="fixed")
    with pytest.raises(ValueError, match="rival must be one of max, fixed"):
        quantize_spatial(model, x0, xa, y, rival="second")
    with pytest.raises(ValueError, match="df=0"):
        quantize_spatial(model, x0, xa, y, df=0, rival="fixed")


@pytest.mark.parametrize("spec, match", [
    ("scaled+rival:fixed", "\\+rival applies to the smart and gina rules only"),
    ("jpeg+rival:fixed", "\\+rival applies to the smart and gina rules only"),
    ("hill+rival:fixed+prune:1", "does not combine with \\+prune"),
    ("smart+rival:max", "not a modifier"),
    ("smart+rival:fixed+rival:fixed", "repeated"),
    ("smart+rival", "not a modifier"),
])
def test_rival_spec_strings_refused(spec, match):
    with pytest.raises(QuantizerSpecError, match=match):
        Q.spec(spec)


def test_rival_spec_strings_parse():
    assert parse("hill+rival:fixed") == Recipe("smart", "hill", rival="fixed")
    assert Q.spec("mipod+rival:fixed").canonical == "smart+cost:mipod+rival:fixed"
    assert parse("smart+rival:fixed+cost:hill+margin:0.1").canonical() == "smart+cost:hill+rival:fixed+margin:0.1"
    assert Q.spec("gina+rival:fixed").gradients == Q.spec("gina").gradients == 1
    assert Q.spec("smart+rival:fixed").options == {"df", "targeted", "steps"}


def test_the_engine_runs_fixed_rival_specs_under_its_margin(tmp_path, tiny_registered):
    """Through run_batch (default noise margin: Margin(FixedRival)): every fooled file is verified,
    and its c_a = the best other class at the attack's floats beats c0 by the margin."""
    from PIL import Image

    import advimage
    from advimage.codec import decode
    from advimage.criteria import NOISE_MARGIN
    from advimage.data import ImageItem
    from advimage.engine import Settings, run_batch

    g = np.random.default_rng(5)
    items = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        items.append(ImageItem(path, None))
    model = advimage.models.get(tiny_registered)
    specs = ("hill+rival:fixed", "gina+rival:fixed")
    rows = run_batch(model, items, Settings(steps=30, size="model", quantizers=("none", *specs)))
    floats = {r.key: decode(r.data, r.suffix).float() for r in rows if r.quantizer == "none" and r.data}
    fooled = [r for r in rows if r.quantizer in specs and r.status == "fooled"]
    assert fooled, "no fixed-rival file: the test proves nothing"
    for r in fooled:
        assert r.verified
        with torch.no_grad():
            la = model(floats[r.key][None])[0]
            lq = model(decode(r.data, r.suffix).float()[None])[0]
        c_a = int(torch.where(torch.arange(len(la)) == r.label, -torch.inf, la).argmax())
        assert float(lq[r.label] - lq[c_a]) <= -NOISE_MARGIN + 1e-4, r.quantizer
