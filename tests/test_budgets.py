"""Every row stays inside its budget, and every model call of a black-box row is one of its queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import advimage
from advimage import engine
from advimage.attacks import names as attack_names
from advimage.attacks import spec as attack_spec
from advimage.data import ImageItem
from advimage.engine import Settings, run_batch
from advimage.quantize import names as quantizer_names
from advimage.quantize import spec as quantizer_spec

WHITE_BOX = [a for a in attack_names() if not attack_spec(a).black_box]
BLACK_BOX = [a for a in attack_names() if attack_spec(a).black_box]
GRADIENT_FREE = [q for q in quantizer_names() if quantizer_spec(q).gradients == 0]


@pytest.fixture
def items(tmp_path, tiny_registered):
    """Four random 40x48 photos labelled with the tiny model's prediction at model size (native
    size would need a resize; the model-size tests below read them at 32x32 through load_for_model)."""
    g = np.random.default_rng(3)
    out = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(g.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        out.append(ImageItem(path, None))
    return out


class CallCounter:
    """Counts the images that go through the network (a forward hook at the model boundary), but
    not those of the engine's verification of the written file (the toolkit's proof, not a query
    the adversary needs)."""

    def __init__(self, model, monkeypatch) -> None:
        self.images = 0
        self.paused = False
        model.net.register_forward_hook(self._hook)
        verify = engine._verify

        def uncounted(*args, **kwargs):
            self.paused = True
            try:
                return verify(*args, **kwargs)
            finally:
                self.paused = False
        monkeypatch.setattr(engine, "_verify", uncounted)

    def _hook(self, _module, inputs, _output) -> None:
        if not self.paused:
            self.images += int(inputs[0].shape[0])


@pytest.mark.parametrize("attack", WHITE_BOX)
def test_white_box_rows_never_spend_more_gradients_than_steps(attack, items, tiny_registered):
    model = advimage.models.get(tiny_registered)
    steps = 60  # above lattice-int's 50, so that every quantizer runs in one settings
    settings = Settings(attack=attack, steps=steps, quantizers=tuple(quantizer_names()), size="model")
    rows = run_batch(model, items, settings)
    assert {r.quantizer for r in rows} == set(quantizer_names())
    for r in rows:
        assert r.error is None, r.error
        assert r.gradients <= steps, (r.quantizer, r.gradients)
        assert r.queries == 0


@pytest.mark.parametrize("size", ["model", "native"])
@pytest.mark.parametrize("quantizer", GRADIENT_FREE)
@pytest.mark.parametrize("attack", BLACK_BOX)
def test_black_box_rows_count_every_model_call_as_a_query(attack, quantizer, size, items, tiny_registered,
                                                         monkeypatch):
    model = advimage.models.get(tiny_registered)
    counter = CallCounter(model, monkeypatch)
    steps = 80
    settings = Settings(attack=attack, steps=steps, quantizers=(quantizer,), size=size, seed=1)
    rows = run_batch(model, items, settings)
    attacked = [r for r in rows if r.data is not None]
    assert attacked, "no image was attacked: the test proves nothing"
    assert counter.images == sum(r.queries for r in rows)
    for r in rows:
        assert r.error is None, r.error
        assert 1 <= r.queries <= steps, (r.quantizer, r.queries)
        assert r.gradients == 0


def test_black_box_budget_below_the_overhead_is_refused():
    s = Settings(attack="surfree", steps=100, quantizers=("scaled",))
    assert s.overhead_queries == 2 * (1 + s.quantizer_steps)  # two paths at native size: PIL and float
    assert s.attack_steps == 100 - s.overhead_queries
    with pytest.raises(ValueError, match="every model call is a query"):
        Settings(attack="surfree", steps=s.overhead_queries, quantizers=("scaled",))


def test_a_misclassified_black_box_row_pays_the_originals_check(items, tiny_registered):
    model = advimage.models.get(tiny_registered)
    wrong = [ImageItem(it.path, (int(model(torch.zeros(1, 3, 32, 32)).argmax()) + 1) % 10) for it in items]
    rows = run_batch(model, wrong, Settings(attack="hsj", steps=50, quantizers=("round",), size="model"))
    assert any(r.status == "misclassified" for r in rows)
    assert all(r.queries == 1 for r in rows if r.status == "misclassified")
