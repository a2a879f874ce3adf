"""Quantizer spec strings: rules × modifiers, today's names as aliases, everything else refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advimage import quantize as Q
from advimage.attacks import get
from advimage.quantize.grammar import ALIASES, COSTS, RULES, WALK_KINDS, QuantizerSpecError, Recipe, parse


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_expand_and_their_expansion_keeps_the_alias_name(alias):
    s = Q.spec(alias)
    assert s.canonical == ALIASES[alias][0]
    assert Q.spec(s.canonical).name == alias  # stores keep their key, whichever way it is written
    assert alias in Q.names()


@pytest.fixture
def attacked(multiclass_problem):
    model, x, y = multiclass_problem
    return model, x, get("bp")(model, x, y, steps=30).x_adv, y


def _same(a, b):
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.success, b.success)
    assert torch.equal(a.gradients, b.gradients) and torch.equal(a.forwards, b.forwards)


def test_lattice_aliases_are_the_lattice_quantizer_with_their_chains(attacked):
    model, x, xa, y = attacked
    from advimage.quantize.lattice import quantize_lattice

    _same(Q.run("lattice-int", model, x, xa, y), quantize_lattice(model, x, xa, y, walks=(("int", 49),)))
    _same(Q.run("lattice-prox", model, x, xa, y),
          quantize_lattice(model, x, xa, y, walks=(("irls", 30), ("prox", 15)), prune_rounds_=1))
    _same(Q.run("scaled+walk:int:5", model, x, xa, y),
          quantize_lattice(model, x, xa, y, walks=(("int", 5),), prune_rounds_=0))


def test_cost_and_prune_modifiers_are_the_functions_they_name(attacked):
    model, x, xa, y = attacked
    from advimage.quantize.prune import prune_rounds
    from advimage.quantize.spatial import quantize_spatial
    from advimage.quantize.stego import hill_cost

    _same(Q.run("hill", model, x, xa, y, df=1), quantize_spatial(model, x, xa, y, df=1, cost=hill_cost(x)))
    plain = quantize_spatial(model, x, xa, y, df=2)
    _same(Q.run("smart-prune", model, x, xa, y, df=2), prune_rounds(model, x, plain, y, rounds=2))
    _same(Q.run("smart+prune:1", model, x, xa, y, df=2), prune_rounds(model, x, plain, y, rounds=1))
    assert Q.spec("smart+prune:1").gradients == 2 and Q.spec("scaled+walk:irls:7+prune:3").gradients == 10


@pytest.mark.parametrize("spec, match", [
    ("nope", "unknown quantizer 'nope'; valid quantizers: round, none, smart"),
    ("nope+prune:1", "or a spec string RULE"),
    ("smart+walk:int:3", "\\+walk applies to the scaled rule only"),
    ("scaled+cost:hill", "\\+cost applies to the smart rule only"),
    ("round+prune:1", "\\+prune applies to the smart and scaled rules only"),
    ("smart+prune:0", "whole number >= 1"),
    ("scaled+walk:int:x", "whole number >= 1"),
    ("scaled+walk:sideways:3", "not a modifier"),
    ("smart+cost:hill+cost:mipod", "repeated"),
    ("round+margin:-1", "margin must be a number >= 0"),
    ("round+margin:nan", "margin must be a number >= 0"),
    ("smart-prune+prune:1", "repeated"),
])
def test_bad_spec_strings_are_refused_saying_what_is_valid(spec, match):
    with pytest.raises(QuantizerSpecError, match=match):
        Q.spec(spec)


recipes = st.builds(
    lambda rule, cost, walks, prune, margin: Recipe(
        rule, cost if rule == "smart" else None, tuple(walks) if rule == "scaled" else (),
        prune if rule in ("smart", "scaled") else 0, margin),
    st.sampled_from(RULES), st.sampled_from((None, *COSTS)),
    st.lists(st.tuples(st.sampled_from(WALK_KINDS), st.integers(1, 60)), max_size=3),
    st.integers(0, 4), st.sampled_from((None, 0.0, 0.05, 2.5)))


@settings(max_examples=200, deadline=None)
@given(recipes)
def test_every_recipe_round_trips_through_its_spec_string(recipe):
    assert parse(recipe.canonical()) == recipe
    s = Q.spec(recipe.canonical())
    assert s.gradients == Q.spec(recipe.rule).gradients + sum(n for _, n in recipe.walks) + recipe.prune
    assert s.margin == recipe.margin


def test_a_quantizers_own_margin_is_reached_by_its_file(tmp_path, tiny_registered):
    import numpy as np
    from PIL import Image

    import advimage
    from advimage.data import ImageItem
    from advimage.engine import Settings, run_batch

    g = np.random.default_rng(5)
    items = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        items.append(ImageItem(path, None))
    model = advimage.models.get(tiny_registered)
    rows = run_batch(model, items, Settings(steps=30, size="model", margin=0.0, quantizers=("smart", "smart+margin:3")))
    plain = {r.key: r for r in rows if r.quantizer == "smart" and r.status == "fooled"}
    kept = {r.key: r for r in rows if r.quantizer == "smart+margin:3" and r.status == "fooled"}
    assert kept, "no file reached the margin: the test proves nothing"
    assert all(r.file_margin >= 3 - 1e-4 for r in kept.values())
    assert any(plain[k].file_margin < 3 for k in kept if k in plain)


def test_the_cli_takes_spec_strings_and_refuses_bad_ones(tmp_path, tiny_registered, capsys):
    import numpy as np
    from PIL import Image

    from advimage.cli import main

    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    with pytest.raises(SystemExit) as exc:
        main(["attack", str(path), "--model", tiny_registered, "--quantize", "smart+foo", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "not a modifier" in capsys.readouterr().err
    assert main(["attack", str(path), "--model", tiny_registered, "--steps", "20", "--size", "model", "--quiet",
                 "--quantize", "smart+cost:hill+prune:1", "--no-figures", "--out", str(tmp_path / "o")]) in (0, 1)
    assert "smart+cost:hill+prune:1" in (tmp_path / "o" / "results.json").read_text()
